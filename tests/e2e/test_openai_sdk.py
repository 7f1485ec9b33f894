"""The OpenAI-compatible HTTP API through the official `openai` Node SDK (v6, pinned in
openai_sdk/package-lock.json; `make deps` installs it with npm ci): completions and chat, whole and
streamed, n, logprobs and usage, the SDK's typed errors for 400/401/429, and an abort mid-stream.
The checks are in openai_sdk/sdk_test.mjs; this starts the servers and runs it. Exits 77
(skipped) without Node or the installed SDK."""
import os
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SDK_DIR = os.path.join(HERE, "openai_sdk")
NODE = "/usr/bin/node"
API_KEY = "sdk-test-key"
NODE_TIMEOUT_S = 240


def skip_reason():
    if not os.path.exists(NODE):
        return "%s is missing" % NODE
    if not os.path.isdir(os.path.join(SDK_DIR, "node_modules", "openai")):
        return ("the openai SDK is not installed (%s/node_modules/openai); `make deps` installs it "
                "(npm ci --prefix tests/e2e/openai_sdk)" % SDK_DIR)
    return None


class OpenAiSdkTest(unittest.TestCase):
    def test_sdk(self):
        import harness  # after the skip check: it compiles the gRPC stubs
        with tempfile.TemporaryDirectory() as d:
            keys = os.path.join(d, "keys")
            with open(keys, "w") as f:
                f.write("# the SDK test's client\n%s\n" % API_KEY)
            a = harness.Server("--api_keys_file", keys, "--max_new_tokens_limit", "64")
            self.addCleanup(a.stop)
            # Room for one open stream (max_batch + max_waiting), with slow steps.
            b = harness.Server("--max_batch", "1", "--max_waiting", "0", "--debug_step_delay_ms", "50")
            self.addCleanup(b.stop)
            self.run_sdk(a, b)
            # The SDK's errors were the server's answers, and its abort a hang-up the server
            # saw (not a request that ran to its end).
            http = 'api="http",code="%s"'
            self.assertGreaterEqual(a.metric("seqboat_requests_total", http % "INVALID_ARGUMENT"), 2)
            self.assertGreaterEqual(a.metric("seqboat_requests_total", http % "UNAUTHENTICATED"), 3)
            self.assertEqual(a.metric("seqboat_requests_total", http % "CANCELLED"), 0,
                             "no request on server A was cut short")
            self.assertGreaterEqual(b.metric("seqboat_requests_total", http % "RESOURCE_EXHAUSTED"), 2)
            self.assertEqual(b.metric("seqboat_requests_total", http % "CANCELLED"), 1, "the aborted stream")
            self.assertEqual(a.stop(), 0, a.stderr()[-5000:])
            self.assertEqual(b.stop(), 0, b.stderr()[-5000:])

    def run_sdk(self, a, b):
        env = dict(os.environ, SEQBOAT_HTTP_BASE=a.http_base + "/v1", SEQBOAT_API_KEY=API_KEY,
                   SEQBOAT_HTTP_BASE_SMALL=b.http_base + "/v1")
        try:
            r = subprocess.run([NODE, "sdk_test.mjs"], cwd=SDK_DIR, env=env, capture_output=True, text=True,
                               timeout=NODE_TIMEOUT_S)
        except subprocess.TimeoutExpired as e:
            self.fail("node sdk_test.mjs ran past %d s; stdout:\n%s\nstderr:\n%s"
                      % (NODE_TIMEOUT_S, e.stdout, e.stderr))
        if r.returncode == 0:
            sys.stdout.write(r.stdout + r.stderr)
            sys.stdout.flush()
        self.assertEqual(r.returncode, 0, "node sdk_test.mjs failed (exit code %d); stdout:\n%s\nstderr:\n%s"
                         % (r.returncode, r.stdout, r.stderr))


if __name__ == "__main__":
    reason = skip_reason()
    if reason is not None:
        print("skipped: " + reason)
        sys.exit(77)
    unittest.main()
