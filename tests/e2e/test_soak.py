"""Soak: 256 concurrent streams against --max_batch 64 for SEQBOAT_SOAK_S seconds (default 60).

Each of 256 worker threads loops: draw a client behaviour at random, make one Generate call,
classify its outcome, repeat. The behaviours: streams read to the end (greedy or seeded
sampling, 1..200 tokens), cancellations after some messages or a delay, 1-500 ms deadlines,
abrupt disconnects (a channel closed mid-stream, or a child process killed with SIGKILL) and
slow readers. Every outcome a behaviour does not allow is a failure. At the end: the server
never died and exits 0 on SIGTERM, its gauges return to 0, its RSS once the load has drained
is within 5% of its RSS at the warm-up's end, and its seqboat_requests_total counters agree
with what the clients saw.

Run by `ctest -L soak` (not part of -L e2e). SEQBOAT_SOAK_SEED repeats the random choices
(not the timing), SEQBOAT_SOAK_JSON=FILE also writes the summary as JSON."""
import collections
import heapq
import json
import os
import random
import select
import subprocess
import sys
import threading
import time
import traceback
import unittest

import harness
from harness import pb, pb_grpc, grpc

DURATION_S = float(os.environ.get("SEQBOAT_SOAK_S", "60"))
WARMUP_S = max(10.0, 0.2 * DURATION_S)
WORKERS = 256
MAX_BATCH = 64
# max_batch + max_waiting is the number of open streams the server admits: 512, twice the
# clients, leaves room for streams whose client has gone but whose end the server has not
# processed yet. A RESOURCE_EXHAUSTED at admission is then lost stream capacity, not the load.
MAX_WAITING = 448
# Cut calls (cancelled, closed, killed) ask for this many tokens, so that the server cannot
# have ended them OK before the cut reached it (the cross-check below relies on it); hence
# --max_new_tokens_limit. They are cut long before, so no request runs that long.
CUT_TOKENS = 1000000
# The prefix cache's slots are allocated untouched and become resident as entries fill them
# (each finished request leaves one). A small cache is full, and resident, well within the
# warm-up, so that RSS growth after it is not the cache filling up (the default 256 MiB holds
# 4096 entries of the tiny model: a minute of this load).
PREFIX_CACHE_MB = 4
CALL_TIMEOUT_S = 60  # every call that is not a deadline or slow call: far beyond any wait in this load
# A slow reader sleeps up to 50 ms after each of its up to 500 messages: 25 s of its own, on a
# machine whose cores the server and 256 client threads share. It gets that on top.
SLOW_MOST_TOKENS, SLOW_MOST_SLEEP_S = 500, 0.05
SLOW_TIMEOUT_S = CALL_TIMEOUT_S + SLOW_MOST_TOKENS * SLOW_MOST_SLEEP_S
MAX_CHILDREN = 4  # killed child processes alive at once
RSS_TOLERANCE = 0.05
GAUGES = ("seqboat_requests_running", "seqboat_requests_waiting", "seqboat_state_slots_in_use",
          "seqboat_streams_open")
CODES = ("OK", "CANCELLED", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "INVALID_ARGUMENT",
         "UNAVAILABLE", "INTERNAL", "UNAUTHENTICATED")
# Behaviours and their shares of the calls; "kill" falls back to "close" while MAX_CHILDREN
# children are alive. A slow reader holds its worker some 10 s (most of it after the server has
# written its whole answer), ten times a normal call: a small share keeps most workers' streams
# open at the server.
KINDS = (("normal", 40), ("deadline", 20), ("cancel", 18), ("close", 10), ("kill", 7), ("slow", 5))
PROMPTS = ("The ", "In 1887 the ", "<page>\n  <title>", "[[Category:", "== History ==\n",
           "Anarchism is ", "A", "soak ")
STOPS = ("e", " the", "\n")

# The child process of a "kill" call: its own connection, a long generation read as it comes;
# it says when the call is started and when the first message came. argv: address, the
# harness's stub directory, request id, max_new_tokens.
CHILD = r"""
import sys
sys.path.insert(0, sys.argv[2])
import grpc
from seqboat.v1 import seqboat_pb2 as pb, seqboat_pb2_grpc as pb_grpc
request = pb.GenerateRequest(text="killed ", request_id=sys.argv[3])
request.sampling.temperature = 1.0
request.stopping.max_new_tokens = int(sys.argv[4])
request.stopping.ignore_eos = True
call = pb_grpc.SeqBoatStub(grpc.insecure_channel(sys.argv[1])).Generate(request, timeout=60)
print("sent", flush=True)
try:
    for i, _ in enumerate(call):
        if i == 0:
            print("first", flush=True)
    print("end", flush=True)
except grpc.RpcError as e:
    print("error", e.code().name, flush=True)
"""


def scrape(server):
    """Every sample of /metrics: {'name{labels}': value}."""
    out = {}
    for line in server.metrics().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def server_codes(samples):
    return {c: samples.get('seqboat_requests_total{api="grpc",code="%s"}' % c, 0.0) for c in CODES}


class Call:
    """One call as its client saw it."""
    __slots__ = ("kind", "rid", "code", "messages", "tokens", "final", "reason", "t_start", "t_cut", "t_end",
                 "problems")

    def __init__(self, kind, rid):
        self.kind, self.rid = kind, rid
        self.code = None         # the status name the client got; KILLED for a killed child
        self.messages = 0
        self.tokens = 0
        self.final = None        # the FinishInfo of the final message while the call runs
        self.reason = None       # then only its reason, if it came
        self.t_start = time.monotonic()
        self.t_cut = None        # when the client cancelled, closed or killed
        self.t_end = None
        self.problems = []

    def problem(self, text):
        self.problems.append(text)

    def may_be_server_ok(self):
        """Whether the server may have ended this call OK although the client saw another end."""
        if self.code == "OK":
            return False
        if self.reason is not None and self.reason != pb.FINISH_REASON_DEADLINE:
            return True  # the request had ended; the cut or the deadline came after its last message
        if self.kind == "deadline":
            # Without the final DEADLINE message the server may have finished OK just before
            # the deadline, its status still on the way. With it, the server's status is not OK.
            return self.reason is None
        if self.kind in ("cancel", "close", "kill"):
            # A CUT_TOKENS generation cannot have ended before the cut unless the cut came
            # later than the fastest such generation (see min_cut_s).
            return self.t_cut is None or self.t_cut - self.t_start >= Soak.min_cut_s
        return False

    def certainly_reached_server(self):
        # A call that saw a message or a status only the server gives was counted there; a
        # call cancelled, closed, killed or past its deadline before any message may not be.
        return self.messages > 0 or self.code in ("OK", "RESOURCE_EXHAUSTED", "INVALID_ARGUMENT",
                                                  "INTERNAL", "UNAUTHENTICATED")


class Timer:
    """One thread that runs callbacks at given times: the delayed cancellations and closes."""

    def __init__(self):
        self.heap, self.seq, self.done = [], 0, False
        self.cv = threading.Condition()
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def after(self, delay, fn):
        with self.cv:
            heapq.heappush(self.heap, (time.monotonic() + delay, self.seq, fn))
            self.seq += 1
            self.cv.notify()

    def loop(self):
        while True:
            with self.cv:
                while not self.done and (not self.heap or self.heap[0][0] > time.monotonic()):
                    self.cv.wait(self.heap[0][0] - time.monotonic() if self.heap else None)
                if self.done:
                    return
                _, _, fn = heapq.heappop(self.heap)
            fn()

    def stop(self):
        with self.cv:
            self.done = True
            self.cv.notify()
        self.thread.join(5)


def read_child(proc, out, until, timeout):
    """`out`, what the child printed so far, with what it prints until the word `until` has
    come, the child ends, or timeout."""
    end = time.monotonic() + timeout
    while until.encode() not in out:
        if not select.select([proc.stdout], [], [], max(0.0, end - time.monotonic()))[0]:
            break
        chunk = os.read(proc.stdout.fileno(), 4096)
        if not chunk:
            break
        out += chunk
    return out


class Soak(unittest.TestCase):
    min_cut_s = None  # set from a lone generation's speed before the load

    def setUp(self):
        self.seed = int(os.environ.get("SEQBOAT_SOAK_SEED", str(random.SystemRandom().randrange(10**6))))
        print("soak: seed %d (SEQBOAT_SOAK_SEED=%d repeats the choices), %.0f s, warm-up %.0f s"
              % (self.seed, self.seed, DURATION_S, WARMUP_S), flush=True)
        self.lock = threading.Lock()
        self.calls = []
        self.stop = threading.Event()
        self.children = threading.BoundedSemaphore(MAX_CHILDREN)
        self.greedy = {}    # prompt -> the longest greedy continuation seen
        self.seeded = {}    # (prompt, parameters) -> tokens of a seeded sampled call
        self.repeats_checked = 0
        self.worker_errors = []
        self.monitor_problems = []
        self.rss = []       # (seconds since the load began, VmRSS kB)
        self.rss_drained = []  # the same, after the load, when every gauge is back to 0
        self.heap = []      # (seconds, seqboat_heap_in_use_bytes, seqboat_heap_free_bytes)
        self.gauge_max = collections.Counter()
        self.cache_entries = []  # (seconds, seqboat_prefix_cache_entries)
        self.streams_open = []   # seqboat_streams_open each second of the load

    def test_soak(self):
        server = harness.Server("--max_batch", str(MAX_BATCH), "--max_waiting", str(MAX_WAITING),
                                "--max_new_tokens_limit", str(CUT_TOKENS),
                                "--prefix_cache_mb", str(PREFIX_CACHE_MB))
        self.server = server
        problems = []
        summary = {}
        exit_code = None
        try:
            self.sanitized = harness.sanitized(server.proc.pid)
            self.measure_speed(server)
            before = scrape(server)
            summary = self.load(server, problems)
            after = scrape(server)
            self.check_gauges(server, problems, summary)
            self.check_counters(before, after, problems, summary)
            self.check_rss(problems, summary)
            summary["server_generated_tokens_per_s"] = round(
                (self.at_stop["seqboat_generated_tokens_total"] - before["seqboat_generated_tokens_total"])
                / summary["load_s"], 1)
        finally:
            exit_code = server.stop()
        summary["exit_code"] = exit_code
        if exit_code != 0:
            problems.append("seqboat-server exited with %s on SIGTERM; its stderr ends:\n%s"
                            % (exit_code, server.stderr()[-5000:]))
        summary["problems"] = problems
        self.report(summary)
        self.assertEqual(problems, [], "\n".join(problems))

    def measure_speed(self, server):
        # The fastest a request generates is alone (one sequence per iteration); half of that
        # rate bounds how soon a CUT_TOKENS generation could end.
        stub = server.stub()
        _, tokens, finish, _ = harness.collect(stub.Generate(harness.greedy_request(text="The ", n=4096),
                                                             timeout=CALL_TIMEOUT_S))
        self.assertEqual(len(tokens), 4096)
        self.greedy[("greedy", "The ")] = tokens  # alone; the soak's greedy calls run in batches
        per_token = (finish.total_seconds - finish.time_to_first_token_seconds) / 4095
        Soak.min_cut_s = 0.5 * per_token * CUT_TOKENS
        print("soak: a lone request generates a token every %.1f us; a cut generation cannot end "
              "OK within %.1f s" % (per_token * 1e6, Soak.min_cut_s), flush=True)

    # --- the load ---

    def load(self, server, problems):
        self.timer = Timer()
        # Eight connections for the workers (a local subchannel pool each: one TCP connection per
        # channel), 32 streams each; close calls and children open their own.
        self.channels = [grpc.insecure_channel(server.address, options=[("grpc.use_local_subchannel_pool", 1)])
                         for _ in range(8)]
        stubs = [pb_grpc.SeqBoatStub(c) for c in self.channels]
        self.t0 = time.monotonic()
        monitor_done = threading.Event()
        monitor = threading.Thread(target=self.monitor, args=(server, monitor_done), daemon=True)
        monitor.start()
        workers = [threading.Thread(target=self.worker, args=(i, stubs[i % len(stubs)]), daemon=True)
                   for i in range(WORKERS)]
        [w.start() for w in workers]
        while time.monotonic() - self.t0 < DURATION_S and server.proc.poll() is None:
            time.sleep(0.2)
        self.stop.set()
        t_stop = self.t_stop = time.monotonic()
        self.at_stop = scrape(server) if server.proc.poll() is None else {}
        # The longest call is bounded by SLOW_TIMEOUT_S; every worker ends after its current one.
        for w in workers:
            w.join(max(0.0, t_stop + SLOW_TIMEOUT_S + 15 - time.monotonic()))
        alive = sum(w.is_alive() for w in workers)
        if alive:
            problems.append("%d workers still in a call %d s after the load stopped"
                            % (alive, SLOW_TIMEOUT_S + 15))
        t_end = time.monotonic()
        monitor_done.set()
        monitor.join(10)
        self.timer.stop()
        for c in self.channels:
            c.close()
        problems.extend(self.monitor_problems)
        problems.extend(self.worker_errors[:10])
        if server.proc.poll() is not None:
            problems.append("seqboat-server died during the load (exit code %s)" % server.proc.returncode)
        bad = [c for c in self.calls if c.problems]
        by_kind = collections.Counter(c.kind for c in bad)
        if bad:
            problems.append("%d calls ended unexpectedly (%s); the first ones:\n  %s" % (
                len(bad), ", ".join("%s %d" % kv for kv in sorted(by_kind.items())),
                "\n  ".join("%s %s: %s" % (c.kind, c.rid, "; ".join(c.problems)) for c in bad[:20])))
        return {"seed": self.seed, "duration_s": DURATION_S, "load_s": round(t_stop - self.t0, 2),
                "drain_s": round(t_end - t_stop, 2), "workers": WORKERS, "max_batch": MAX_BATCH,
                "max_waiting": MAX_WAITING, "min_cut_s": round(Soak.min_cut_s, 2)}

    def monitor(self, server, done):
        # Every second: the process is alive, its RSS, the gauges (the engine serving, at most
        # max_batch requests in slots).
        while not done.wait(1.0):
            t = time.monotonic() - self.t0
            if server.proc.poll() is not None:
                self.monitor_problems.append("seqboat-server had ended at t=%.0f s (exit code %s)"
                                             % (t, server.proc.returncode))
                self.stop.set()
                return
            try:
                kb = harness.memory_kb(server.proc.pid)[0]
                self.rss.append((t, kb))
                samples = scrape(server)
                self.sample(t, samples)
                if t > DURATION_S and all(samples[g] == 0 for g in GAUGES):
                    self.rss_drained.append((t, kb))
            except Exception as e:  # a scrape that fails under load is a finding too
                self.monitor_problems.append("t=%.0f s: /metrics or /proc failed: %r" % (t, e))

    def sample(self, t, samples):
        for g in GAUGES:
            self.gauge_max[g] = max(self.gauge_max[g], samples[g])
        self.cache_entries.append((t, samples["seqboat_prefix_cache_entries"]))
        self.heap.append((t, samples["seqboat_heap_in_use_bytes"], samples["seqboat_heap_free_bytes"]))
        if t <= DURATION_S:
            self.streams_open.append(samples["seqboat_streams_open"])
        if samples["seqboat_engine_serving"] != 1:
            self.monitor_problems.append("t=%.0f s: seqboat_engine_serving is %s"
                                         % (t, samples["seqboat_engine_serving"]))
        for g in ("seqboat_requests_running", "seqboat_state_slots_in_use"):
            if samples[g] > MAX_BATCH:
                self.monitor_problems.append("t=%.0f s: %s is %s > --max_batch %d" % (t, g, samples[g], MAX_BATCH))
        if len(self.rss) % 10 == 0:  # progress, for the long runs
            print("soak: t=%3.0f s  calls %6d  RSS %.1f MB  heap %.1f+%.1f MB  running %d  waiting %d  "
                  "streams open %d" % (
                t, len(self.calls), self.rss[-1][1] / 1024, self.heap[-1][1] / 2**20, self.heap[-1][2] / 2**20,
                samples["seqboat_requests_running"],
                samples["seqboat_requests_waiting"], samples["seqboat_streams_open"]), flush=True)

    def worker(self, i, stub):
        rng = random.Random(self.seed * 1000 + i)
        names, weights = zip(*KINDS)
        n = 0
        while not self.stop.is_set():
            kind = rng.choices(names, weights)[0]
            if kind == "kill" and not self.children.acquire(blocking=False):
                kind = "close"
            call = Call(kind, "soak-%d-%d" % (i, n))
            n += 1
            try:
                getattr(self, "run_" + kind)(rng, stub, call)
            except Exception:  # a bug in this test, or an answer it cannot read
                with self.lock:
                    self.worker_errors.append("worker %d, %s call: %s" % (i, kind, traceback.format_exc()))
                call.problem("the client raised (see the worker errors)")
            finally:
                if kind == "kill":
                    self.children.release()
            call.reason, call.final = (call.final.reason if call.final is not None else None), None
            call.t_end = time.monotonic()
            with self.lock:
                self.calls.append(call)

    def request(self, call, n, prompt=None, temperature=1.0, seed=None, ignore_eos=True, stop=(),
                logprobs=0):
        r = pb.GenerateRequest(text=prompt or "soak ", request_id=call.rid, logprobs=logprobs)
        r.sampling.temperature = temperature
        if seed is not None:
            r.sampling.seed = seed
        r.stopping.max_new_tokens = n
        r.stopping.ignore_eos = ignore_eos
        r.stopping.stop.extend(stop)
        return r

    def read(self, call, stream, each=None, keep=None):
        """Reads a Generate call to its end into `call`; each(message) may cut it, sleep, ..."""
        try:
            for m in stream:
                call.messages += 1
                if m.request_id != call.rid:
                    call.problem("a message of request %r in this stream" % m.request_id)
                if call.final is not None:
                    call.problem("a message after the final one")
                call.tokens += len(m.token_ids)
                if keep is not None:
                    keep.extend(m.token_ids)
                if m.HasField("finish"):
                    call.final = m.finish
                if each is not None:
                    each(m)
            call.code = "OK"
        except grpc.RpcError as e:
            call.code = e.code().name

    def expect(self, call, *codes):
        if call.code not in codes:
            call.problem("status %s (expected %s) after %d messages, final %s" % (
                call.code, " or ".join(codes), call.messages,
                pb.FinishReason.Name(call.final.reason) if call.final is not None else "none"))

    def check_end(self, call, n, ignore_eos, stop=()):
        """A call that ended OK: one final message, last, with a reason its request allows."""
        f = call.final
        if f is None:
            return call.problem("OK without a final message")
        if f.reason == pb.FINISH_REASON_LENGTH:
            if f.generated_tokens != n or (not stop and call.tokens != n):
                call.problem("LENGTH after %d tokens sent, %d generated; asked %d"
                             % (call.tokens, f.generated_tokens, n))
        elif f.reason == pb.FINISH_REASON_EOS:
            if ignore_eos or call.tokens >= n:
                call.problem("EOS after %d of %d tokens, ignore_eos %s" % (call.tokens, n, ignore_eos))
        elif f.reason == pb.FINISH_REASON_STOP_SEQUENCE:
            if f.stop_sequence not in stop:
                call.problem("STOP_SEQUENCE %r; asked %r" % (f.stop_sequence, stop))
        else:
            call.problem("OK with finish reason %s" % pb.FinishReason.Name(f.reason))

    # --- the behaviours ---

    def run_normal(self, rng, stub, call):
        prompt, n = rng.choice(PROMPTS), rng.randint(1, 200)
        tokens = []
        if rng.random() < 0.3:
            # Greedy: one continuation per prompt whatever the length, alone or in any batch.
            self.read(call, stub.Generate(self.request(call, n, prompt, temperature=0.0),
                                          timeout=CALL_TIMEOUT_S), keep=tokens)
            self.expect(call, "OK")
            if call.code == "OK":
                self.check_end(call, n, True)
                self.check_repeat(call, ("greedy", prompt), tokens, prefix=True)
            return
        # Seeded sampling from few seeds and lengths, so that equal requests recur: the same
        # seed, prompt and parameters must give the same tokens in any batch. Some unseeded.
        n = rng.choice((1, 2, 7, 16, 33, 64, 128, 200))
        seed = rng.randint(1, 4) if rng.random() < 0.8 else None
        temperature, ignore_eos = rng.choice((0.7, 1.0)), rng.random() < 0.5
        stop = (rng.choice(STOPS),) if rng.random() < 0.2 else ()
        self.read(call, stub.Generate(self.request(call, n, prompt, temperature, seed, ignore_eos, stop),
                                      timeout=CALL_TIMEOUT_S), keep=tokens)
        self.expect(call, "OK")
        if call.code == "OK":
            self.check_end(call, n, ignore_eos, stop)
            if seed is not None and call.final is not None and call.final.seed != seed:
                call.problem("finish.seed %d; asked %d" % (call.final.seed, seed))
            if seed is not None:
                self.check_repeat(call, (prompt, n, seed, temperature, ignore_eos, stop), tokens, prefix=False)

    def check_repeat(self, call, key, tokens, prefix):
        with self.lock:
            old = (self.greedy if prefix else self.seeded).get(key)
            if old is None:
                (self.greedy if prefix else self.seeded)[key] = tokens
                return
            self.repeats_checked += 1
            if prefix:
                k = min(len(old), len(tokens))
                if old[:k] != tokens[:k]:
                    call.problem("greedy tokens differ from an earlier call's: %s vs %s" % (tokens[:k], old[:k]))
                if len(tokens) > len(old):
                    self.greedy[key] = tokens
            elif old != tokens:
                call.problem("seeded tokens %s differ from an earlier equal call's %s" % (tokens, old))

    def run_slow(self, rng, stub, call):
        # Sleeps between reads. Its unread output stays far below --stream_buffer_kb (4 MiB by
        # default: a whole 4096-token answer with 20 logprobs is about 1.5 MB) and it reads far
        # more often than --stream_write_timeout_s (30 s), so the server must serve it to the end.
        # Messages carry one token each while the connection's flow-control window has room, so
        # such a call can take n x 50 ms of sleep (SLOW_TIMEOUT_S allows for it). With 20 logprobs
        # the window fills and the server holds (and coalesces) what the client has not read.
        n, logprobs = rng.randint(200, SLOW_MOST_TOKENS), rng.choice((0, 5, 20))

        def each(m):
            if len(m.logprobs) != (len(m.token_ids) if logprobs else 0):
                call.problem("%d logprobs for %d tokens" % (len(m.logprobs), len(m.token_ids)))
            time.sleep(rng.uniform(0.005, SLOW_MOST_SLEEP_S))

        self.read(call, stub.Generate(self.request(call, n, rng.choice(PROMPTS), logprobs=logprobs),
                                      timeout=SLOW_TIMEOUT_S), each)
        self.expect(call, "OK")
        if call.code == "OK":
            self.check_end(call, n, True)

    def run_deadline(self, rng, stub, call):
        # A deadline of 1-500 ms: either the request ends in time (OK) or DEADLINE_EXCEEDED.
        n, ignore_eos = rng.randint(1, 200), rng.random() < 0.5
        self.read(call, stub.Generate(self.request(call, n, rng.choice(PROMPTS), ignore_eos=ignore_eos),
                                      timeout=rng.uniform(0.001, 0.5)))
        self.expect(call, "OK", "DEADLINE_EXCEEDED")
        if call.code == "OK":
            self.check_end(call, n, ignore_eos)

    def cut_by(self, call, cut, rng, most_messages):
        """Arranges `cut` after a random number of messages or (half the time) a random delay;
        returns the per-message callback."""
        def do_cut():
            if call.t_cut is None and call.code is None:
                call.t_cut = time.monotonic()
                cut()

        if rng.random() < 0.5:
            self.timer.after(rng.uniform(0.001, 0.3), do_cut)
            return None
        after = rng.randint(1, most_messages)
        return lambda m: do_cut() if call.messages >= after else None

    def run_cancel(self, rng, stub, call):
        stream = stub.Generate(self.request(call, CUT_TOKENS, rng.choice(PROMPTS)), timeout=CALL_TIMEOUT_S)
        self.read(call, stream, self.cut_by(call, stream.cancel, rng, 30))
        self.expect(call, "CANCELLED")

    def run_close(self, rng, stub, call):
        # Its own channel and connection, closed mid-stream without cancelling the call first.
        channel = grpc.insecure_channel(self.server.address, options=[("grpc.use_local_subchannel_pool", 1)])
        try:
            stream = pb_grpc.SeqBoatStub(channel).Generate(self.request(call, CUT_TOKENS, rng.choice(PROMPTS)),
                                                           timeout=CALL_TIMEOUT_S)
            self.read(call, stream, self.cut_by(call, channel.close, rng, 10))
        finally:
            channel.close()
        self.expect(call, "CANCELLED")  # grpc's own status for a call on a closed channel

    def run_kill(self, rng, stub, call):
        # A child process with its own connection, SIGKILLed 10-300 ms after it started its call
        # (mostly while it waits for a slot) or, half the time, after its first message (mid-
        # stream): the server sees the connection drop, nothing more.
        proc = subprocess.Popen([sys.executable, "-c", CHILD, self.server.address, harness._stub_dir,
                                 call.rid, str(CUT_TOKENS)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out = read_child(proc, b"", "sent", 30)
            if b"sent" not in out:
                proc.kill()
                proc.wait(10)
                call.problem("the child did not start its call within 30 s: %r %r" % (out, proc.stderr.read()[-2000:]))
                return
            if rng.random() < 0.5:
                out = read_child(proc, out, "first", 30)
                if b"first" not in out:
                    call.problem("no first message within 30 s: %r" % out)
            time.sleep(rng.uniform(0.01, 0.3))
            out = read_child(proc, out, "first", 0)
            call.t_cut = time.monotonic()
            proc.kill()
            proc.wait(10)
            call.code = "KILLED"
            words = out.split()
            call.messages = 1 if b"first" in words else 0
            if b"error" in words or b"end" in words:
                call.problem("the child's call ended before the kill: %r" % out)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            proc.stdout.close()
            proc.stderr.close()

    # --- the outcomes ---

    def check_gauges(self, server, problems, summary):
        # Every call has ended on the client's side: nothing may run, wait or hold a slot.
        end = time.monotonic() + 10
        while True:
            samples = scrape(server)
            state = {g: samples[g] for g in GAUGES}
            if all(v == 0 for v in state.values()) or time.monotonic() > end:
                break
            time.sleep(0.1)
        summary["gauges_after"] = state
        summary["gauges_max"] = dict(self.gauge_max)
        if any(v != 0 for v in state.values()):
            problems.append("10 s after the load the gauges are %s (expected all 0)" % state)

    def check_counters(self, before, after, problems, summary):
        a, b = server_codes(after), server_codes(before)
        server = {c: int(a[c] - b[c]) for c in CODES}
        client = collections.Counter(c.code for c in self.calls)
        calls = len(self.calls)
        maybe_ok = sum(c.may_be_server_ok() for c in self.calls)
        reached = sum(c.certainly_reached_server() for c in self.calls)
        cut = [c for c in self.calls if c.kind in ("cancel", "close", "kill")]
        cut_cancelled = sum(1 for c in cut if c.messages > 0 and not c.may_be_server_ok())
        deadline_not_ok = sum(1 for c in self.calls if c.kind == "deadline" and c.code != "OK")
        total = sum(server.values())
        summary["server_codes"] = server
        summary["client_codes"] = dict(client)
        summary["calls_maybe_ok_at_server"] = maybe_ok
        summary["calls_certainly_at_server"] = reached

        def check(ok, text):
            if not ok:
                problems.append("counters: " + text)

        # The server counts each status it sends, so every OK a client got is among its OKs. It
        # may have more: a call can end OK at the server while its client cancels, closes or
        # passes its deadline before the status arrives; may_be_server_ok() counts the calls
        # where the client cannot rule that out. With none, the OKs must match exactly.
        check(client["OK"] <= server["OK"] <= client["OK"] + maybe_ok,
              "server OK %d, client OK %d (+ at most %d that may have ended OK at the server)"
              % (server["OK"], client["OK"], maybe_ok))
        # No behaviour here may end with another code, at the server either.
        for code in CODES[3:]:
            check(server[code] == 0 and client[code] == 0,
                  "%s: server %d, client %d (expected 0)" % (code, server[code], client[code]))
        # Each call is counted once if it reached the server; some cut before any message may
        # not have (and killed children are in self.calls too).
        check(reached <= total <= calls, "the server counted %d calls; the clients made %d, of which "
              "%d certainly reached it" % (total, calls, reached))
        # CANCELLED and DEADLINE_EXCEEDED: a call whose deadline passed is DEADLINE_EXCEEDED at the
        # client, while the server may see the client's cancellation first and count CANCELLED
        # (or end it OK, above); a cut call is CANCELLED at the server unless it ended OK there
        # (no deadline can have passed: CALL_TIMEOUT_S). So only bounds are sound.
        check(server["DEADLINE_EXCEEDED"] <= client["DEADLINE_EXCEEDED"],
              "server DEADLINE_EXCEEDED %d > client's %d" % (server["DEADLINE_EXCEEDED"], client["DEADLINE_EXCEEDED"]))
        check(cut_cancelled <= server["CANCELLED"] <= len(cut) + deadline_not_ok,
              "server CANCELLED %d; cut calls that reached it and cannot have ended OK %d, cut calls %d, "
              "deadline calls not OK %d" % (server["CANCELLED"], cut_cancelled, len(cut), deadline_not_ok))

    def check_rss(self, problems, summary):
        load = [(t, kb) for t, kb in self.rss if t <= DURATION_S]
        warm = [(t, kb) for t, kb in load if t >= WARMUP_S]
        summary["rss_max_mb"] = round(max(kb for _, kb in self.rss) / 1024, 1) if self.rss else None
        if self.sanitized:
            summary["rss"] = "skipped: the server runs under a sanitizer"
            return
        if len(warm) < 2:
            summary["rss"] = "skipped: the load is not longer than the warm-up (%.0f s)" % WARMUP_S
            return
        # Compared once nothing runs: RSS under load moves with the streams open at that second
        # (their buffers and stacks), which this bursty load swings between 16 and 130+; what a
        # leak leaves behind stays after they end. Without a drained sample, the load's last.
        (t_warm, kb_warm) = warm[0]
        (t_end, kb_end) = self.rss_drained[-1] if self.rss_drained else warm[-1]
        summary["rss_end_drained"] = bool(self.rss_drained)
        change = kb_end / kb_warm - 1
        summary.update(rss_warmup_mb=round(kb_warm / 1024, 1), rss_warmup_t=round(t_warm, 1),
                       rss_end_mb=round(kb_end / 1024, 1), rss_end_t=round(t_end, 1),
                       rss_change_pct=round(100 * change, 2))
        # What malloc holds allocated and free over the same span: the reading of a change in
        # RSS (allocated bytes that grow are a leak; free bytes that grow, fragmentation).
        heap = [(t, used, free) for t, used, free in self.heap if WARMUP_S <= t <= DURATION_S]
        if len(heap) >= 2:
            summary.update(heap_in_use_mb=[round(heap[0][1] / 2**20, 1), round(heap[-1][1] / 2**20, 1)],
                           heap_free_mb=[round(heap[0][2] / 2**20, 1), round(heap[-1][2] / 2**20, 1)])
        if abs(change) > RSS_TOLERANCE:
            problems.append("RSS %.1f MB at the end of the warm-up (t=%.0f s), %.1f MB %s (t=%.0f s): "
                            "%+.1f%%, more than %.0f%%" % (
                                kb_warm / 1024, t_warm, kb_end / 1024,
                                "once the load drained" if self.rss_drained else "at the end of the load",
                                t_end, 100 * change, 100 * RSS_TOLERANCE))

    def report(self, s):
        kinds = [k for k, _ in KINDS]
        columns = ("OK", "CANCELLED", "DEADLINE_EXCEEDED", "KILLED")
        table = {k: collections.Counter() for k in kinds + ["all"]}
        longest = collections.Counter()
        for c in self.calls:
            for row in (table[c.kind], table["all"]):
                row[c.code if c.code in columns else "other"] += 1
                row["calls"] += 1
                row["failed"] += bool(c.problems)
                row["tokens"] += c.tokens
                row["seconds"] += c.t_end - c.t_start
            longest[c.kind] = max(longest[c.kind], c.t_end - c.t_start)
        longest["all"] = max(longest.values(), default=0)
        load_s = s.get("load_s") or DURATION_S
        s["calls"] = {k: dict(table[k], longest_s=round(longest[k], 2)) for k in table}
        # Throughput while the load ran: the calls that ended before it stopped.
        during = [c for c in self.calls if c.t_end <= self.t_stop]
        s["requests_per_s"] = round(len(during) / load_s, 1)
        s["tokens_per_s"] = round(sum(c.tokens for c in during) / load_s, 1)
        s["repeats_checked"] = self.repeats_checked
        s["prefix_cache_entries"] = [e for _, e in self.cache_entries[::max(1, len(self.cache_entries) // 6)]]
        # How many of the workers' calls the server held open (running, waiting, unread).
        s["streams_open_median"] = sorted(self.streams_open)[len(self.streams_open) // 2] if self.streams_open else None
        s["killed_mid_stream"] = sum(1 for c in self.calls if c.kind == "kill" and c.messages > 0)
        # How the deadline calls that were not OK ended, as their clients saw it: after the final
        # DEADLINE message, after the final message of a request that had ended (the server may
        # then count OK), or without a final message (without any: it waited for a slot, or never
        # reached the server).
        late = collections.Counter()
        for c in self.calls:
            if c.kind == "deadline" and c.code != "OK":
                late["final DEADLINE" if c.reason == pb.FINISH_REASON_DEADLINE else
                     "final other" if c.reason is not None else
                     "messages, no final" if c.messages else "no message"] += 1
        s["deadline_not_ok"] = dict(late)
        lines = ["", "soak summary: seed %s, %.0f s of load (+%.1f s to drain), %d workers, --max_batch %d"
                 % (s["seed"], load_s, s.get("drain_s", 0), WORKERS, MAX_BATCH),
                 "%-9s %6s %6s %9s %9s %6s %6s %6s %8s %7s %7s" % (
                     "kind", "calls", "OK", "CANCELLED", "DEADLINE", "KILLED", "other", "failed", "tokens",
                     "mean s", "max s")]
        for k in kinds + ["all"]:
            row = table[k]
            lines.append("%-9s %6d %6d %9d %9d %6d %6d %6d %8d %7.2f %7.2f" % (
                k, row["calls"], row["OK"], row["CANCELLED"], row["DEADLINE_EXCEEDED"], row["KILLED"],
                row["other"], row["failed"], row["tokens"], row["seconds"] / max(1, row["calls"]), longest[k]))
        lines.append("throughput: %.1f requests/s, %.1f tokens/s read by the clients, %s tokens/s generated "
                     "(server)" % (s["requests_per_s"], s["tokens_per_s"], s.get("server_generated_tokens_per_s")))
        if "rss_warmup_mb" in s:
            lines.append("RSS: %.1f MB at the warm-up's end (t=%.0f s), %.1f MB %s (t=%.0f s), "
                         "%+.2f%%; max %.1f MB" % (s["rss_warmup_mb"], s["rss_warmup_t"], s["rss_end_mb"],
                                                   "drained" if s["rss_end_drained"] else "at the load's end",
                                                   s["rss_end_t"], s["rss_change_pct"], s["rss_max_mb"]))
            if "heap_in_use_mb" in s:
                lines.append("heap (malloc) over the same span: in use %.1f -> %.1f MB, free %.1f -> %.1f MB"
                             % tuple(s["heap_in_use_mb"] + s["heap_free_mb"]))
        else:
            lines.append("RSS: %s; max %s MB" % (s.get("rss"), s.get("rss_max_mb")))
        if "server_codes" in s:
            lines.append("seqboat_requests_total{api=\"grpc\"} (server/clients): " + ", ".join(
                "%s %d/%d" % (c, s["server_codes"][c], s["client_codes"].get(c, 0))
                for c in CODES if c in columns or s["server_codes"][c] or s["client_codes"].get(c)) +
                "; %d killed children; %d calls may have ended OK at the server only, %d certainly "
                "reached it"
                % (table["kill"]["calls"], s["calls_maybe_ok_at_server"], s["calls_certainly_at_server"]))
        lines.append("deadline calls not OK: %s" % s["deadline_not_ok"])
        lines.append("gauges: max %s; after the load %s; streams open at the server during the load: median %s"
                     % (s.get("gauges_max"), s.get("gauges_after"), s["streams_open_median"]))
        lines.append("determinism: %d repeated requests compared; prefix cache entries over time %s; "
                     "%d of %d children killed mid-stream" % (s["repeats_checked"], s["prefix_cache_entries"],
                                                              s["killed_mid_stream"], table["kill"]["calls"]))
        if s["streams_open_median"] is not None and s["streams_open_median"] < WORKERS / 2:
            # The clients, not the server, set the pace: their CPU time goes to reading messages.
            lines.append("note: the server held a median of %d streams open, not %d: the clients could not keep "
                         "up (a busy machine); the load was lighter than intended"
                         % (s["streams_open_median"], WORKERS))
        lines.append("server exit code on SIGTERM: %s; problems: %d" % (s.get("exit_code"), len(s["problems"])))
        print("\n".join(lines), flush=True)
        path = os.environ.get("SEQBOAT_SOAK_JSON")
        if path:
            with open(path, "w") as f:
                json.dump(s, f, indent=2, sort_keys=True)


if __name__ == "__main__":
    unittest.main()
