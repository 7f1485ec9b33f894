"""Under load: 64 concurrent streams with client cancellations and short deadlines, a full
waiting queue, and a drain on SIGTERM. Also run against the AddressSanitizer build."""
import random
import signal
import subprocess
import threading
import time
import unittest

import harness
from harness import pb, grpc, health_pb2, health_pb2_grpc


def long_request(n):
    r = pb.GenerateRequest(text="load ")
    r.sampling.temperature = 1.0
    r.stopping.max_new_tokens = n
    r.stopping.ignore_eos = True
    return r


class LoadTest(unittest.TestCase):
    def test_64_streams_with_cancellations_and_deadlines(self):
        server = harness.Server("--max_batch", "8", "--max_waiting", "128", "--debug_step_delay_ms", "2",
                                "--max_new_tokens_limit", "4096")
        try:
            stub = server.stub()
            rng = random.Random(5)
            plans = []
            for i in range(64):
                kind = ["cancel", "deadline", "complete"][i % 3]
                plans.append((kind, rng.randint(1, 6), rng.uniform(0.05, 0.3)))
            outcomes = [None] * len(plans)

            def run(i, kind, after_messages, deadline_s):
                if kind == "complete":
                    _, tokens, finish, _ = harness.collect(stub.Generate(long_request(24), timeout=60))
                    outcomes[i] = ("complete", finish.reason, len(tokens), finish.generated_tokens)
                elif kind == "cancel":
                    call = stub.Generate(long_request(4000), timeout=60)
                    seen = 0
                    try:
                        for _ in call:
                            seen += 1
                            if seen >= after_messages:
                                call.cancel()
                        outcomes[i] = ("cancel", "finished", seen)
                    except grpc.RpcError as e:
                        outcomes[i] = ("cancel", e.code())
                else:
                    try:
                        messages = list(stub.Generate(long_request(4000), timeout=deadline_s))
                        outcomes[i] = ("deadline", messages[-1].finish.reason)
                    except grpc.RpcError as e:
                        outcomes[i] = ("deadline", e.code())

            threads = [threading.Thread(target=run, args=(i,) + plan) for i, plan in enumerate(plans)]
            [t.start() for t in threads]
            [t.join(120) for t in threads]
            for i, outcome in enumerate(outcomes):
                self.assertIsNotNone(outcome, "stream %d did not end" % i)
                if outcome[0] == "complete":
                    self.assertEqual(outcome[1:], (pb.FINISH_REASON_LENGTH, 24, 24), i)
                elif outcome[0] == "cancel":
                    self.assertEqual(outcome[1], grpc.StatusCode.CANCELLED, i)
                else:
                    self.assertIn(outcome[1], (pb.FINISH_REASON_DEADLINE, grpc.StatusCode.DEADLINE_EXCEEDED), i)
            # Everything is released: no running request, no slot in use, nothing waiting.
            end = time.time() + 5
            while time.time() < end:
                state = [server.metric(m) for m in ("seqboat_requests_running", "seqboat_state_slots_in_use",
                                                   "seqboat_requests_waiting")]
                if state == [0, 0, 0]:
                    break
                time.sleep(0.1)
            self.assertEqual(state, [0, 0, 0])
            _, tokens, finish, _ = harness.collect(stub.Generate(long_request(5)))
            self.assertEqual(len(tokens), 5)
        finally:
            self.assertEqual(server.stop(), 0, server.stderr())

    def test_full_waiting_queue_is_resource_exhausted_at_once(self):
        server = harness.Server("--max_batch", "1", "--max_waiting", "2", "--debug_step_delay_ms", "20",
                                "--max_new_tokens_limit", "4096", "--shutdown_grace_s", "2")
        calls = []
        try:
            stub = server.stub()
            calls = [stub.Generate(long_request(4000), timeout=60)]
            first = next(iter(calls[0]))  # the first holds the only slot
            self.assertTrue(first.token_ids or first.text)
            calls += [stub.Generate(long_request(4000), timeout=60) for _ in range(2)]
            end = time.time() + 5
            while server.metric("seqboat_requests_waiting") < 2 and time.time() < end:
                time.sleep(0.02)
            start = time.time()
            with self.assertRaises(grpc.RpcError) as ctx:
                list(stub.Generate(long_request(10), timeout=10))
            self.assertEqual(ctx.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
            self.assertLess(time.time() - start, 1.0)
        finally:
            for call in calls:
                call.cancel()
            self.assertEqual(server.stop(), 0, server.stderr())

    def test_drain_on_sigterm(self):
        server = harness.Server("--shutdown_grace_s", "2", "--debug_step_delay_ms", "5",
                                "--max_new_tokens_limit", "4096")
        stub = server.stub()
        health = health_pb2_grpc.HealthStub(server.channel())
        self.assertEqual(health.Check(health_pb2.HealthCheckRequest(service="")).status,
                         health_pb2.HealthCheckResponse.SERVING)
        self.assertEqual(health.Check(health_pb2.HealthCheckRequest(service="seqboat.v1.SeqBoat")).status,
                         health_pb2.HealthCheckResponse.SERVING)
        results = {}

        def run(name, n):
            try:
                _, tokens, finish, _ = harness.collect(stub.Generate(long_request(n), timeout=30))
                results[name] = (finish.reason, len(tokens), time.time())
            except grpc.RpcError as e:
                results[name] = (e.code(), 0, time.time())

        short = threading.Thread(target=run, args=("short", 100))
        long_ = threading.Thread(target=run, args=("long", 4000))
        short.start()
        long_.start()
        time.sleep(0.3)
        signalled = time.time()
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        # New calls are refused once the drain began.
        with self.assertRaises(grpc.RpcError) as ctx:
            list(stub.Generate(long_request(3), timeout=5))
        self.assertEqual(ctx.exception.code(), grpc.StatusCode.UNAVAILABLE)
        short.join(10)
        long_.join(10)
        self.assertEqual(results["short"][:2], (pb.FINISH_REASON_LENGTH, 100))
        self.assertEqual(results["long"][0], pb.FINISH_REASON_CANCELLED)
        self.assertLess(results["long"][2] - signalled, 2 + 2)
        self.assertGreater(results["long"][1], 0)
        server.proc.wait(10)
        self.assertEqual(server.proc.returncode, 0, server.stderr())

    def test_drain_delay_turns_readiness_first(self):
        # SIGTERM with --drain_delay_s: health says NOT_SERVING at once, calls are still served
        # for the delay (balancers stop sending meanwhile), then the port closes.
        server = harness.Server("--drain_delay_s", "2", "--shutdown_grace_s", "2")
        stub = server.stub()
        health = health_pb2_grpc.HealthStub(server.channel())
        server.proc.send_signal(signal.SIGTERM)
        signalled = time.time()
        time.sleep(0.3)
        for service in ("", "seqboat.v1.SeqBoat"):
            self.assertEqual(health.Check(health_pb2.HealthCheckRequest(service=service)).status,
                             health_pb2.HealthCheckResponse.NOT_SERVING)
        _, tokens, finish, _ = harness.collect(stub.Generate(long_request(20), timeout=5))
        self.assertEqual((finish.reason, len(tokens)), (pb.FINISH_REASON_LENGTH, 20))
        self.assertLess(time.time() - signalled, 2)
        time.sleep(max(0, signalled + 2.5 - time.time()))
        # The port is closed: a new client's connection is refused.
        cli = subprocess.run([harness.binary("seqboat-cli"), "--server", server.address, "info"],
                             capture_output=True, text=True, timeout=30)
        self.assertEqual(cli.returncode, 1)
        self.assertIn("UNAVAILABLE", cli.stderr)
        self.assertIn("Connection refused", cli.stderr)
        # This Python channel still holds its connection, and grpcio reads nothing while it has
        # no call, so it has not seen the GOAWAY: a new call there reaches the shutting-down
        # server, which ends it CANCELLED (or refuses it UNAVAILABLE).
        with self.assertRaises(grpc.RpcError) as ctx:
            list(stub.Generate(long_request(3), timeout=5))
        self.assertIn(ctx.exception.code(), (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED))
        server.proc.wait(10)
        self.assertEqual(server.proc.returncode, 0, server.stderr())

    def test_a_second_signal_ends_the_drain_at_once(self):
        # A 30 s grace that a second signal cuts short: the stream gets its final message
        # (CANCELLED), the process exits 0 without a crash report.
        server = harness.Server("--debug_step_delay_ms", "10", "--shutdown_grace_s", "30")
        stub = server.stub()
        result = {}

        def run():
            try:
                _, tokens, finish, _ = harness.collect(stub.Generate(long_request(300), timeout=30))
                result["end"] = (finish.reason, len(tokens), time.time())
            except grpc.RpcError as e:
                result["end"] = (e.code(), 0, time.time())

        stream = threading.Thread(target=run)
        stream.start()
        time.sleep(0.3)
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        again = time.time()
        server.proc.send_signal(signal.SIGINT)  # Ctrl-C after a supervisor's SIGTERM
        stream.join(10)
        server.proc.wait(10)
        self.assertEqual(result["end"][0], pb.FINISH_REASON_CANCELLED, result)
        self.assertGreater(result["end"][1], 0)
        self.assertLess(result["end"][1], 300)
        self.assertLess(result["end"][2] - again, 2.0)
        self.assertEqual(server.proc.returncode, 0, server.stderr())
        self.assertIn("again: ending the remaining requests now", server.stderr())
        self.assertNotIn("*** ", server.stderr())  # absl's crash report

    def test_silent_engine_reports_not_serving(self):
        # Each iteration is followed by a 2.5 s pause: the heartbeat goes stale (1 s timeout)
        # while a request runs, and health must say so; idle again, it must recover.
        server = harness.Server("--debug_step_delay_ms", "2500", "--heartbeat_timeout_s", "1",
                                "--shutdown_grace_s", "1")
        try:
            health = health_pb2_grpc.HealthStub(server.channel())
            check = lambda: health.Check(health_pb2.HealthCheckRequest(service="seqboat.v1.SeqBoat")).status
            self.assertEqual(check(), health_pb2.HealthCheckResponse.SERVING)
            call = server.stub().Generate(long_request(3), timeout=30)
            statuses, end = set(), time.time() + 6
            while time.time() < end and health_pb2.HealthCheckResponse.NOT_SERVING not in statuses:
                statuses.add(check())
                time.sleep(0.1)
            self.assertIn(health_pb2.HealthCheckResponse.NOT_SERVING, statuses)
            self.assertEqual(server.metric("seqboat_engine_serving"), 0)
            list(call)
            end = time.time() + 6
            while time.time() < end and check() != health_pb2.HealthCheckResponse.SERVING:
                time.sleep(0.1)
            self.assertEqual(check(), health_pb2.HealthCheckResponse.SERVING)
        finally:
            self.assertEqual(server.stop(), 0, server.stderr())


if __name__ == "__main__":
    unittest.main()
