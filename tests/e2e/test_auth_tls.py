"""API keys (authorization: Bearer KEY) and TLS, with the Python client and seqboat-cli."""
import os
import subprocess
import tempfile
import unittest

import harness
from harness import pb, pb_grpc, grpc, health_pb2, health_pb2_grpc, reflection_pb2, reflection_pb2_grpc


class AuthTest(unittest.TestCase):
    def test_api_keys(self):
        with tempfile.TemporaryDirectory() as d:
            keys = os.path.join(d, "keys")
            with open(keys, "w") as f:
                f.write("# operators\nalpha-key\n\nbeta-key  # second\n")
            server = harness.Server("--api_keys_file", keys)
            try:
                stub = server.stub()
                request = harness.greedy_request(text="hi", n=3)
                for metadata in (None, [("authorization", "Bearer wrong")], [("authorization", "alpha-key")]):
                    with self.assertRaises(grpc.RpcError) as ctx:
                        list(stub.Generate(request, metadata=metadata))
                    self.assertEqual(ctx.exception.code(), grpc.StatusCode.UNAUTHENTICATED, metadata)
                with self.assertRaises(grpc.RpcError) as ctx:
                    stub.GetModelInfo(pb.GetModelInfoRequest())
                self.assertEqual(ctx.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
                for key in ("alpha-key", "beta-key"):
                    _, tokens, _, _ = harness.collect(
                        stub.Generate(request, metadata=[("authorization", "Bearer " + key)]))
                    self.assertEqual(len(tokens), 3)
                # Health needs no key (probes).
                health = health_pb2_grpc.HealthStub(server.channel())
                self.assertEqual(health.Check(health_pb2.HealthCheckRequest()).status,
                                 health_pb2.HealthCheckResponse.SERVING)
                # Nor does reflection (the schema is public; tools such as grpcurl use it).
                reflection = reflection_pb2_grpc.ServerReflectionStub(server.channel())
                listed = list(reflection.ServerReflectionInfo(
                    iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10))
                self.assertIn("seqboat.v1.SeqBoat", [s.name for s in listed[0].list_services_response.service])
                cli = [harness.binary("seqboat-cli"), "--server", server.address, "generate", "hi",
                       "--max_new_tokens", "3"]
                self.assertEqual(subprocess.run(cli, capture_output=True).returncode, 1)
                ok = subprocess.run(cli + ["--api_key", "beta-key"], capture_output=True, text=True)
                self.assertEqual(ok.returncode, 0, ok.stderr)
                self.assertEqual(server.metric("seqboat_requests_total", 'api="grpc",code="UNAUTHENTICATED"'), 4)
            finally:
                self.assertEqual(server.stop(), 0)

    def test_tls(self):
        with tempfile.TemporaryDirectory() as d:
            key, cert = harness.self_signed_cert(d)
            server = harness.Server("--tls_cert", cert, "--tls_key", key)
            try:
                with open(cert, "rb") as f:
                    credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
                stub = pb_grpc.SeqBoatStub(grpc.secure_channel(server.address, credentials))
                _, tokens, finish, _ = harness.collect(stub.Generate(harness.greedy_request(text="hi", n=4)))
                self.assertEqual(len(tokens), 4)
                with self.assertRaises(grpc.RpcError) as ctx:
                    server.stub().GetModelInfo(pb.GetModelInfoRequest(), timeout=5)
                self.assertEqual(ctx.exception.code(), grpc.StatusCode.UNAVAILABLE)
                cli = subprocess.run([harness.binary("seqboat-cli"), "--server", server.address, "--tls_ca", cert,
                                      "info", "--json"], capture_output=True, text=True)
                self.assertEqual(cli.returncode, 0, cli.stderr)
                self.assertIn('"vocabSize"', cli.stdout)
            finally:
                self.assertEqual(server.stop(), 0)

    def test_bad_flags_exit_2_with_a_message(self):
        server_bin = harness.binary("seqboat-server")
        cases = [
            ([], "--model"),
            (["--model", "/nonexistent.safetensors"], "/nonexistent.safetensors"),
            (["--model", harness.TINY, "--device", "tpu"], "--device"),
            (["--model", harness.TINY, "--max_batch", "0"], "--max_batch"),
            (["--model", harness.TINY, "--max_batch", "2147483647"], "--max_batch"),
            (["--model", harness.TINY, "--tls_cert", "x.pem"], "--tls_cert"),
            (["--model", harness.TINY, "--no_such_flag"], "no_such_flag"),
            (["--model", harness.TINY, "--max_batch", "many"], "max_batch"),
            (["--model", harness.TINY, "--listen", "256.0.0.1:1"], "--listen"),
            (["--model", harness.TINY, "--debug_fail_forward", "-1"], "--debug_fail_forward"),
            (["--model", harness.TINY, "--debug_fail_sticky"], "--debug_fail_sticky"),
            (["--model", harness.TINY, "--weight_dtype", "f8"], "--weight_dtype"),
            (["--model", harness.TINY, "--weight_dtype", "f16"], "CPU backend keeps matrices in f32 (as_stored), bf16 or int8"),
            (["--model", harness.TINY, "--fifo_dtype", "f8"], "--fifo_dtype"),
            (["--model", harness.TINY, "--fifo_dtype", "int8"], "CPU backend keeps FIFO keys and values in f32 (as_stored) or bf16"),
            (["--model", harness.TINY, "--cuda_device", "-1"], "--cuda_device"),
            (["--model", harness.TINY, "--state_memory_mb", "-5"], "--state_memory_mb"),
            (["--model", harness.TINY, "--state_memory_mb", "99999999999999"], "--state_memory_mb"),
            (["--model", harness.TINY, "--prefix_cache_mb", "99999999999999"], "--prefix_cache_mb"),
            (["--model", harness.TINY, "--state_memory_mb", "1", "--max_batch", "60000"], "--max_batch 60000 needs"),
            (["--model", harness.TINY, "--ema_horizon", "long"], "--ema_horizon"),
            (["--model", harness.TINY, "--prefill_budget", "0"], "--prefill_budget"),
            (["--model", harness.TINY, "--max_text_bytes", "0"], "--max_text_bytes"),
            (["--model", harness.TINY, "--max_request_bytes", "-1"], "--max_request_bytes"),
            (["--model", harness.TINY, "--max_request_bytes", "4294967296"], "--max_request_bytes"),
            (["--model", harness.TINY, "--max_metadata_bytes", "0"], "--max_metadata_bytes"),
            (["--model", harness.TINY, "--stream_buffer_kb", "0"], "--stream_buffer_kb"),
            (["--model", harness.TINY, "--stream_write_timeout_s", "0"], "--stream_write_timeout_s"),
            (["--model", harness.TINY, "--drain_delay_s", "-1"], "--drain_delay_s"),
            (["--model", harness.TINY, "--heap_trim_interval_s", "-1"], "--heap_trim_interval_s"),
            (["--model", harness.TINY, "--activation_bias", "nan"], "--activation_bias"),
            (["--model", harness.TINY, "--activation_bias", "5", "--max_activation_bias", "4"], "--activation_bias"),
            (["--model", harness.TINY, "--max_activation_bias", "-1"], "--max_activation_bias"),
            (["--model", harness.TINY, "--playground", "yes"], "--playground"),
            (["--model", harness.TINY, "--drain_delay_s", "nan"], "--drain_delay_s"),
            (["--model", harness.TINY, "--metrics_api_keys_file", "/nonexistent.keys"], "--metrics_api_keys_file"),
            (["--model", harness.TINY, "--metrics_listen", "nohost"], "--metrics_listen"),
            (["--model", harness.TINY, "--metrics_listen", "127.0.0.1:99999"], "--metrics_listen"),
            (["--model", harness.TINY, "--fifo_capacity", "7"], "differs from the model's chunk_size"),
        ]
        for args, named in cases:
            metrics = [] if "--metrics_listen" in args else ["--metrics_listen", ""]
            r = subprocess.run([server_bin] + metrics + args, capture_output=True, text=True, timeout=30)
            self.assertEqual(r.returncode, 2, (args, r.stderr))
            self.assertIn(named, r.stderr, args)


if __name__ == "__main__":
    unittest.main()
