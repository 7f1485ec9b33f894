"""The OpenAI-compatible HTTP API: a hand-written SSE client on python3-requests, curl, and raw
sockets against real seqboat-server processes. Scoring is checked against the PyTorch
reference's logits, generation against gRPC's, and every refusal by its status and field."""
import json
import math
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

import numpy as np
import requests

import harness
from harness import pb


def sse_events(response):
    """The `data:` payloads of a server-sent event stream, parsed ([DONE] as the string)."""
    events = []
    for raw in response.iter_lines():
        if not raw:
            continue
        line = raw.decode("utf-8")  # SSE is UTF-8
        assert line.startswith("data: "), line
        payload = line[len("data: "):]
        events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def assemble(events):
    """Per choice index: (text, [finish reasons], [logprob tokens]) from completion chunks."""
    out = {}
    for e in events:
        if e == "[DONE]":
            continue
        for c in e["choices"]:
            text, finishes, tokens = out.setdefault(c["index"], ["", [], []])
            out[c["index"]][0] = text + c.get("text", c.get("delta", {}).get("content") or "")
            if c["finish_reason"] is not None:
                finishes.append(c["finish_reason"])
            if c.get("logprobs") and "tokens" in c["logprobs"]:
                tokens.extend(c["logprobs"]["tokens"])
    return out


def log_softmax(row):
    row = np.asarray(row, dtype=np.float64)
    m = row.max()
    return row - m - math.log(np.exp(row - m).sum())


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class HttpApiTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = harness.Server("--max_new_tokens_limit", "256")
        cls.base = cls.server.http_base
        cls.prompt = harness.fixture_prompt()

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def post(self, path, body, **kw):
        return requests.post(self.base + path, json=body, timeout=60, **kw)

    def completion(self, **body):
        r = self.post("/v1/completions", body)
        self.assertEqual(r.status_code, 200, r.text)
        return r.json()

    def test_health_and_models(self):
        r = requests.get(self.base + "/health", timeout=10)
        self.assertEqual(r.status_code, 200)
        models = requests.get(self.base + "/v1/models", timeout=10).json()
        self.assertEqual(models["object"], "list")
        self.assertEqual([m["id"] for m in models["data"]], ["model"])  # model.safetensors
        one = requests.get(self.base + "/v1/models/model", timeout=10)
        self.assertEqual(one.status_code, 200)
        self.assertEqual(one.json(), models["data"][0])
        other = requests.get(self.base + "/v1/models/gpt-4", timeout=10)
        self.assertEqual(other.status_code, 404)
        self.assertEqual(other.json()["error"]["param"], "model")

    def test_greedy_over_http_equals_grpc(self):
        stub = self.server.stub()
        _, grpc_tokens, _, messages = harness.collect(stub.Generate(harness.greedy_request(self.prompt, n=40)))
        grpc_texts = [m.text for m in messages]
        body = self.completion(prompt=self.prompt, max_tokens=40, temperature=0, ignore_eos=True, logprobs=0,
                               return_tokens_as_token_ids=True)
        choice = body["choices"][0]
        self.assertEqual(choice["text"], "".join(grpc_texts))
        self.assertEqual(choice["finish_reason"], "length")
        self.assertEqual(body["usage"]["completion_tokens"], 40)
        self.assertEqual(body["usage"]["prompt_tokens"], len(self.prompt))
        # Token by token (vLLM's return_tokens_as_token_ids names each as "token_id:N").
        self.assertEqual(choice["logprobs"]["tokens"], ["token_id:%d" % t for t in grpc_tokens])
        streamed = sse_events(self.post("/v1/completions", dict(prompt=self.prompt, max_tokens=40, temperature=0,
                                                                ignore_eos=True, logprobs=0, stream=True,
                                                                return_tokens_as_token_ids=True), stream=True))
        self.assertEqual(assemble(streamed)[0][2], choice["logprobs"]["tokens"])

    def test_routing_over_http_equals_grpc(self):
        stub = self.server.stub()
        for routing in ({"activation_bias": 2.5}, {"layer_activation_bias": [-2.0, 0.0, 2.0]}):
            r = harness.greedy_request(self.prompt, n=30)
            if "activation_bias" in routing:
                r.routing.activation_bias = routing["activation_bias"]
            else:
                r.routing.layer_activation_bias.extend(routing["layer_activation_bias"])
            _, grpc_tokens, _, _ = harness.collect(stub.Generate(r))
            body = self.completion(prompt=self.prompt, max_tokens=30, temperature=0, ignore_eos=True, logprobs=0,
                                   return_tokens_as_token_ids=True, routing=routing)
            self.assertEqual(body["choices"][0]["logprobs"]["tokens"], ["token_id:%d" % t for t in grpc_tokens])

    def test_activations_over_http_equal_grpc(self):
        """return_activations: per token the layers that ran attention, as gRPC reports them, at
        offsets into the choice's text; whole and streamed alike, under a routing bias too."""
        stub = self.server.stub()
        for bias in (0.0, -1.5, 1.0):
            r = pb.GenerateRequest(return_activations=True)
            r.tokens.ids.extend(self.prompt)
            r.sampling.temperature = 1.0
            r.sampling.seed = 99
            r.stopping.max_new_tokens = 40
            r.stopping.ignore_eos = True
            r.routing.activation_bias = bias
            _, grpc_tokens, _, messages = harness.collect(stub.Generate(r))
            grpc_layers = [[int(on) for on in a.layers] for m in messages for a in m.activations]
            self.assertEqual(len(grpc_layers), len(grpc_tokens))
            body = dict(prompt=self.prompt, max_tokens=40, temperature=1.0, seed=99, ignore_eos=True,
                        return_activations=True, routing={"activation_bias": bias})
            whole = self.completion(**body)["choices"][0]
            self.assertEqual(whole["activations"]["layers"], grpc_layers, bias)
            offsets = whole["activations"]["text_offset"]
            self.assertEqual(offsets, sorted(offsets))
            self.assertEqual(offsets[0], 0)
            self.assertLessEqual(offsets[-1], len(whole["text"]))
            events = sse_events(self.post("/v1/completions", dict(body, stream=True), stream=True))
            streamed_layers, streamed_offsets = [], []
            for e in events[:-1]:
                for c in e["choices"]:
                    if "activations" in c:
                        streamed_layers.extend(c["activations"]["layers"])
                        streamed_offsets.extend(c["activations"]["text_offset"])
            self.assertEqual(streamed_layers, grpc_layers, bias)
            self.assertEqual(streamed_offsets, offsets, bias)
        # Chat too; without the field, none.
        chat = self.post("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}],
                                                  "max_tokens": 5, "ignore_eos": True,
                                                  "return_activations": True}).json()
        layers = chat["choices"][0]["activations"]["layers"]
        self.assertEqual(len(layers), 5)
        self.assertTrue(all(len(row) == 3 and set(row) <= {0, 1} for row in layers))
        plain = self.completion(prompt=self.prompt, max_tokens=3)
        self.assertNotIn("activations", plain["choices"][0])

    def test_model_info_is_get_model_info_as_json(self):
        from google.protobuf import json_format
        expected = json_format.MessageToDict(self.server.stub().GetModelInfo(pb.GetModelInfoRequest()),
                                             preserving_proto_field_name=True,
                                             including_default_value_fields=True)
        r = requests.get(self.base + "/model_info", timeout=10)
        self.assertEqual(r.status_code, 200, r.text)
        self.assertEqual(r.headers["Content-Type"], "application/json")
        self.assertEqual(r.json(), expected)
        self.assertEqual(r.json()["layers"], 3)

    def test_the_playground_is_served_from_the_binary_with_a_closed_policy(self):
        page = requests.get(self.base + "/", timeout=10)
        self.assertEqual(page.status_code, 200)
        self.assertTrue(page.headers["Content-Type"].startswith("text/html"))
        self.assertIn('<script src="/playground.js"', page.text)
        policy = page.headers["Content-Security-Policy"]
        self.assertIn("default-src 'none'", policy)
        self.assertIn("connect-src 'self'", policy)
        self.assertNotRegex(page.text, r"(src|href)=\"(https?:)?//", "the page names no other origin")
        for path, kind in (("/playground.js", "text/javascript"), ("/playground.css", "text/css")):
            r = requests.get(self.base + path, timeout=10)
            self.assertEqual(r.status_code, 200, path)
            self.assertTrue(r.headers["Content-Type"].startswith(kind), r.headers["Content-Type"])
            self.assertGreater(len(r.text), 1000)
            self.assertNotIn("https://", r.text, path)
        self.assertEqual(requests.get(self.base + "/playground.html", timeout=10).status_code, 404)
        self.assertEqual(requests.post(self.base + "/", json={}, timeout=10).status_code, 405)

    def test_seeded_sampling_over_http_equals_grpc(self):
        r = pb.GenerateRequest()
        r.tokens.ids.extend(self.prompt)
        r.sampling.temperature = 1.2
        r.sampling.top_k = 40
        r.sampling.seed = 1234
        r.stopping.max_new_tokens = 30
        r.stopping.ignore_eos = True
        grpc_text, _, _, _ = harness.collect(self.server.stub().Generate(r))
        body = self.completion(prompt=self.prompt, max_tokens=30, temperature=1.2, top_k=40, seed=1234,
                               ignore_eos=True)
        self.assertEqual(body["choices"][0]["text"], grpc_text)

    def test_echo_scoring_equals_the_reference_log_softmax(self):
        fixture = os.path.join(harness.FIXTURES, "enwik8_tiny")
        tokens = [int(t) for t in np.load(os.path.join(fixture, "seq0.tokens.npy"))]
        logits = np.load(os.path.join(fixture, "seq0.exact.logits.npy"))  # the PyTorch reference
        self.assertEqual(logits.shape[0], len(tokens))
        for cache in ("missed", "hit"):
            if cache == "hit":
                # Plain requests put the prompt's prefix in the cache (a block boundary seen
                # twice is snapshotted) and then hit it.
                hit = 0
                for _ in range(3):
                    hit = self.completion(prompt=tokens, max_tokens=1)["usage"]["prompt_tokens_details"]["cached_tokens"]
                self.assertGreater(hit, 0)
            body = self.completion(prompt=tokens, echo=True, logprobs=2, max_tokens=0)
            lp = body["choices"][0]["logprobs"]
            self.assertEqual(len(lp["tokens"]), len(tokens))
            self.assertIsNone(lp["token_logprobs"][0])
            self.assertIsNone(lp["top_logprobs"][0])
            for p in range(1, len(tokens)):
                expected = log_softmax(logits[p - 1])
                self.assertAlmostEqual(lp["token_logprobs"][p], expected[tokens[p]], delta=1e-4, msg="token %d" % p)
                best = sorted(lp["top_logprobs"][p].values(), reverse=True)
                self.assertEqual(len(best), 2)
                self.assertAlmostEqual(best[0], np.sort(expected)[-1], delta=1e-4)
            self.assertEqual(body["usage"]["completion_tokens"], 0)
            self.assertEqual(body["choices"][0]["finish_reason"], "length")
            # A scored prompt needs every position's logits: it runs whole even when cached.
            self.assertEqual(body["usage"]["prompt_tokens_details"]["cached_tokens"], 0, cache)
            # vLLM's prompt_logprobs agree with the echoed ones.
            vllm = self.completion(prompt=tokens, prompt_logprobs=0, max_tokens=0, echo=True)
            scored = vllm["choices"][0]["prompt_logprobs"]
            self.assertIsNone(scored[0])
            for p in range(1, len(tokens)):
                self.assertAlmostEqual(scored[p][str(tokens[p])]["logprob"], lp["token_logprobs"][p], delta=1e-6)
        # The echoed text is the prompt's text, and the offsets walk it.
        text = self.post("/detokenize", {"tokens": tokens}).json()["prompt"]
        body = self.completion(prompt=tokens, echo=True, logprobs=0, max_tokens=3, temperature=0)
        self.assertTrue(body["choices"][0]["text"].startswith(text))
        offsets = body["choices"][0]["logprobs"]["text_offset"]
        self.assertEqual(offsets, sorted(offsets))
        self.assertEqual(len(offsets), len(tokens) + 3)

    def test_text_prompt_echo_scores_every_token_after_the_start_token(self):
        ids = self.post("/tokenize", {"prompt": "The boat sails"}).json()["tokens"]
        self.assertEqual(ids[0], 2)  # the start token
        body = self.completion(prompt="The boat sails", echo=True, logprobs=1, max_tokens=0)
        lp = body["choices"][0]["logprobs"]
        self.assertEqual(body["choices"][0]["text"], "The boat sails")
        self.assertEqual(len(lp["tokens"]), len(ids) - 1)
        by_ids = self.completion(prompt=ids, echo=True, logprobs=1, max_tokens=0)["choices"][0]["logprobs"]
        for a, b in zip(lp["token_logprobs"], by_ids["token_logprobs"][1:]):
            self.assertAlmostEqual(a, b, delta=1e-6)

    def test_stream_equals_the_whole_response_and_orders_its_events(self):
        request = dict(prompt=self.prompt, max_tokens=24, temperature=1.0, seed=99, n=2, logprobs=1,
                       ignore_eos=True)
        whole = self.completion(**request)
        r = self.post("/v1/completions", dict(request, stream=True, stream_options={"include_usage": True}),
                      stream=True)
        self.assertEqual(r.status_code, 200)
        self.assertTrue(r.headers["Content-Type"].startswith("text/event-stream"))
        events = sse_events(r)
        self.assertEqual(events[-1], "[DONE]")
        usage = events[-2]
        self.assertEqual(usage["choices"], [])
        self.assertEqual(usage["usage"]["completion_tokens"], 48)
        self.assertTrue(all(e["choices"] for e in events[:-2]))
        self.assertEqual(len({e["id"] for e in events[:-1]}), 1)
        streamed = assemble(events)
        self.assertEqual(sorted(streamed), [0, 1])
        for c in whole["choices"]:
            text, finishes, tokens = streamed[c["index"]]
            self.assertEqual(text, c["text"])
            self.assertEqual(finishes, ["length"])
            self.assertEqual(tokens, c["logprobs"]["tokens"])
        self.assertNotEqual(streamed[0][0], streamed[1][0])
        # Each choice draws as a lone request with its own seed (seed + index).
        lone = self.completion(prompt=self.prompt, max_tokens=24, temperature=1.0, seed=100, ignore_eos=True)
        self.assertEqual(lone["choices"][0]["text"], streamed[1][0])

    def test_several_prompts_in_one_request(self):
        texts = ["The boat ", "A river "]
        body = self.completion(prompt=texts, max_tokens=8, temperature=0, ignore_eos=True)
        self.assertEqual([c["index"] for c in body["choices"]], [0, 1])
        for text, c in zip(texts, body["choices"]):
            alone = self.completion(prompt=text, max_tokens=8, temperature=0, ignore_eos=True)
            self.assertEqual(c["text"], alone["choices"][0]["text"])
        batch = self.completion(prompt=[self.prompt, self.prompt[:10]], max_tokens=4, temperature=0, ignore_eos=True)
        self.assertEqual(batch["usage"]["prompt_tokens"], len(self.prompt) + 10)

    def test_stop_sequences_and_stop_token_ids(self):
        free = self.completion(prompt=self.prompt, max_tokens=40, temperature=0, ignore_eos=True, logprobs=0)
        text = free["choices"][0]["text"]
        stop = text[10:13]
        cut = self.completion(prompt=self.prompt, max_tokens=40, temperature=0, ignore_eos=True, stop=stop)
        self.assertEqual(cut["choices"][0]["text"], text[:text.index(stop)])
        self.assertEqual(cut["choices"][0]["finish_reason"], "stop")
        kept = self.completion(prompt=self.prompt, max_tokens=40, temperature=0, ignore_eos=True, stop=[stop],
                               include_stop_str_in_output=True)
        self.assertEqual(kept["choices"][0]["text"], text[:text.index(stop) + len(stop)])
        ids = [int(t.split(":")[1]) for t in self.completion(prompt=self.prompt, max_tokens=40, temperature=0,
                                                             ignore_eos=True, logprobs=0,
                                                             return_tokens_as_token_ids=True)
               ["choices"][0]["logprobs"]["tokens"]]
        by_id = self.completion(prompt=self.prompt, max_tokens=40, temperature=0, ignore_eos=True,
                                stop_token_ids=[ids[5]])
        self.assertEqual(by_id["choices"][0]["finish_reason"], "stop")
        # The stop token ends the choice; like end-of-sequence it is neither returned nor counted.
        self.assertEqual(by_id["usage"]["completion_tokens"], ids.index(ids[5]))

    def test_chat_renders_the_template_and_streams_role_content_finish(self):
        messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hello"}]
        rendered = "system: You are terse.\nuser: Hello\nassistant:"  # the documented default template
        chat = self.post("/v1/chat/completions", dict(messages=messages, max_tokens=12, temperature=0,
                                                     ignore_eos=True, logprobs=True, top_logprobs=2)).json()
        plain = self.completion(prompt=rendered, max_tokens=12, temperature=0, ignore_eos=True)
        self.assertEqual(chat["object"], "chat.completion")
        message = chat["choices"][0]["message"]
        self.assertEqual(message["role"], "assistant")
        self.assertEqual(message["content"], plain["choices"][0]["text"])
        self.assertEqual(chat["usage"]["prompt_tokens"], plain["usage"]["prompt_tokens"])
        content = chat["choices"][0]["logprobs"]["content"]
        self.assertEqual(len(content), 12)
        for entry in content:
            self.assertEqual(len(entry["top_logprobs"]), 2)
            self.assertGreaterEqual(entry["top_logprobs"][0]["logprob"], entry["logprob"] - 1e-6)
        r = self.post("/v1/chat/completions", dict(messages=messages, max_tokens=12, temperature=0,
                                                  ignore_eos=True, stream=True), stream=True)
        events = sse_events(r)
        self.assertEqual(events[-1], "[DONE]")
        deltas = [e["choices"][0] for e in events[:-1]]
        self.assertEqual(deltas[0]["delta"].get("role"), "assistant")
        self.assertEqual(deltas[-1]["delta"], {})
        self.assertEqual(deltas[-1]["finish_reason"], "length")
        self.assertTrue(all(d["finish_reason"] is None for d in deltas[:-1]))
        self.assertEqual("".join(d["delta"].get("content", "") for d in deltas), message["content"])
        self.assertTrue(all(e["object"] == "chat.completion.chunk" for e in events[:-1]))

    def test_curl_streams_to_done(self):
        out = subprocess.run(["curl", "-sS", "-N", "--fail-with-body", self.base + "/v1/completions",
                              "-H", "Content-Type: application/json",
                              "-d", json.dumps({"prompt": "The boat ", "max_tokens": 6, "stream": True,
                                                "temperature": 0, "ignore_eos": True})],
                             capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        lines = [l for l in out.stdout.split("\n\n") if l.strip()]
        self.assertEqual(lines[-1].strip(), "data: [DONE]")
        whole = self.completion(prompt="The boat ", max_tokens=6, temperature=0, ignore_eos=True)
        streamed = "".join(json.loads(l[len("data: "):])["choices"][0]["text"] for l in lines[:-1])
        self.assertEqual(streamed, whole["choices"][0]["text"])

    def test_every_bad_field_is_a_400_that_names_it_and_serving_goes_on(self):
        before = self.server.metric("seqboat_http_responses_total", 'status="400"') \
            if "seqboat_http_responses_total{status=\"400\"}" in self.server.metrics() else 0
        p = self.prompt
        cases = [
            ("/v1/completions", {"prompt": p, "max_tokens": "ten"}, "max_tokens"),
            ("/v1/completions", {"prompt": p, "max_tokens": -1}, "max_tokens"),
            ("/v1/completions", {"prompt": p, "max_tokens": 100000}, "max_tokens"),
            ("/v1/completions", {"prompt": p, "temperature": -1}, "temperature"),
            ("/v1/completions", {"prompt": p, "temperature": "hot"}, "temperature"),
            ("/v1/completions", {"prompt": p, "top_p": 2}, "top_p"),
            ("/v1/completions", {"prompt": p, "top_k": -5}, "top_k"),
            ("/v1/completions", {"prompt": p, "min_p": 1.5}, "min_p"),
            ("/v1/completions", {"prompt": p, "repetition_penalty": 0}, "repetition_penalty"),
            ("/v1/completions", {"prompt": p, "presence_penalty": 3}, "presence_penalty"),
            ("/v1/completions", {"prompt": p, "frequency_penalty": "x"}, "frequency_penalty"),
            ("/v1/completions", {"prompt": p, "n": 0}, "n"),
            ("/v1/completions", {"prompt": p, "logprobs": 21}, "logprobs"),
            ("/v1/completions", {"prompt": p, "stop": 5}, "stop"),
            ("/v1/completions", {"prompt": p, "stop_token_ids": ["a"]}, "stop_token_ids"),
            ("/v1/completions", {"prompt": p, "seed": "s"}, "seed"),
            ("/v1/completions", {"prompt": p, "stream": "yes"}, "stream"),
            ("/v1/completions", {"prompt": p, "stream_options": 3}, "stream_options"),
            ("/v1/completions", {"prompt": p, "logit_bias": {"x": 1}}, "logit_bias"),
            ("/v1/completions", {"prompt": p, "logit_bias": {"5": 500}}, "logit_bias"),
            ("/v1/completions", {"prompt": p, "routing": {"activation_bias": 1e9}}, "routing.activation_bias"),
            ("/v1/completions", {"prompt": p, "routing": {"layer_activation_bias": [1]}},
             "routing.layer_activation_bias"),
            ("/v1/completions", {"prompt": p, "routing": {"bias": 1}}, "routing.bias"),
            ("/v1/completions", {"prompt": {"text": "hi"}}, "prompt"),
            ("/v1/completions", {"prompt": [1, 2, 99999]}, "prompt"),
            ("/v1/completions", {"prompt": []}, "prompt"),
            ("/v1/completions", {"prompt": [[]]}, "prompt"),
            ("/v1/completions", {}, "prompt"),
            ("/v1/completions", {"prompt": p, "suffix": "x"}, "suffix"),
            ("/v1/completions", {"prompt": p, "best_of": 3}, "best_of"),
            ("/v1/completions", {"prompt": p, "echo": 1}, "echo"),
            ("/v1/completions", {"prompt": p, "max_tokens": 0}, "max_tokens"),
            ("/v1/completions", {"prompt": ["a"] * 40, "n": 3}, "prompt"),  # 120 choices > 72 streams
            ("/v1/chat/completions", {}, "messages"),
            ("/v1/chat/completions", {"messages": "hi"}, "messages"),
            ("/v1/chat/completions", {"messages": [{"role": "user"}]}, "messages"),
            ("/v1/chat/completions", {"messages": [{"role": "user", "content": 5}]}, "messages"),
            ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "top_logprobs": 30,
                                      "logprobs": True}, "top_logprobs"),
            ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "tools": []}, "tools"),
            ("/tokenize", {"prompt": 5}, "prompt"),
            ("/detokenize", {"tokens": [-1]}, "tokens"),
        ]
        for path, body, param in cases:
            r = self.post(path, body)
            self.assertEqual(r.status_code, 400, (path, body, r.text))
            error = r.json()["error"]
            self.assertEqual(error["type"], "invalid_request_error", body)
            self.assertEqual(error["param"], param, (body, error))
            self.assertTrue(error["message"].startswith(param), error)
        # Unknown fields are ignored; `user` is accepted.
        ok = self.post("/v1/completions", {"prompt": p, "max_tokens": 2, "user": "u", "frobnicate": {"a": 1}})
        self.assertEqual(ok.status_code, 200, ok.text)
        r = requests.post(self.base + "/v1/completions", data=b"{not json", timeout=10,
                          headers={"Content-Type": "application/json"})
        self.assertEqual(r.status_code, 400)
        self.assertIn("JSON", r.json()["error"]["message"])
        r = requests.post(self.base + "/v1/completions", data=b'{"prompt": "x"}', timeout=10,
                          headers={"Content-Type": "text/plain"})
        self.assertEqual(r.status_code, 415)
        self.assertIn("application/json", r.json()["error"]["message"])
        r = self.post("/v1/completions", {"prompt": p, "model": "gpt-4"})
        self.assertEqual(r.status_code, 404)
        self.assertEqual(r.json()["error"]["param"], "model")
        r = self.post("/v1/nothing", {})
        self.assertEqual(r.status_code, 404)
        r = requests.get(self.base + "/v1/completions", timeout=10)
        self.assertEqual(r.status_code, 405)
        self.assertEqual(r.headers["Allow"], "POST")
        after = self.server.metric("seqboat_http_responses_total", 'status="400"')
        self.assertEqual(after - before, len(cases) + 1)
        self.assertEqual(self.completion(prompt=p, max_tokens=3, ignore_eos=True)["usage"]["completion_tokens"], 3)

    def test_a_100_mb_body_is_refused_by_size_and_memory_stays_flat(self):
        rss_before = rss_kb(self.server.proc.pid)
        # Declared: refused on the headers, before a byte of the body is read.
        with socket.create_connection(("127.0.0.1", self.server.http_port), timeout=10) as s:
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 104857600\r\n\r\n")
            head = s.recv(65536).decode(errors="replace")
        self.assertTrue(head.startswith("HTTP/1.1 413"), head)
        # Chunked, with no length: read and dropped past the limit, then refused.
        chunk = b"%x\r\n%s\r\n" % (1 << 20, b" " * (1 << 20))
        with socket.create_connection(("127.0.0.1", self.server.http_port), timeout=30) as s:
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n")
            try:
                for _ in range(100):
                    s.sendall(chunk)
                s.sendall(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass
            head = s.recv(65536).decode(errors="replace")
        self.assertTrue(head.startswith("HTTP/1.1 413"), head)
        self.assertLess(rss_kb(self.server.proc.pid) - rss_before, 20 * 1024)
        self.assertEqual(self.completion(prompt=self.prompt, max_tokens=2, ignore_eos=True)["usage"]["completion_tokens"],
                         2)

    def test_metrics_count_http_requests_by_code_and_status(self):
        def value(name, labels):
            try:
                return self.server.metric(name, labels)
            except KeyError:
                return 0
        ok = value("seqboat_requests_total", 'api="http",code="OK"')
        ok200 = value("seqboat_http_responses_total", 'status="200"')
        self.completion(prompt=self.prompt, max_tokens=2)
        self.assertEqual(value("seqboat_requests_total", 'api="http",code="OK"') - ok, 1)
        self.assertEqual(value("seqboat_http_responses_total", 'status="200"') - ok200, 1)
        # The latency histograms count requests of both front-ends.
        ttft = value("seqboat_time_to_first_token_seconds_count", "")
        self.completion(prompt=self.prompt, max_tokens=2)
        self.assertEqual(value("seqboat_time_to_first_token_seconds_count", "") - ttft, 1)


class HttpServerLimitsTest(unittest.TestCase):
    """Keys, a full server, client aborts, slow readers and a drain, each on its own server."""

    def test_api_keys_guard_generation_but_not_health_or_models(self):
        with tempfile.TemporaryDirectory() as d:
            keys = os.path.join(d, "keys")
            with open(keys, "w") as f:
                f.write("alpha-key\n")
            server = harness.Server("--api_keys_file", keys)
            try:
                url = server.http_base + "/v1/completions"
                body = {"prompt": "hi", "max_tokens": 2}
                for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "alpha-key"}):
                    r = requests.post(url, json=body, headers=headers, timeout=10)
                    self.assertEqual(r.status_code, 401, headers)
                    self.assertEqual(r.headers["WWW-Authenticate"], "Bearer")
                    self.assertEqual(r.json()["error"]["type"], "authentication_error")
                r = requests.post(url, json=body, headers={"Authorization": "Bearer alpha-key"}, timeout=30)
                self.assertEqual(r.status_code, 200, r.text)
                self.assertEqual(requests.get(server.http_base + "/health", timeout=10).status_code, 200)
                self.assertEqual(requests.get(server.http_base + "/v1/models", timeout=10).status_code, 200)
                r = requests.post(server.http_base + "/tokenize", json={"prompt": "x"}, timeout=10)
                self.assertEqual(r.status_code, 401)
                self.assertEqual(requests.get(server.http_base + "/model_info", timeout=10).status_code, 401)
                r = requests.get(server.http_base + "/model_info", headers={"Authorization": "Bearer alpha-key"},
                                 timeout=10)
                self.assertEqual(r.status_code, 200)
                # The page itself holds no secret; its requests carry the key the user types.
                self.assertEqual(requests.get(server.http_base + "/", timeout=10).status_code, 200)
            finally:
                self.assertEqual(server.stop(), 0)

    def test_the_playground_is_on_by_default_only_on_loopback(self):
        for flags, served in ((["--playground", "off"], False),
                              (["--http_listen", "0.0.0.0:0"], False),
                              (["--http_listen", "0.0.0.0:0", "--playground", "on"], True)):
            server = harness.Server(*flags)
            try:
                r = requests.get(server.http_base + "/", timeout=10)
                self.assertEqual(r.status_code, 200 if served else 404, flags)
                if not served:
                    self.assertIn("--playground on", r.json()["error"]["message"])
                # The API is there either way.
                self.assertEqual(requests.get(server.http_base + "/health", timeout=10).status_code, 200)
            finally:
                self.assertEqual(server.stop(), 0)

    def test_a_backend_failure_is_a_500_or_an_error_event_and_serving_goes_on(self):
        # The 5th and the 30th forward calls fail as a device error would.
        server = harness.Server("--debug_fail_forward", "5")
        try:
            url = server.http_base + "/v1/completions"
            body = {"prompt": harness.fixture_prompt(), "max_tokens": 40, "temperature": 0, "ignore_eos": True}
            # Start-up made no forward call: calls 1-4 are this request's prefill and first steps.
            r = requests.post(url, json=body, timeout=30)
            self.assertEqual(r.status_code, 500, r.text)
            self.assertEqual(r.json()["error"]["type"], "internal_error")
            self.assertIn("injected fault in Forward call 5", r.json()["error"]["message"])
            # Serving goes on, and a stream that meets no fault ends normally.
            events = sse_events(requests.post(url, json=dict(body, stream=True), stream=True, timeout=30))
            self.assertEqual(events[-1], "[DONE]")
            self.assertEqual(assemble(events)[0][1], ["length"])
            self.assertEqual(server.metric("seqboat_requests_total", 'api="http",code="INTERNAL"'), 1)
            self.assertEqual(server.metric("seqboat_http_responses_total", 'status="500"'), 1)
        finally:
            self.assertEqual(server.stop(), 0)

    def test_a_backend_failure_mid_stream_is_an_error_event_that_ends_it(self):
        server = harness.Server("--debug_fail_forward", "10")
        try:
            body = {"prompt": harness.fixture_prompt(), "max_tokens": 40, "temperature": 0, "ignore_eos": True,
                    "stream": True}
            events = sse_events(requests.post(server.http_base + "/v1/completions", json=body, stream=True,
                                              timeout=30))
            # Text, then one error event, then [DONE] (as vLLM ends a stream that failed).
            self.assertEqual(events[-1], "[DONE]")
            error = events[-2]
            self.assertEqual(error["error"]["code"], 500, error)
            self.assertIn("injected fault in Forward call 10", error["error"]["message"])
            self.assertGreater(len(assemble(events[:-2])[0][0]), 0, "text came before the fault")
            self.assertFalse(any("error" in e for e in events[:-2]))
            self.assertEqual(server.metric("seqboat_requests_total", 'api="http",code="INTERNAL"'), 1)
        finally:
            self.assertEqual(server.stop(), 0)

    def test_tls_serves_https_with_the_grpc_certificate(self):
        with tempfile.TemporaryDirectory() as d:
            key, cert = harness.self_signed_cert(d)
            server = harness.Server("--tls_cert", cert, "--tls_key", key)
            try:
                base = "https://127.0.0.1:%d" % server.http_port
                r = requests.post(base + "/v1/completions", json={"prompt": "hi", "max_tokens": 3, "ignore_eos": True}, verify=cert,
                                  timeout=30)
                self.assertEqual(r.status_code, 200, r.text)
                self.assertEqual(r.json()["usage"]["completion_tokens"], 3)
                events = sse_events(requests.post(base + "/v1/completions", json={"prompt": "hi", "max_tokens": 3,
                                                                                  "stream": True},
                                                  verify=cert, stream=True, timeout=30))
                self.assertEqual(events[-1], "[DONE]")
                with self.assertRaises(requests.ConnectionError):  # plaintext is not served
                    requests.get("http://127.0.0.1:%d/health" % server.http_port, timeout=10)
            finally:
                self.assertEqual(server.stop(), 0)

    def test_full_server_429_then_an_abort_frees_the_slot(self):
        server = harness.Server("--max_batch", "1", "--max_waiting", "0", "--debug_step_delay_ms", "20",
                                "--max_new_tokens_limit", "4096")
        try:
            url = server.http_base + "/v1/completions"
            long_body = json.dumps({"prompt": "The boat ", "max_tokens": 4000, "ignore_eos": True,
                                    "stream": True}).encode()
            holder = socket.create_connection(("127.0.0.1", server.http_port), timeout=10)
            holder.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                           b"Content-Length: %d\r\n\r\n%s" % (len(long_body), long_body))
            received = b""
            while b"data: " not in received:
                received += holder.recv(4096)
            self.assertTrue(received.startswith(b"HTTP/1.1 200"), received)
            r = requests.post(url, json={"prompt": "x", "max_tokens": 2}, timeout=10)
            self.assertEqual(r.status_code, 429, r.text)
            self.assertEqual(r.headers["Retry-After"], "1")
            self.assertEqual(r.json()["error"]["type"], "rate_limit_error")
            # The client goes away mid-stream: its slot is free within an iteration or so.
            holder.close()
            gone = time.time()
            while True:
                r = requests.post(url, json={"prompt": "x", "max_tokens": 2}, timeout=10)
                if r.status_code == 200 or time.time() - gone > 5:
                    break
                time.sleep(0.02)
            self.assertEqual(r.status_code, 200, r.text)
            self.assertLess(time.time() - gone, 1.0)
            self.assertEqual(server.metric("seqboat_requests_total", 'api="http",code="CANCELLED"'), 1)
            # A whole (non-streamed) request whose client hangs up while it waits: freed too.
            s = socket.create_connection(("127.0.0.1", server.http_port))
            payload = json.dumps({"prompt": "The boat ", "max_tokens": 4000, "ignore_eos": True}).encode()
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload))
            time.sleep(0.3)
            s.close()
            gone = time.time()
            while time.time() - gone < 5:
                r = requests.post(url, json={"prompt": "x", "max_tokens": 2}, timeout=10)
                if r.status_code == 200:
                    break
                time.sleep(0.02)
            self.assertEqual(r.status_code, 200, r.text)
            # The request ends (and is counted) on the engine's thread, which may be after the
            # probe above was admitted (seen under AddressSanitizer): wait for the count.
            while (server.metric("seqboat_requests_total", 'api="http",code="CANCELLED"') < 2
                   and time.time() - gone < 10):
                time.sleep(0.02)
            self.assertEqual(server.metric("seqboat_requests_total", 'api="http",code="CANCELLED"'), 2)
        finally:
            self.assertEqual(server.stop(), 0)

    def test_a_reader_that_never_reads_is_ended_with_bounded_memory(self):
        server = harness.Server("--stream_buffer_kb", "64", "--stream_write_timeout_s", "3",
                                "--max_new_tokens_limit", "4096")

        def http_codes():
            out = {}
            for line in server.metrics().splitlines():
                if line.startswith('seqboat_requests_total{api="http",'):
                    out[line.split('code="')[1].split('"')[0]] = float(line.split()[-1])
            return out

        try:
            rss_before = rss_kb(server.proc.pid)
            socks = []
            payload = json.dumps({"prompt": "The boat ", "max_tokens": 4000, "ignore_eos": True, "stream": True,
                                  "logprobs": 20}).encode()
            for _ in range(8):
                s = socket.socket()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                s.connect(("127.0.0.1", server.http_port))
                s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload))
                socks.append(s)
            # Each stream is cut off once 64 KB wait for it (a 429 event it may never read), or
            # finishes into the kernel's buffers; a connection that then moves nothing for 3 s
            # is closed. Every one of the 8 is accounted for.
            deadline = time.time() + 90
            codes = {}
            while time.time() < deadline:
                codes = http_codes()
                if sum(codes.values()) == 8:
                    break
                time.sleep(0.2)
            self.assertEqual(sum(codes.values()), 8, codes)
            self.assertGreater(codes.get("RESOURCE_EXHAUSTED", 0), 0, codes)
            # A stream's code is counted when its response ends; the engine lets the request go
            # at its next step (seconds later under a sanitizer, with other builds on the cores).
            running_deadline = time.time() + 20
            while server.metric("seqboat_requests_running") != 0 and time.time() < running_deadline:
                time.sleep(0.1)
            self.assertEqual(server.metric("seqboat_requests_running"), 0)
            grown = rss_kb(server.proc.pid) - rss_before
            self.assertLess(grown, 40 * 1024)
            r = requests.post(server.http_base + "/v1/completions", json={"prompt": "x", "max_tokens": 2},
                              timeout=30)
            self.assertEqual(r.status_code, 200)
            for s in socks:
                s.close()
        finally:
            self.assertEqual(server.stop(), 0)

    def test_drain_refuses_new_requests_and_aborts_long_ones(self):
        server = harness.Server("--shutdown_grace_s", "2", "--debug_step_delay_ms", "5",
                                "--max_new_tokens_limit", "4096")
        url = server.http_base + "/v1/completions"
        results = {}

        def run(name, n):
            r = requests.post(url, json={"prompt": "The boat ", "max_tokens": n, "ignore_eos": True,
                                         "stream": True}, stream=True, timeout=30)
            results[name] = assemble(sse_events(r))[0]

        threads = [threading.Thread(target=run, args=(name, n)) for name, n in (("short", 100), ("long", 4000))]
        for t in threads:
            t.start()
        time.sleep(0.3)
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        try:
            r = requests.post(url, json={"prompt": "x", "max_tokens": 2}, timeout=5)
            self.assertEqual(r.status_code, 503, r.text)
            self.assertEqual(requests.get(server.http_base + "/health", timeout=5).status_code, 503)
        except requests.ConnectionError:
            pass  # already closed: refused either way
        for t in threads:
            t.join(10)
        self.assertEqual(results["short"][1], ["length"])
        self.assertEqual(results["long"][1], ["abort"])
        server.proc.wait(10)
        self.assertEqual(server.proc.returncode, 0, server.stderr())
        server.stop()

    def test_connection_flood_and_huge_headers_leave_it_serving(self):
        server = harness.Server("--http_max_connections", "64")
        try:
            rss_before = rss_kb(server.proc.pid)
            # More idle connections than the limit: the rest wait in the kernel's backlog.
            flood = [socket.create_connection(("127.0.0.1", server.http_port), timeout=2) for _ in range(100)]
            for s in flood:
                s.close()
            # A 1 MB header line: refused at the connection's memory limit, never buffered whole.
            with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as s:
                try:
                    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n")
                    head = s.recv(65536)
                except (BrokenPipeError, ConnectionResetError):
                    head = b""
            self.assertFalse(head.startswith(b"HTTP/1.1 200"), head[:100])
            self.assertLess(rss_kb(server.proc.pid) - rss_before, 20 * 1024)
            deadline = time.time() + 10
            while True:
                try:
                    r = requests.post(server.http_base + "/v1/completions", json={"prompt": "x", "max_tokens": 2},
                                      timeout=5)
                    break
                except requests.ConnectionError:
                    if time.time() > deadline:
                        raise
                    time.sleep(0.1)
            self.assertEqual(r.status_code, 200)
        finally:
            self.assertEqual(server.stop(), 0)


if __name__ == "__main__":
    unittest.main()
