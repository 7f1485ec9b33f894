"""The playground page (GET / on the HTTP port) in a real browser: Debian's chromium, headless,
driven by playwright-core (pinned in playground/package-lock.json; `make deps` installs it with
npm ci). The browser streams seeded generations at three activation biases; every token's
shading and per-layer strip must be the activations gRPC returns for the same request, and the
rates must move with the bias; Stop hangs up and the server cancels. Checks are in playground/playground_test.mjs; this starts the
server, asks gRPC, and runs it. Exits 77 (skipped) without node, chromium or playwright-core.
The screenshot goes to $SEQBOAT_ARTIFACTS_DIR (else a temporary folder)."""
import json
import os
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
TEST_DIR = os.path.join(HERE, "playground")
NODE = "/usr/bin/node"
CHROMIUM = "/usr/bin/chromium"
NODE_TIMEOUT_S = 240
PROMPT = "The model"
BIASES = (0.0, 3.0, -3.0)


def skip_reason():
    for path in (NODE, CHROMIUM):
        if not os.path.exists(path):
            return "%s is missing" % path
    if not os.path.isdir(os.path.join(TEST_DIR, "node_modules", "playwright-core")):
        return ("playwright-core is not installed (%s/node_modules); `make deps` installs it "
                "(npm ci --prefix tests/e2e/playground)" % TEST_DIR)
    return None


class PlaygroundTest(unittest.TestCase):
    def test_page_shows_the_activations_grpc_returns(self):
        import harness  # after the skip check: it compiles the gRPC stubs
        from harness import pb
        server = harness.Server()
        self.addCleanup(server.stop)
        slow = harness.Server("--debug_step_delay_ms", "20")  # for the Stop button
        self.addCleanup(slow.stop)
        layers = harness.model_config()["layers"]
        expected = {"prompt": PROMPT, "max_tokens": 60, "temperature": 1.0, "seed": 7, "layers": layers,
                    "runs": []}
        stub = server.stub()
        for bias in BIASES:
            r = pb.GenerateRequest(text=PROMPT, return_activations=True)
            r.sampling.temperature = expected["temperature"]
            r.sampling.seed = expected["seed"]
            r.stopping.max_new_tokens = expected["max_tokens"]
            r.stopping.ignore_eos = True  # as the page's default
            r.routing.activation_bias = bias
            text, tokens, _, messages = harness.collect(stub.Generate(r))
            rows = [[int(on) for on in a.layers] for m in messages for a in m.activations]
            self.assertEqual(len(rows), len(tokens))
            self.assertGreater(len(rows), 5, "a generation long enough to look at")
            per_layer = [sum(row[l] for row in rows) / len(rows) for l in range(layers)]
            expected["runs"].append({"bias": bias, "text": text, "layers": rows, "layer_rates": per_layer,
                                     "rate": sum(map(sum, rows)) / (len(rows) * layers)})
        rates = [run["rate"] for run in expected["runs"]]
        # The bias moves the rate: +3 fewer activations than 0, -3 more.
        self.assertLess(rates[1], rates[0])
        self.assertGreater(rates[2], rates[0])

        artifacts = os.environ.get("SEQBOAT_ARTIFACTS_DIR") or tempfile.mkdtemp(prefix="seqboat_playground_")
        os.makedirs(artifacts, exist_ok=True)
        screenshot = os.path.join(artifacts, "playground.png")
        with tempfile.TemporaryDirectory() as d:
            expected_path = os.path.join(d, "expected.json")
            with open(expected_path, "w") as f:
                json.dump(expected, f)
            env = dict(os.environ, SEQBOAT_HTTP_BASE=server.http_base, SEQBOAT_EXPECTED=expected_path,
                       SEQBOAT_SCREENSHOT=screenshot, SEQBOAT_HTTP_BASE_SLOW=slow.http_base)
            try:
                r = subprocess.run([NODE, "playground_test.mjs"], cwd=TEST_DIR, env=env, capture_output=True,
                                   text=True, timeout=NODE_TIMEOUT_S)
            except subprocess.TimeoutExpired as e:
                self.fail("node playground_test.mjs ran past %d s; stdout:\n%s\nstderr:\n%s"
                          % (NODE_TIMEOUT_S, e.stdout, e.stderr))
        sys.stdout.write(r.stdout + r.stderr)
        self.assertEqual(r.returncode, 0, "node playground_test.mjs failed (exit code %d); stdout:\n%s\nstderr:\n%s"
                         % (r.returncode, r.stdout, r.stderr))
        with open(screenshot, "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
        self.assertGreater(os.path.getsize(screenshot), 20000)
        # The browser's requests were served (page, script, style, model info, four generations).
        self.assertGreaterEqual(server.metric("seqboat_requests_total", 'api="http",code="OK"'), 8)
        # Stop was a hang-up the slow server saw, not a request that ran to its end.
        def cancelled():
            try:
                return slow.metric("seqboat_requests_total", 'api="http",code="CANCELLED"')
            except KeyError:  # no such request yet
                return 0

        deadline = time.time() + 10  # the server notices a hang-up within 100 ms
        while cancelled() < 1 and time.time() < deadline:
            time.sleep(0.05)
        self.assertEqual(cancelled(), 1)
        self.assertEqual(server.stop(), 0, server.stderr()[-5000:])
        self.assertEqual(slow.stop(), 0, slow.stderr()[-5000:])


if __name__ == "__main__":
    reason = skip_reason()
    if reason is not None:
        print("skipped: " + reason)
        sys.exit(77)
    unittest.main()
