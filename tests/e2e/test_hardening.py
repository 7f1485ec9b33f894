"""A hostile or careless client: every finding of the hardening probe as a reproduction.

The metrics port answered by any method and path, idle and trickling connections against
the scrape, raw HTTP/2 clients that never read, oversized text, penalties that overflowed,
--max_waiting 0, the final status codes and their metric, messages naming the field by its
path, SIGTERM with stalled streams, and oversized metadata."""
import http.client
import os
import socket
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request

import harness
import raw_h2
from harness import pb, grpc

GENERATE = "/seqboat.v1.SeqBoat/Generate"


def request(n, text="The boat ", **kw):
    r = pb.GenerateRequest(text=text, **kw)
    r.stopping.max_new_tokens = n
    r.stopping.ignore_eos = True
    return r


def codes(server, api="grpc"):
    """seqboat_requests_total of one front-end, by code."""
    out = {}
    for line in server.metrics().splitlines():
        if line.startswith('seqboat_requests_total{api="%s",' % api):
            out[line.split('code="')[1].split('"')[0]] = float(line.split()[-1])
    return out


def wait_for(predicate, timeout, what):
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out after %.1f s waiting for %s" % (timeout, what))


def stalled_streams(server, count, req, window=0):
    """`count` Generate streams from raw clients that never read: (client, stream) pairs."""
    out = []
    for _ in range(count):
        client = raw_h2.RawGrpcClient(server.port, window=window)
        out.append((client, client.start(GENERATE, req.SerializeToString())))
    return out


def ended(pairs):
    """How many of the raw streams the server has ended (trailers or RST_STREAM)."""
    n = 0
    for client, stream in pairs:
        client.pump(0.01)
        if client.status(stream) is not None or stream in client.resets or client.closed:
            n += 1
    return n


def check_exact_greedy(testcase, server, n=12):
    """A greedy request after the abuse: the model's own tokens (seqboat-eval's argmax)."""
    prompt = harness.fixture_prompt()
    _, tokens, finish, _ = harness.collect(server.stub().Generate(harness.greedy_request(prompt, n=n)))
    testcase.assertEqual(finish.reason, pb.FINISH_REASON_LENGTH)
    logits = harness.eval_logits(prompt + tokens)
    for i, token in enumerate(tokens):
        row = list(logits[len(prompt) - 1 + i])
        row[1] = float("-inf")
        testcase.assertEqual(token, row.index(max(row)), "token %d" % i)


class MetricsEndpointTest(unittest.TestCase):
    def test_every_method_and_path_gets_a_small_answer_and_streams_survive(self):
        server = harness.Server("--debug_step_delay_ms", "5", "--max_new_tokens_limit", "4096")
        try:
            result = {}

            def stream():
                _, tokens, finish, _ = harness.collect(server.stub().Generate(request(300), timeout=60))
                result["stream"] = (finish.reason, len(tokens))

            thread = threading.Thread(target=stream)
            thread.start()
            time.sleep(0.2)
            port = server.metrics_port
            for method in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
                for path in ("/metrics", "/", "/favicon.ico", "/healthz", "/metrics/", "/%00", "/" + "a" * 4000):
                    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                    connection.request(method, path, body=b"x" * 100 if method in ("POST", "PUT", "PATCH") else None)
                    response = connection.getresponse()
                    body = response.read()
                    connection.close()
                    where = "%s %s" % (method, path[:30])
                    if path == "/metrics" and method in ("GET", "HEAD"):
                        self.assertEqual(response.status, 200, where)
                        self.assertIn("text/plain", response.getheader("Content-Type"))
                        if method == "HEAD":
                            self.assertEqual(body, b"", where)
                            self.assertGreater(int(response.getheader("Content-Length")), 1000)
                        else:
                            self.assertIn(b"seqboat_requests_total", body)
                    elif path == "/metrics":
                        self.assertEqual(response.status, 405, where)
                        self.assertEqual(response.getheader("Allow"), "GET, HEAD")
                    else:
                        self.assertIn(response.status, (400, 404), where)
                        self.assertLess(len(body), 200, where)
            # Junk, an unknown method, a huge header and a body nobody asked for.
            for raw in (b"\x00\xff\xfe junk\r\n\r\n", b"FOO /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
                        b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100000 + b"\r\n\r\n",
                        b"GET /metrics HTTP/9.9\r\n\r\n",
                        b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n" + b"x" * 65536):
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
                try:
                    s.sendall(raw)
                    s.recv(4096)
                except OSError:
                    pass  # a reset is a fine answer to junk
                s.close()
            thread.join(60)
            self.assertEqual(result.get("stream"), (pb.FINISH_REASON_LENGTH, 300))
            self.assertIsNone(server.proc.poll(), "the server died")
            self.assertIn("seqboat_requests_total", server.metrics())
        finally:
            self.assertEqual(server.stop(), 0, server.stderr())

    def test_idle_and_trickling_connections_do_not_starve_scrapes(self):
        server = harness.Server()
        port = server.metrics_port
        held, idle, trickle, stop = [], [], [], threading.Event()

        def connect(source):
            s = socket.socket()
            s.bind((source, 0))
            s.connect(("127.0.0.1", port))
            return s

        try:
            # From the scraper's own address: 6 idle connections and 6 that send a byte of a
            # request line every 0.5 s, each reopened when the server drops it (the
            # per-address limit, 16, leaves the scraper room).
            idle.extend(connect("127.0.0.1") for _ in range(6))
            trickle.extend(connect("127.0.0.1") for _ in range(6))

            def keep_trickling():
                while not stop.wait(0.5):
                    for i, s in enumerate(trickle):
                        try:
                            s.send(b"G")
                        except OSError:
                            trickle[i] = connect("127.0.0.1")
                    for i, s in enumerate(idle):
                        s.setblocking(False)
                        try:
                            if s.recv(1) == b"":
                                idle[i] = connect("127.0.0.1")
                        except BlockingIOError:
                            pass
                        except OSError:
                            idle[i] = connect("127.0.0.1")

            thread = threading.Thread(target=keep_trickling, daemon=True)
            thread.start()
            # And a flood from another address: its connections beyond the per-address limit
            # are closed at once.
            for _ in range(300):
                try:
                    held.append(connect("127.0.0.2"))
                except OSError:
                    break
            time.sleep(0.5)
            alive = 0
            for s in held:
                s.setblocking(False)
                try:
                    alive += s.recv(1) != b""
                except BlockingIOError:
                    alive += 1
                except OSError:
                    pass
            self.assertLessEqual(alive, 16, "connections kept from one address")
            for _ in range(5):
                start = time.time()
                with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
                    self.assertIn(b"seqboat_requests_total", r.read())
                self.assertLess(time.time() - start, 2.0)
                time.sleep(1)
        finally:
            stop.set()
            for s in held + idle + trickle:
                s.close()
            self.assertEqual(server.stop(), 0, server.stderr())

    def test_a_metrics_key_guards_the_scrape(self):
        with tempfile.NamedTemporaryFile("w", suffix=".keys", delete=False) as f:
            f.write("# scrape key\nscrape-secret\n")
        server = harness.Server("--metrics_api_keys_file", f.name)
        try:
            url = "http://127.0.0.1:%d/metrics" % server.metrics_port
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic eA=="}):
                with self.assertRaises(urllib.error.HTTPError) as ctx:
                    urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5)
                self.assertEqual(ctx.exception.code, 401)
                self.assertEqual(ctx.exception.headers.get("WWW-Authenticate"), "Bearer")
            ok = urllib.request.Request(url, headers={"Authorization": "Bearer scrape-secret"})
            with urllib.request.urlopen(ok, timeout=5) as r:
                self.assertIn(b"seqboat_requests_total", r.read())
        finally:
            server.stop()
            os.unlink(f.name)


class StreamMemoryTest(unittest.TestCase):
    # The probe's client: 64 streams, 4096 tokens each with 20 logprobs and the activations,
    # and not one WINDOW_UPDATE (the stream window is 0: the server can send nothing).
    LONG = dict(logprobs=20, return_activations=True)

    def run_stalled(self, flags, expect_code):
        server = harness.Server("--max_batch", "64", "--max_new_tokens_limit", "4096", *flags)
        pairs = []
        try:
            rss_before, _ = harness.memory_kb(server.proc.pid)
            pairs = stalled_streams(server, 64, request(4096, **self.LONG))
            wait_for(lambda: ended(pairs) == 64, 60, "the server to end all 64 streams")
            rss_after, peak = harness.memory_kb(server.proc.pid)
            print("\n%s: RSS before %.1f MB, peak %.1f MB (+%.1f), after %.1f MB"
                  % (" ".join(flags), rss_before / 1e3, peak / 1e3, (peak - rss_before) / 1e3, rss_after / 1e3))
            wait_for(lambda: server.metric("seqboat_streams_open") == 0, 5, "streams_open to drop to 0")
            self.assertEqual(codes(server)[expect_code], 64)
            self.assertEqual(codes(server)["OK"], 0)
            self.assertEqual(server.metric("seqboat_requests_running"), 0)
            check_exact_greedy(self, server)
            # A sanitizer's quarantine keeps freed memory: there the growth is not checked.
            return 0 if harness.sanitized(server.proc.pid) else peak - rss_before
        finally:
            for client, _ in pairs:
                client.close()
            self.assertEqual(server.stop(), 0, server.stderr())

    def test_a_capped_buffer_ends_never_reading_streams_with_resource_exhausted(self):
        # 64 streams of at most 64 KiB each (about 130 tokens), at most a few times that in
        # memory. The streams end once the write timeout cancels them: a client that stopped
        # reading never takes the last write. The timeout leaves time to fill every buffer
        # first (130 steps at batch 64 took over 4 s under ASan on a busy 2-core machine).
        growth_kb = self.run_stalled(["--stream_buffer_kb", "64", "--stream_write_timeout_s", "12"],
                                     "RESOURCE_EXHAUSTED")
        self.assertLess(growth_kb, 64 * 64 * 8)

    def test_the_write_timeout_ends_never_reading_streams_with_deadline_exceeded(self):
        # The default buffer holds a whole 4096-token answer; the write timeout frees it.
        growth_kb = self.run_stalled(["--stream_write_timeout_s", "3"], "DEADLINE_EXCEEDED")
        self.assertLess(growth_kb, 300 * 1000)  # the probe measured 654 MB before

    def test_a_slow_reader_past_the_cap_gets_resource_exhausted_with_the_reason(self):
        server = harness.Server("--max_new_tokens_limit", "4096", "--stream_buffer_kb", "64")
        client = raw_h2.RawGrpcClient(server.port, window=8192)
        try:
            stream = client.start(GENERATE, request(4096, **self.LONG).SerializeToString())
            end = time.time() + 30
            while client.status(stream) is None and time.time() < end:
                client.pump(0.25)
                client.acknowledge(stream, 4096)  # 16 KB/s: far slower than the model writes
            self.assertIsNotNone(client.status(stream), "the stream did not end")
            code, message = client.status(stream)
            self.assertEqual(code, grpc.StatusCode.RESOURCE_EXHAUSTED.value[0], message)
            self.assertIn("the client reads too slowly", urllib.request.unquote(message))
            self.assertGreater(len(client.data.get(stream, b"")), 0)
            wait_for(lambda: codes(server)["RESOURCE_EXHAUSTED"] == 1, 5, "the call to be counted")
        finally:
            client.close()
            self.assertEqual(server.stop(), 0, server.stderr())

    def test_finished_but_unread_streams_count_toward_capacity_until_the_timeout(self):
        server = harness.Server("--max_batch", "1", "--max_waiting", "1", "--stream_write_timeout_s", "2")
        pairs = []
        try:
            pairs = stalled_streams(server, 2, request(3))
            wait_for(lambda: server.metric("seqboat_requests_finished_total", 'reason="length"') == 2, 10,
                     "the engine to finish both")
            self.assertEqual(server.metric("seqboat_streams_open"), 2)
            self.assertEqual(server.metric("seqboat_requests_running"), 0)
            with self.assertRaises(grpc.RpcError) as ctx:
                list(server.stub().Generate(request(3), timeout=10))
            self.assertEqual(ctx.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
            self.assertIn("the server is full", ctx.exception.details())
            wait_for(lambda: ended(pairs) == 2, 10, "the write timeout to end them")
            wait_for(lambda: server.metric("seqboat_streams_open") == 0, 5, "streams_open to drop to 0")
            self.assertEqual(codes(server)["DEADLINE_EXCEEDED"], 2)
            _, tokens, _, _ = harness.collect(server.stub().Generate(request(3), timeout=10))
            self.assertEqual(len(tokens), 3)
        finally:
            for client, _ in pairs:
                client.close()
            self.assertEqual(server.stop(), 0, server.stderr())


class RequestLimitsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # A prompt limit below the text limit, so that text can exceed it.
        cls.server = harness.Server("--max_prompt_tokens", "8192")
        cls.stub = cls.server.stub()
        cls.info = cls.stub.GetModelInfo(pb.GetModelInfoRequest())

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def expect(self, call, code, starts_with, within_s=1.0):
        start = time.time()
        with self.assertRaises(grpc.RpcError) as ctx:
            result = call()
            if not isinstance(result, pb.TokenizeResponse):
                list(result)
        self.assertEqual(ctx.exception.code(), code, ctx.exception.details())
        self.assertTrue(ctx.exception.details().startswith(starts_with),
                        "%r should start with %r" % (ctx.exception.details(), starts_with))
        self.assertLess(time.time() - start, within_s)

    def test_oversized_text_is_refused_by_size_before_it_is_read(self):
        limits = self.info.limits
        self.assertEqual(limits.max_text_bytes, 256 << 10)
        rss_before, _ = harness.memory_kb(self.server.proc.pid)
        four_mb = "x" * (4 << 20)
        results = []

        def tokenize():
            try:
                self.stub.Tokenize(pb.TokenizeRequest(text=four_mb), timeout=10)
                results.append("ok")
            except grpc.RpcError as e:
                results.append(e.code())

        threads = [threading.Thread(target=tokenize) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(results, [grpc.StatusCode.RESOURCE_EXHAUSTED] * 4)  # beyond the request size
        over = "x" * (limits.max_text_bytes + 1)  # within the request size, beyond the text limit
        self.expect(lambda: self.stub.Tokenize(pb.TokenizeRequest(text=over)), grpc.StatusCode.INVALID_ARGUMENT,
                    "text: %d bytes; at most %d" % (len(over), limits.max_text_bytes))
        self.expect(lambda: self.stub.Generate(request(4, text=over)), grpc.StatusCode.INVALID_ARGUMENT,
                    "text: %d bytes; at most" % len(over))
        # Within the text limit but too many tokens: found without encoding the rest.
        long_text = "x" * (limits.max_text_bytes - 10)
        self.expect(lambda: self.stub.Generate(request(4, text=long_text)), grpc.StatusCode.INVALID_ARGUMENT,
                    "text: encodes to more than %d tokens with the start token" % limits.max_prompt_tokens)
        self.expect(lambda: self.stub.Generate(request(4, text="x" * limits.max_prompt_tokens)),
                    grpc.StatusCode.INVALID_ARGUMENT, "text: encodes to more than")
        _, tokens, _, _ = harness.collect(self.stub.Generate(request(4, text="x" * (limits.max_prompt_tokens - 1))))
        self.assertEqual(len(tokens), 4)
        tokenized = self.stub.Tokenize(pb.TokenizeRequest(text="y" * limits.max_text_bytes))
        self.assertEqual(len(tokenized.token_ids), limits.max_text_bytes + 1)
        rss_after, peak = harness.memory_kb(self.server.proc.pid)
        print("\nTokenize/Generate of oversized text: RSS before %.1f MB, peak %.1f MB, after %.1f MB"
              % (rss_before / 1e3, peak / 1e3, rss_after / 1e3))
        if not harness.sanitized(self.server.proc.pid):
            self.assertLess(peak - rss_before, 120 * 1000)  # the probe saw +794 MB for 4 x 4 MB

    def test_values_that_would_overflow_the_sampler_are_refused_naming_the_field(self):
        V = self.info.vocab_size
        for penalty in (1e-40, 1e38, 1e40, 0.0):
            r = request(4)
            r.sampling.repetition_penalty = penalty
            self.expect(lambda: self.stub.Generate(r), grpc.StatusCode.INVALID_ARGUMENT,
                        "sampling.repetition_penalty:")
        # The ends of the range sample real tokens (the denormal drew id 0 every time).
        for penalty in (0.01, 100.0):
            r = request(20)
            r.sampling.repetition_penalty = penalty
            r.sampling.seed = 5
            _, tokens, _, _ = harness.collect(self.stub.Generate(r))
            self.assertEqual(len(tokens), 20)
            self.assertNotEqual(set(tokens), {0}, penalty)
        r = request(4)
        r.sampling.top_k = 10 ** 6
        self.expect(lambda: self.stub.Generate(r), grpc.StatusCode.INVALID_ARGUMENT,
                    "sampling.top_k: 1000000 exceeds the vocabulary of %d tokens" % V)

    def test_messages_name_the_field_by_its_path(self):
        limits = self.info.limits
        r = request(0)
        self.expect(lambda: self.stub.Generate(r), grpc.StatusCode.INVALID_ARGUMENT,
                    "stopping.max_new_tokens: 0 is outside 1..%d" % limits.max_new_tokens_limit)
        r = request(4)
        r.stopping.stop_token_ids.extend([5] * 1000)
        self.expect(lambda: self.stub.Generate(r), grpc.StatusCode.INVALID_ARGUMENT,
                    "stopping.stop_token_ids: 1000 stop tokens; at most %d" % limits.max_stop_token_ids)
        r = pb.GenerateRequest()
        r.tokens.ids.extend([5] * (limits.max_prompt_tokens + 1))
        self.expect(lambda: self.stub.Generate(r), grpc.StatusCode.INVALID_ARGUMENT,
                    "tokens.ids: %d tokens; at most %d" % (limits.max_prompt_tokens + 1, limits.max_prompt_tokens))
        r = request(4, logprobs=limits.max_logprobs + 1)
        self.expect(lambda: self.stub.Generate(r), grpc.StatusCode.INVALID_ARGUMENT, "logprobs: ")

    def test_unparseable_requests_are_named_counted_and_not_logged_line_by_line(self):
        channel = self.server.channel()
        raw_generate = channel.unary_stream(GENERATE, request_serializer=None, response_deserializer=None)
        raw_tokenize = channel.unary_unary("/seqboat.v1.SeqBoat/Tokenize", request_serializer=None,
                                           response_deserializer=None)
        before = codes(self.server)["INVALID_ARGUMENT"]
        cases = [(b"\x0a\x02a\xff", "text: not valid UTF-8"),                   # text
                 (b"\x22\x03\x12\x01\xc3", "stopping.stop: not valid UTF-8"),   # stopping.stop
                 (b"\x3a\x01\xfe", "request_id: not valid UTF-8"),
                 (b"\xff\xff\xff", "the request is not a valid seqboat.v1.GenerateRequest")]
        for _ in range(10):
            for raw, message in cases:
                self.expect(lambda: raw_generate(raw), grpc.StatusCode.INVALID_ARGUMENT, message)
        self.expect(lambda: raw_tokenize(b"\x0a\x01\x80"), grpc.StatusCode.INVALID_ARGUMENT, "text: not valid UTF-8")
        self.assertEqual(codes(self.server)["INVALID_ARGUMENT"] - before, 40)
        self.assertNotIn("libprotobuf", self.server.stderr())
        self.assertLessEqual(self.server.stderr().count("protobuf"), 1)


class StatusCodeTest(unittest.TestCase):
    def test_max_waiting_zero_means_no_queue_not_no_service(self):
        server = harness.Server("--max_batch", "1", "--max_waiting", "0", "--debug_step_delay_ms", "20",
                                "--max_new_tokens_limit", "4096")
        try:
            stub = server.stub()
            _, tokens, _, _ = harness.collect(stub.Generate(request(3), timeout=10))  # an idle server serves
            self.assertEqual(len(tokens), 3)
            long_call = stub.Generate(request(4000), timeout=60)
            next(iter(long_call))  # it holds the only slot
            with self.assertRaises(grpc.RpcError) as ctx:
                list(stub.Generate(request(3), timeout=10))
            self.assertEqual(ctx.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
            long_call.cancel()
        finally:
            self.assertEqual(server.stop(), 0, server.stderr())

    def test_deadlines_end_with_deadline_exceeded_after_the_final_message(self):
        server = harness.Server("--debug_step_delay_ms", "10", "--max_new_tokens_limit", "4096")
        try:
            stub = server.stub()
            reasons = []
            for _ in range(5):
                messages = []
                with self.assertRaises(grpc.RpcError) as ctx:
                    for m in stub.Generate(request(4000), timeout=0.5):
                        messages.append(m)
                self.assertEqual(ctx.exception.code(), grpc.StatusCode.DEADLINE_EXCEEDED)
                if messages and messages[-1].HasField("finish"):
                    reasons.append(messages[-1].finish.reason)
            self.assertTrue(all(r == pb.FINISH_REASON_DEADLINE for r in reasons), reasons)
            self.assertGreater(len(reasons), 0, "no final message arrived before the deadline")
            wait_for(lambda: codes(server)["DEADLINE_EXCEEDED"] == 5, 5, "5 DEADLINE_EXCEEDED")
            self.assertEqual(codes(server)["OK"], 0)
        finally:
            self.assertEqual(server.stop(), 0, server.stderr())

    def test_a_client_gone_after_the_engine_finished_counts_as_cancelled(self):
        server = harness.Server()
        try:
            pairs = stalled_streams(server, 3, request(3))
            wait_for(lambda: server.metric("seqboat_requests_finished_total", 'reason="length"') == 3, 10,
                     "the engine to finish them")
            for client, _ in pairs:
                client.close()  # gone without reading
            wait_for(lambda: server.metric("seqboat_streams_open") == 0, 10, "the streams to end")
            self.assertEqual(codes(server)["CANCELLED"], 3)
            self.assertEqual(codes(server)["OK"], 0)
        finally:
            self.assertEqual(server.stop(), 0, server.stderr())

    def test_a_call_ended_before_its_request_message_is_cancelled_not_invalid(self):
        # gRPC starts a call whose client cancelled or left before sending its message, with no
        # message: that is CANCELLED; only a call that ends its side without one is INVALID.
        import h2.errors
        server = harness.Server()
        try:
            def headers_only(client, end_stream):
                stream = client.conn.get_next_available_stream_id()
                client.conn.send_headers(stream, [(":method", "POST"), (":scheme", "http"), (":path", GENERATE),
                                                  (":authority", client.authority),
                                                  ("content-type", "application/grpc"), ("te", "trailers")],
                                         end_stream=end_stream)
                client.flush()
                return stream

            client = raw_h2.RawGrpcClient(server.port, window=65535)
            stream = headers_only(client, False)
            time.sleep(0.2)
            client.conn.reset_stream(stream, h2.errors.ErrorCodes.CANCEL)
            client.flush()
            client.close()
            client = raw_h2.RawGrpcClient(server.port, window=65535)
            headers_only(client, False)
            time.sleep(0.2)
            client.close()  # gone before its message
            wait_for(lambda: codes(server).get("CANCELLED") == 2, 5, "2 CANCELLED")
            client = raw_h2.RawGrpcClient(server.port, window=65535)
            stream = headers_only(client, True)
            client.pump(0.5)
            self.assertEqual(client.status(stream), (3, "no request message: expected one GenerateRequest"))
            client.close()
            wait_for(lambda: codes(server).get("INVALID_ARGUMENT") == 1, 5, "1 INVALID_ARGUMENT")
            self.assertEqual(codes(server).get("CANCELLED"), 2)
        finally:
            self.assertEqual(server.stop(), 0, server.stderr())


class ShutdownTest(unittest.TestCase):
    def test_sigterm_with_stalled_streams_exits_within_the_grace_period(self):
        server = harness.Server("--shutdown_grace_s", "2", "--max_new_tokens_limit", "4096",
                                "--debug_step_delay_ms", "2")
        pairs = stalled_streams(server, 4, request(4000)) + stalled_streams(server, 4, request(3))
        wait_for(lambda: server.metric("seqboat_streams_open") == 8, 10, "8 open streams")
        start = time.time()
        code = server.stop(timeout=15)  # SIGTERM, then the exit code
        took = time.time() - start
        for client, _ in pairs:
            client.close()
        self.assertEqual(code, 0, server.stderr())
        self.assertLess(took, 2 + 1.5, "exit took %.1f s with a 2 s grace period" % took)


class MetadataLimitTest(unittest.TestCase):
    def test_metadata_over_the_limit_is_resource_exhausted_and_other_connections_go_on(self):
        server = harness.Server("--debug_step_delay_ms", "5", "--max_new_tokens_limit", "4096")
        try:
            def generate_with(stub, metadata=()):
                try:
                    _, tokens, _, _ = harness.collect(stub.Generate(request(3), metadata=metadata, timeout=10))
                    return len(tokens)
                except grpc.RpcError as e:
                    return e.code()

            stub = server.stub()
            # 9 KB (the probe's size) is under the 16 KiB default.
            self.assertEqual(generate_with(stub, [("x-big", "a" * 9000)]), 3)
            # Over it, with a long stream on the same connection and one on another.
            results = {}

            def long_stream(name, s):
                try:
                    _, tokens, _, _ = harness.collect(s.Generate(request(200), timeout=30))
                    results[name] = len(tokens)
                except grpc.RpcError as e:
                    results[name] = e.code()

            # A channel with its own subchannel pool: its own connection (grpcio otherwise shares).
            other = harness.pb_grpc.SeqBoatStub(
                grpc.insecure_channel(server.address, options=[("grpc.use_local_subchannel_pool", 1)]))
            threads = [threading.Thread(target=long_stream, args=("same", stub)),
                       threading.Thread(target=long_stream, args=("other", other))]
            for t in threads:
                t.start()
            time.sleep(0.3)
            self.assertEqual(generate_with(stub, [("x-big", "a" * 20000)]), grpc.StatusCode.RESOURCE_EXHAUSTED)
            for t in threads:
                t.join(30)
            self.assertEqual(results["other"], 200)
            # gRPC 1.51 ends the other streams of that connection as well (server/README.md):
            # a proxy that pools clients onto one connection must cap header size below ours.
            self.assertEqual(results["same"], grpc.StatusCode.RESOURCE_EXHAUSTED)
            self.assertEqual(generate_with(server.stub()), 3)
        finally:
            self.assertEqual(server.stop(), 0, server.stderr())


if __name__ == "__main__":
    unittest.main(verbosity=2)
