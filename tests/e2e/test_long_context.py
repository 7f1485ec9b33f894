"""Long contexts (#15): a million-token prompt through seqboat-server over gRPC, accepted by
default and prefilled in constant memory (the state does not grow with the context)."""
import time
import unittest

import harness
from harness import grpc, pb


class LongContextTest(unittest.TestCase):
    def test_a_million_token_prompt_is_accepted_and_prefills_in_constant_memory(self):
        server = harness.Server()
        try:
            stub = server.stub()
            info = stub.GetModelInfo(pb.GetModelInfoRequest())
            self.assertEqual(info.limits.max_prompt_tokens, 1 << 20)
            text = harness.fixture_prompt()

            def prompt(n, shift):
                tokens = (text[shift:] + text[:shift]) * (n // len(text) + 1)
                return tokens[:n]

            def run(n, shift):
                _, tokens, finish, _ = harness.collect(
                    stub.Generate(harness.greedy_request(prompt(n, shift), n=4), timeout=600))
                self.assertEqual(finish.prompt_tokens, n)
                self.assertEqual(len(tokens), 4)

            # Warm up at 64k tokens (every buffer a prompt needs, at a size), then 16x longer.
            run(1 << 16, 1)
            _, peak_before = harness.memory_kb(server.proc.pid)
            start = time.time()
            run(1 << 20, 2)
            seconds = time.time() - start
            _, peak_after = harness.memory_kb(server.proc.pid)
            print("\n1M-token prompt: %.1f s; peak RSS %.1f MB after 64k tokens, %.1f MB after 1M"
                  % (seconds, peak_before / 1e3, peak_after / 1e3))
            if not harness.sanitized(server.proc.pid):
                # The request's own copies of 1M ids (message, prompt, cache key) are ~20 MB;
                # activations that grew with the prompt would be hundreds.
                self.assertLess(peak_after - peak_before, 64 * 1000)
            with self.assertRaises(grpc.RpcError) as ctx:
                list(stub.Generate(harness.greedy_request([5] * ((1 << 20) + 1), n=1)))
            self.assertEqual(ctx.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        finally:
            server.stop()


if __name__ == "__main__":
    unittest.main()
