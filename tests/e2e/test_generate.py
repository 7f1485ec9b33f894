"""Generation against teacher forcing, the C++ client against the Python one (interop),
logprobs and activations, seeding, and every invalid field."""
import json
import math
import subprocess
import threading
import time
import unittest

import numpy as np

import harness
from harness import pb, grpc


def greedy_from_logits(logits_row):
    row = np.array(logits_row, dtype=np.float64)
    row[1] = -np.inf  # the padding id is never drawn
    return int(np.argmax(row))  # first maximum: lowest id on ties


class GenerateTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = harness.Server("--max_new_tokens_limit", "64")
        cls.stub = cls.server.stub()
        cls.info = cls.stub.GetModelInfo(pb.GetModelInfoRequest())
        cls.prompt = harness.fixture_prompt()

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def check_greedy(self, prompt, generated):
        logits = harness.eval_logits(prompt + generated)
        for i, token in enumerate(generated):
            self.assertEqual(token, greedy_from_logits(logits[len(prompt) - 1 + i]), "token %d" % i)

    def test_greedy_tokens_equal_teacher_forced_argmax(self):
        _, tokens, finish, _ = harness.collect(self.stub.Generate(harness.greedy_request(self.prompt, n=40)))
        self.assertEqual(len(tokens), 40)
        self.assertEqual(finish.reason, pb.FINISH_REASON_LENGTH)
        self.assertEqual(finish.prompt_tokens, len(self.prompt))
        self.assertEqual(finish.generated_tokens, 40)
        self.check_greedy(self.prompt, tokens)

    def test_interop_cpp_cli_and_python_client_agree(self):
        cli = subprocess.run([harness.binary("seqboat-cli"), "--server", self.server.address, "generate", "--json",
                              "--tokens", ",".join(map(str, self.prompt)), "--temperature", "0",
                              "--max_new_tokens", "30", "--ignore_eos"], capture_output=True, text=True, check=True)
        messages = [json.loads(line) for line in cli.stdout.splitlines() if line.strip()]
        cli_tokens = [t for m in messages for t in m.get("tokenIds", [])]
        self.assertEqual(messages[-1]["finish"]["reason"], "FINISH_REASON_LENGTH")
        _, py_tokens, _, _ = harness.collect(self.stub.Generate(harness.greedy_request(self.prompt, n=30)))
        self.assertEqual(cli_tokens, py_tokens)
        self.check_greedy(self.prompt, cli_tokens)

    def test_cli_health_and_targets(self):
        cli = harness.binary("seqboat-cli")
        run = lambda *args: subprocess.run([cli] + list(args), capture_output=True, text=True, timeout=30)
        for service in ([], ["seqboat.v1.SeqBoat"]):
            r = run("--server", self.server.address, "health", *service)
            self.assertEqual((r.returncode, r.stdout), (0, "SERVING\n"), r.stderr)
        r = run("--server", self.server.address, "health", "no.such.Service")
        self.assertEqual(r.returncode, 1)
        self.assertIn("NOT_FOUND", r.stderr)
        # Several addresses, one of them down: round-robin calls go to the ready one.
        r = run("--server", "ipv4:127.0.0.1:1,%s" % self.server.address, "info")
        self.assertEqual(r.returncode, 0, r.stderr)
        r = run("--server", "dns:///localhost:%d" % self.server.port, "--max_attempts", "3", "health")
        self.assertEqual(r.returncode, 0, r.stderr)
        for args, named in ((["--lb_policy", "random"], "--lb_policy"), (["--max_attempts", "0"], "--max_attempts"),
                            (["--max_attempts", "6"], "--max_attempts")):
            r = run("--server", self.server.address, *args, "info")
            self.assertEqual(r.returncode, 2, (args, r.stderr))
            self.assertIn(named, r.stderr)

    def test_text_prompt_is_tokenized_after_the_start_token(self):
        tokenized = self.stub.Tokenize(pb.TokenizeRequest(text="The boat "))
        self.assertEqual(tokenized.token_ids[0], 2)
        self.assertEqual(len(tokenized.token_ids), 1 + len("The boat ".encode()))
        _, tokens, finish, _ = harness.collect(self.stub.Generate(harness.greedy_request(text="The boat ", n=12)))
        self.assertEqual(finish.prompt_tokens, len(tokenized.token_ids))
        self.check_greedy(list(tokenized.token_ids), tokens)

    def test_model_info_matches_the_model_file(self):
        config = harness.model_config()
        self.assertEqual(self.info.vocab_size, config["vocab_size"])
        self.assertEqual(self.info.layers, config["layers"])
        self.assertEqual(self.info.window, config["chunk_size"])
        self.assertEqual(self.info.embed_dim, config["embed_dim"])
        self.assertEqual(self.info.tokenizer_style, "byte")
        self.assertEqual(self.info.backend, "cpu")
        self.assertGreater(self.info.state_bytes_per_sequence, 0)
        self.assertEqual(self.info.limits.max_new_tokens_limit, 64)

    def test_logprobs_and_activations(self):
        request = harness.greedy_request(self.prompt, n=8, logprobs=3, return_activations=True)
        _, tokens, _, messages = harness.collect(self.stub.Generate(request))
        logprobs = [lp for m in messages for lp in m.logprobs]
        activations = [a for m in messages for a in m.activations]
        self.assertEqual(len(logprobs), len(tokens))
        self.assertEqual(len(activations), len(tokens))
        logits = harness.eval_logits(self.prompt + tokens).astype(np.float64)
        for i, (token, lp) in enumerate(zip(tokens, logprobs)):
            row = logits[len(self.prompt) - 1 + i]
            log_softmax = row - (row.max() + math.log(np.exp(row - row.max()).sum()))
            self.assertEqual(lp.token_id, token)
            self.assertAlmostEqual(lp.logprob, log_softmax[token], delta=1e-4)
            self.assertEqual(len(lp.top), 3)
            self.assertEqual([a.token_id for a in lp.top], list(np.argsort(-log_softmax, kind="stable")[:3]))
            self.assertTrue(all(lp.top[k].logprob >= lp.top[k + 1].logprob for k in range(2)))
        for a in activations:
            self.assertEqual(len(a.layers), self.info.layers)

    def test_seeded_sampling_repeats_alone_and_in_company(self):
        def sampled(seed):
            r = pb.GenerateRequest()
            r.tokens.ids.extend(self.prompt)
            r.sampling.temperature = 1.5
            r.sampling.seed = seed
            r.stopping.max_new_tokens = 24
            r.stopping.ignore_eos = True
            _, tokens, finish, _ = harness.collect(self.stub.Generate(r))
            self.assertEqual(finish.seed, seed)
            return tokens

        first = sampled(1234)
        self.assertEqual(sampled(1234), first)
        self.assertNotEqual(sampled(999), first)
        results = [None] * 6
        threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, sampled(1234))) for i in range(6)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        for r in results:
            self.assertEqual(r, first)

    def test_n_choices_share_a_prefill_and_draw_as_lone_requests(self):
        def request(seed, n=1):
            r = pb.GenerateRequest(n=n)
            r.tokens.ids.extend(self.prompt)
            r.sampling.temperature = 1.5
            r.sampling.seed = seed
            r.stopping.max_new_tokens = 20
            r.stopping.ignore_eos = True
            return r

        messages = list(self.stub.Generate(request(500, n=3)))
        by_choice = {k: [t for m in messages if m.index == k for t in m.token_ids] for k in range(3)}
        finishes = [m for m in messages if m.HasField("finish")]
        self.assertEqual(sorted(m.index for m in finishes), [0, 1, 2])
        self.assertEqual(sorted(m.finish.seed for m in finishes), [500, 501, 502])
        for k in range(3):
            _, lone, _, _ = harness.collect(self.stub.Generate(request(500 + k)))
            self.assertEqual(by_choice[k], lone, "choice %d" % k)
        self.assertEqual(len({tuple(v) for v in by_choice.values()}), 3)
        with self.assertRaises(grpc.RpcError) as ctx:
            list(self.stub.Generate(request(1, n=self.info.limits.max_n + 1)))
        self.assertTrue(ctx.exception.details().startswith("n: "), ctx.exception.details())

    def test_prompt_scoring_equals_teacher_forced_log_softmax(self):
        logits = harness.eval_logits(self.prompt).astype("float64")
        for max_new in (0, 3):  # score only, and score then generate
            r = pb.GenerateRequest(prompt_logprobs=2)
            r.tokens.ids.extend(self.prompt)
            r.sampling.temperature = 0.0
            r.stopping.max_new_tokens = max_new
            r.stopping.ignore_eos = True
            _, tokens, finish, messages = harness.collect(self.stub.Generate(r))
            scored = [lp for m in messages for lp in m.prompt_logprobs]
            self.assertEqual(len(scored), len(self.prompt) - 1)
            self.assertEqual(len(tokens), max_new)
            self.assertEqual(finish.cached_prompt_tokens, 0)
            for p in range(1, len(self.prompt)):
                row = logits[p - 1]
                expected = row[self.prompt[p]] - row.max() - math.log(np.exp(row - row.max()).sum())
                self.assertEqual(scored[p - 1].token_id, self.prompt[p])
                self.assertAlmostEqual(scored[p - 1].logprob, expected, delta=1e-4)
                self.assertEqual(len(scored[p - 1].top), 2)
        r = pb.GenerateRequest()
        r.tokens.ids.extend(self.prompt)
        r.stopping.max_new_tokens = 0  # without scoring: nothing to do
        with self.assertRaises(grpc.RpcError) as ctx:
            list(self.stub.Generate(r))
        self.assertIn("stopping.max_new_tokens", ctx.exception.details())

    def test_activation_bias_scores_as_the_reference_and_steers_the_router(self):
        import os
        with open(os.path.join(harness.FIXTURES, "manifest.json")) as f:
            manifest = json.load(f)
        entry = next(m for m in manifest["models"] if m["folder"] == "enwik8_tiny")
        tokens = np.load(os.path.join(harness.FIXTURES, "enwik8_tiny", "seq0.tokens.npy")).tolist()
        # Scoring the reference's sequence under each of its per-layer biases gives its logits.
        for j, biases in enumerate(entry["activation_biases"]):
            logits = np.load(os.path.join(harness.FIXTURES, "enwik8_tiny",
                                          "seq0.exact.bias%d.logits.npy" % j)).astype("float64")
            r = pb.GenerateRequest(prompt_logprobs=0)
            r.tokens.ids.extend(tokens)
            r.stopping.max_new_tokens = 0
            r.routing.layer_activation_bias.extend(biases)
            _, _, _, messages = harness.collect(self.stub.Generate(r))
            scored = [lp.logprob for m in messages for lp in m.prompt_logprobs]
            self.assertEqual(len(scored), len(tokens) - 1)
            rows = logits[:-1]
            shifted = rows - rows.max(axis=1, keepdims=True)
            expected = (shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True)))[
                np.arange(len(tokens) - 1), tokens[1:]]
            self.assertLess(float(np.abs(np.array(scored) - expected).max()), 1e-4, "bias %d" % j)
        # One value for every layer: a positive bias runs attention for fewer tokens.
        def activated(bias):
            r = harness.greedy_request(self.prompt, n=48, return_activations=True)
            if bias is not None:
                r.routing.activation_bias = bias
            _, _, _, messages = harness.collect(self.stub.Generate(r))
            return sum(sum(a.layers) for m in messages for a in m.activations)
        plain = activated(None)
        self.assertEqual(activated(0.0), plain)
        self.assertLess(activated(3.0), plain)
        self.assertGreater(activated(-3.0), plain)
        for field, value, expected in (
                ("layer_activation_bias", [1.0, 2.0],
                 "routing.layer_activation_bias: 2 values; expected one per layer (3) or none"),
                ("layer_activation_bias", [0.0, float("nan"), 0.0],
                 "routing.layer_activation_bias[1]: nan is outside -1000..1000"),
                ("activation_bias", 5000.0, "routing.activation_bias: 5000 is outside -1000..1000")):
            r = harness.greedy_request(self.prompt, n=4)
            if isinstance(value, list):
                getattr(r.routing, field).extend(value)
            else:
                setattr(r.routing, field, value)
            with self.assertRaises(grpc.RpcError) as ctx:
                list(self.stub.Generate(r))
            self.assertEqual(ctx.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
            self.assertEqual(ctx.exception.details(), expected)
        self.assertEqual(self.info.limits.max_activation_bias, 1000.0)
        self.assertEqual(self.info.limits.default_activation_bias, 0.0)

    def test_the_server_default_activation_bias_and_a_request_overriding_it(self):
        server = harness.Server("--activation_bias", "100", "--max_activation_bias", "200")
        try:
            stub = server.stub()
            limits = stub.GetModelInfo(pb.GetModelInfoRequest()).limits
            self.assertEqual((limits.default_activation_bias, limits.max_activation_bias), (100.0, 200.0))
            def activated(request):
                _, _, _, messages = harness.collect(stub.Generate(request))
                return sum(sum(a.layers) for m in messages for a in m.activations)
            r = harness.greedy_request(self.prompt, n=20, return_activations=True)
            self.assertEqual(activated(r), 0)  # +100 on every layer: no attention
            r.routing.activation_bias = 0.0
            self.assertGreater(activated(r), 0)
        finally:
            server.stop()

    def test_logit_bias_and_an_included_stop_sequence(self):
        r = harness.greedy_request(self.prompt, n=6)
        r.sampling.logit_bias[70] = 100.0  # id 70 outweighs every other token
        _, tokens, _, _ = harness.collect(self.stub.Generate(r))
        self.assertEqual(tokens, [70] * 6)
        r.sampling.logit_bias[70] = 250.0
        with self.assertRaises(grpc.RpcError) as ctx:
            list(self.stub.Generate(r))
        self.assertTrue(ctx.exception.details().startswith("sampling.logit_bias[0]: bias 250"))
        text, _, plain_finish, _ = harness.collect(self.stub.Generate(harness.greedy_request(self.prompt, n=30)))
        stop = text[5:7]
        r = harness.greedy_request(self.prompt, n=30)
        r.stopping.stop.append(stop)
        r.stopping.include_stop_sequence = True
        included, _, finish, _ = harness.collect(self.stub.Generate(r))
        self.assertEqual(finish.reason, pb.FINISH_REASON_STOP_SEQUENCE)
        self.assertTrue(included.endswith(stop) and stop not in included[:-len(stop)], (included, stop))

    def test_server_reflection_describes_our_api(self):
        from google.protobuf import descriptor_pb2
        from harness import reflection_pb2 as rpb, reflection_pb2_grpc as rpb_grpc
        requests = [rpb.ServerReflectionRequest(list_services=""),
                    rpb.ServerReflectionRequest(file_containing_symbol="seqboat.v1.SeqBoat"),
                    rpb.ServerReflectionRequest(file_containing_symbol="seqboat.v1.NoSuchThing")]
        stub = rpb_grpc.ServerReflectionStub(self.server.channel())
        listed, described, missing = list(stub.ServerReflectionInfo(iter(requests), timeout=10))
        names = {s.name for s in listed.list_services_response.service}
        self.assertLessEqual({"seqboat.v1.SeqBoat", "grpc.health.v1.Health"}, names)
        files = [descriptor_pb2.FileDescriptorProto.FromString(b)
                 for b in described.file_descriptor_response.file_descriptor_proto]
        ours = next(f for f in files if f.name == "seqboat/v1/seqboat.proto")
        # The server describes exactly the API these Python stubs were compiled from.
        self.assertEqual(ours, descriptor_pb2.FileDescriptorProto.FromString(pb.DESCRIPTOR.serialized_pb))
        methods = {m.name: m for m in ours.service[0].method}
        self.assertTrue(methods["Generate"].server_streaming)
        self.assertLessEqual({"Generate", "Tokenize", "GetModelInfo"}, set(methods))
        self.assertEqual(missing.error_response.error_code, grpc.StatusCode.NOT_FOUND.value[0])

    def test_invalid_requests_name_the_field_and_the_server_keeps_serving(self):
        V = self.info.vocab_size
        before = self.server.metric("seqboat_requests_total", 'api="grpc",code="INVALID_ARGUMENT"')

        def expect(field, build):
            r = harness.greedy_request(self.prompt, n=4)
            build(r)
            with self.assertRaises(grpc.RpcError) as ctx:
                list(self.stub.Generate(r))
            self.assertEqual(ctx.exception.code(), grpc.StatusCode.INVALID_ARGUMENT, field)
            self.assertIn(field, ctx.exception.details())

        expect("text", lambda r: r.ClearField("tokens") or setattr(r, "text", ""))
        expect("prompt", lambda r: r.ClearField("tokens"))
        expect("tokens.ids", lambda r: r.tokens.ids.append(V))
        expect("tokens.ids", lambda r: r.tokens.ids.append(1))
        expect("sampling.temperature", lambda r: setattr(r.sampling, "temperature", -1.0))
        expect("sampling.top_p", lambda r: setattr(r.sampling, "top_p", 0.0))
        expect("sampling.top_p", lambda r: setattr(r.sampling, "top_p", 1.5))
        expect("max_new_tokens", lambda r: setattr(r.stopping, "max_new_tokens", 65))
        expect("stopping.stop", lambda r: r.stopping.stop.extend(["x"] * (self.info.limits.max_stop_sequences + 1)))
        expect("logprobs", lambda r: setattr(r, "logprobs", self.info.limits.max_logprobs + 1))
        expect("stopping.stop_token_ids", lambda r: r.stopping.stop_token_ids.append(V))
        _, tokens, finish, _ = harness.collect(self.stub.Generate(harness.greedy_request(self.prompt, n=5)))
        self.assertEqual(len(tokens), 5)
        self.assertEqual(self.server.metric("seqboat_requests_total", 'api="grpc",code="INVALID_ARGUMENT"') - before, 11)


class PrefixCacheTest(unittest.TestCase):
    def test_shared_prefix_state_is_reused_and_tokens_stay_exact(self):
        shared = harness.fixture_prompt() * 3  # 72 tokens
        tails = [[10 + i, 20 + i, 30 + i, 40 + i] for i in range(4)]
        cached = harness.Server("--prefix_cache_block", "16")
        plain = harness.Server("--prefix_cache_mb", "0")
        try:
            results = []
            for tail in tails:
                _, tokens, finish, _ = harness.collect(cached.stub().Generate(harness.greedy_request(shared + tail, n=12)))
                _, expected, _, _ = harness.collect(plain.stub().Generate(harness.greedy_request(shared + tail, n=12)))
                self.assertEqual(tokens, expected)
                results.append(finish.cached_prompt_tokens)
            # The first prompt leaves its end in the cache; the second leaves that sequence
            # after the shared 72 tokens and snapshots there (a block boundary alone would
            # give 64: 4 blocks of 16); the rest restore them.
            self.assertEqual(results, [0, 0, 72, 72])
            self.assertEqual(cached.metric("seqboat_prefix_cache_hits_total"), 2)
            self.assertEqual(cached.metric("seqboat_prefix_cache_hit_tokens_total"), 144)
            # The shared 64 tokens, and the state each request ended with.
            self.assertEqual(cached.metric("seqboat_prefix_cache_entries"), 5)
            self.assertEqual(plain.metric("seqboat_prefix_cache_hits_total"), 0)
        finally:
            cached.stop()
            plain.stop()

    def test_an_exact_repeat_runs_no_prompt_token_and_stays_exact(self):
        prompt = harness.fixture_prompt() * 2
        cached = harness.Server()
        plain = harness.Server("--prefix_cache_mb", "0")
        try:
            # The first request feeds only its prompt (one token out): its end is the prompt.
            harness.collect(cached.stub().Generate(harness.greedy_request(prompt, n=1)))
            before = cached.metric("seqboat_model_tokens_total")
            _, tokens, finish, _ = harness.collect(cached.stub().Generate(harness.greedy_request(prompt, n=6)))
            _, expected, _, _ = harness.collect(plain.stub().Generate(harness.greedy_request(prompt, n=6)))
            self.assertEqual(tokens, expected)
            self.assertEqual(finish.cached_prompt_tokens, len(prompt))
            self.assertEqual(cached.metric("seqboat_prefix_cache_full_hits_total"), 1)
            # Only the 5 decode steps after the first token ran the model.
            self.assertEqual(cached.metric("seqboat_model_tokens_total") - before, 5)
        finally:
            cached.stop()
            plain.stop()

    def test_a_conversation_runs_only_each_turns_new_tokens_and_stays_exact(self):
        # Each turn's prompt is the previous prompt, its answer and new tokens; greedy and
        # seeded turns equal those of a server without the cache, token for token.
        cached = harness.Server()
        plain = harness.Server("--prefix_cache_mb", "0")
        try:
            for temperature in (0.0, 1.0):
                history = harness.fixture_prompt()[:10]
                for turn in range(8):
                    request = harness.greedy_request(history, n=10)
                    request.sampling.temperature = temperature
                    request.sampling.seed = 40 + turn
                    _, tokens, finish, _ = harness.collect(cached.stub().Generate(request))
                    _, expected, _, _ = harness.collect(plain.stub().Generate(request))
                    self.assertEqual(tokens, expected, "turn %d, temperature %g" % (turn, temperature))
                    if turn > 0:
                        # All but the 3 new tokens and the answer's last (it was never fed).
                        self.assertEqual(finish.cached_prompt_tokens, len(history) - 4, "turn %d" % turn)
                    history = history + tokens + [60 + turn, 61 + turn, 62 + turn]
        finally:
            cached.stop()
            plain.stop()


class WeightDTypeTest(unittest.TestCase):
    def test_the_dtypes_in_use_are_named_in_model_info_and_metrics(self):
        state_bytes = {}
        for flags, weights, fifo in (((), "f32", "f32"), (("--weight_dtype", "bf16"), "bf16", "f32"),
                                     (("--weight_dtype", "int8"), "int8", "f32"),
                                     (("--weight_dtype", "int8", "--fifo_dtype", "bf16"), "int8", "bf16")):
            server = harness.Server(*flags)
            try:
                info = server.stub().GetModelInfo(pb.GetModelInfoRequest())
                self.assertEqual((info.backend, info.weight_dtype, info.fifo_dtype), ("cpu", weights, fifo))
                state_bytes[fifo] = info.state_bytes_per_sequence
                fifo_elements = info.layers * info.window * (info.z_dim + info.hidden_dim)
                labels = 'backend="cpu",fifo_dtype="%s",weight_dtype="%s"' % (fifo, weights)
                self.assertEqual(server.metric("seqboat_backend_info", labels), 1)
                _, tokens, _, _ = harness.collect(server.stub().Generate(harness.greedy_request(harness.fixture_prompt(), n=8)))
                self.assertEqual(len(tokens), 8)
            finally:
                server.stop()
        # A bf16 FIFO takes 2 bytes a key or value element instead of 4.
        self.assertEqual(state_bytes["f32"] - state_bytes["bf16"], 2 * fifo_elements)


class StateMemoryBudgetTest(unittest.TestCase):
    def test_request_slots_fit_and_the_prefix_cache_gets_the_rest(self):
        probe = harness.Server("--prefix_cache_mb", "0")
        try:
            per_sequence = probe.stub().GetModelInfo(pb.GetModelInfoRequest()).state_bytes_per_sequence
            self.assertEqual(probe.metric("seqboat_state_memory_budget_bytes"), 0)
        finally:
            probe.stop()
        self.assertGreater(per_sequence, 0)
        # A budget of 1 MiB over 2 request slots leaves the prefix cache what remains, well under
        # its own 256 MiB.
        budget = 1 << 20
        server = harness.Server("--max_batch", "2", "--state_memory_mb", "1", "--prefix_cache_mb", "256")
        try:
            cache_slots = min((budget - 2 * per_sequence) // per_sequence, 4096)
            self.assertEqual(server.metric("seqboat_state_memory_budget_bytes"), budget)
            self.assertEqual(server.metric("seqboat_state_slots"), 2)
            self.assertEqual(server.metric("seqboat_state_bytes"), per_sequence * (2 + cache_slots))
            self.assertLessEqual(server.metric("seqboat_state_bytes"), budget)
            _, tokens, _, _ = harness.collect(server.stub().Generate(harness.greedy_request(harness.fixture_prompt(), n=8)))
            self.assertEqual(len(tokens), 8)
        finally:
            self.assertEqual(server.stop(), 0)


class BackendErrorTest(unittest.TestCase):
    def test_a_failed_forward_ends_its_requests_with_internal_and_serving_goes_on(self):
        # The 10th forward call fails as a device error would (--debug_fail_forward).
        server = harness.Server("--debug_fail_forward", "10")
        try:
            stub = server.stub()
            prompt = harness.fixture_prompt()
            messages = []
            with self.assertRaises(grpc.RpcError) as ctx:
                for message in stub.Generate(harness.greedy_request(prompt, n=40)):
                    messages.append(message)
            self.assertEqual(ctx.exception.code(), grpc.StatusCode.INTERNAL)
            self.assertIn("injected fault in Forward call 10", ctx.exception.details())
            self.assertTrue(messages and messages[-1].HasField("finish"), "a final message comes first")
            self.assertEqual(messages[-1].finish.reason, pb.FINISH_REASON_ERROR)
            self.assertLess(messages[-1].finish.generated_tokens, 40)
            # The server keeps serving, exactly.
            _, tokens, finish, _ = harness.collect(stub.Generate(harness.greedy_request(prompt, n=20)))
            logits = harness.eval_logits(prompt + tokens)
            self.assertEqual(tokens, [greedy_from_logits(logits[len(prompt) - 1 + i]) for i in range(20)])
            health = harness.health_pb2_grpc.HealthStub(server.channel())
            self.assertEqual(health.Check(harness.health_pb2.HealthCheckRequest()).status,
                             harness.health_pb2.HealthCheckResponse.SERVING)
            self.assertEqual(server.metric("seqboat_backend_errors_total"), 1)
            self.assertEqual(server.metric("seqboat_backend_usable"), 1)
            self.assertEqual(server.metric("seqboat_requests_total", 'api="grpc",code="INTERNAL"'), 1)
            self.assertEqual(server.metric("seqboat_requests_total", 'api="grpc",code="OK"'), 1)
            # The gauges follow within the health watchdog's period (100 ms).
            end = time.time() + 5
            while server.metric("seqboat_state_slots_in_use") != 0 and time.time() < end:
                time.sleep(0.05)
            self.assertEqual(server.metric("seqboat_state_slots_in_use"), 0)
        finally:
            self.assertEqual(server.stop(), 0)
        self.assertIn("backend error, 1 requests end with INTERNAL: injected fault", server.stderr())

    def test_a_lost_backend_turns_health_not_serving_and_refuses_requests(self):
        # From the 5th forward call on, every call fails and the backend reports itself
        # unusable, as after a lost GPU (--debug_fail_sticky).
        server = harness.Server("--debug_fail_forward", "5", "--debug_fail_sticky")
        try:
            stub = server.stub()
            prompt = harness.fixture_prompt()
            with self.assertRaises(grpc.RpcError) as ctx:
                harness.collect(stub.Generate(harness.greedy_request(prompt, n=40)))
            self.assertEqual(ctx.exception.code(), grpc.StatusCode.INTERNAL)
            self.assertIn("injected fault in Forward call 5", ctx.exception.details())
            # Health follows within the watchdog's period (100 ms), so that orchestrators
            # (Kubernetes' gRPC liveness probe) restart the server.
            health = harness.health_pb2_grpc.HealthStub(server.channel())
            not_serving = harness.health_pb2.HealthCheckResponse.NOT_SERVING
            end = time.time() + 5
            while health.Check(harness.health_pb2.HealthCheckRequest()).status != not_serving and time.time() < end:
                time.sleep(0.05)
            self.assertEqual(health.Check(harness.health_pb2.HealthCheckRequest()).status, not_serving)
            with self.assertRaises(grpc.RpcError) as ctx:
                harness.collect(stub.Generate(harness.greedy_request(prompt, n=4)))
            self.assertEqual(ctx.exception.code(), grpc.StatusCode.UNAVAILABLE)
            self.assertIn("the backend is unusable", ctx.exception.details())
            self.assertIn("must be restarted", ctx.exception.details())
            self.assertEqual(server.metric("seqboat_backend_usable"), 0)
            self.assertEqual(server.metric("seqboat_engine_serving"), 0)
            self.assertEqual(server.metric("seqboat_requests_total", 'api="grpc",code="INTERNAL"'), 1)
        finally:
            self.assertEqual(server.stop(), 0)
        self.assertIn("the backend is unusable (injected device loss at Forward call 5", server.stderr())
        self.assertIn("backend unusable: NOT_SERVING", server.stderr())



if __name__ == "__main__":
    unittest.main()
