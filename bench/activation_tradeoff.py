#!/usr/bin/python3
"""The router's quality/efficiency trade-off, chosen at run time (issue 17, deliverable 3).

For each per-request activation bias b (`routing.activation_bias`, added to the router logit
of the "not activated" option: b > 0 runs attention for fewer tokens) this scores the demo
model's held-out text through seqboat-server's HTTP scoring API and reads the GAU activation
rate from its Prometheus counters; then seqboat-bench-runtime times decode steps of the
paper's enwik8-size model (random weights) with its routers calibrated to the same mean
rates. Writes docs/activation_tradeoff.json (every number) and docs/activation_tradeoff.md.

    /usr/bin/python3 bench/activation_tradeoff.py [--biases -3,-2,-1,0,1,2,3,4,6]

Needs build-release/bin/{seqboat-convert,seqboat-server,seqboat-bench-runtime}; stdlib and
python3-requests only.
"""
import argparse
import datetime
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time

import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# seqboat-eval --mode prefill over the whole held-out text at bias 0 (models/README.md).
README_BITS_PER_BYTE = 2.509


def log(message):
    sys.stderr.write("[tradeoff %6.1fs] %s\n" % (time.time() - START, message))
    sys.stderr.flush()


START = time.time()


def number_list(text, kind, name):
    try:
        values = [kind(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("--%s %r: expected comma-separated numbers" % (name, text))
    if not values:
        raise argparse.ArgumentTypeError("--%s %r: expected at least one number" % (name, text))
    return values


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--biases", default="-3,-2,-1,0,1,2,3,4,6",
                   help="activation biases to score at, comma-separated (0 must be among them: "
                        "the relative columns divide by it)")
    p.add_argument("--bin_dir", default=os.path.join(ROOT, "build-release", "bin"))
    p.add_argument("--checkpoint", default=os.path.join(ROOT, "models", "demo", "checkpoint.pt"))
    p.add_argument("--dict", default=os.path.join(ROOT, "models", "demo", "dict.txt"))
    p.add_argument("--text", default=os.path.join(ROOT, "models", "demo", "heldout.txt"))
    p.add_argument("--model", default="",
                   help="an already converted demo model (default: convert into a temporary folder)")
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads for the server and the decode bench (0: all)")
    p.add_argument("--decode_batches", default="1,8", help="decode batch sizes of the bench")
    p.add_argument("--decode_position", type=int, default=1024,
                   help="tokens in each slot before the bench's timed decode steps")
    p.add_argument("--decode_rounds", type=int, default=5,
                   help="times every decode row is measured, the rates in turn (the bench keeps "
                        "the fastest round; a passing load then reaches every rate alike)")
    p.add_argument("--no_decode", action="store_true",
                   help="score only; skip seqboat-bench-runtime (the decode columns stay empty)")
    p.add_argument("--markdown_only", action="store_true",
                   help="measure nothing: write --md_out again from an existing --json_out")
    p.add_argument("--json_out", default=os.path.join(ROOT, "docs", "activation_tradeoff.json"))
    p.add_argument("--md_out", default=os.path.join(ROOT, "docs", "activation_tradeoff.md"))
    args = p.parse_args()
    try:
        args.biases = number_list(args.biases, float, "biases")
        args.decode_batches = number_list(args.decode_batches, int, "decode_batches")
    except argparse.ArgumentTypeError as e:
        p.error(str(e))
    if 0.0 not in args.biases:
        p.error("--biases %s: 0 must be one of them" % ",".join(map(str, args.biases)))
    if any(not math.isfinite(b) for b in args.biases):
        p.error("--biases: every bias must be a finite number")
    if args.decode_rounds < 1:
        p.error("--decode_rounds %d: expected >= 1" % args.decode_rounds)
    if args.decode_position < 1:
        p.error("--decode_position %d: expected >= 1" % args.decode_position)
    return args


def binary_facts(bin_dir):
    """When each binary was built: the commit below is the tree's at run time, not theirs."""
    facts = {}
    for name in ("seqboat-convert", "seqboat-server", "seqboat-bench-runtime"):
        path = os.path.join(bin_dir, name)
        if os.path.exists(path):
            facts[name] = datetime.datetime.fromtimestamp(
                os.path.getmtime(path), datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return facts


def machine_facts():
    cpu_model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break

    def git(*argv):
        return subprocess.run(["git", "-C", ROOT] + list(argv), capture_output=True, text=True,
                              check=False).stdout.strip()

    changed = [line.split(None, 1)[1] for line in
               git("status", "--porcelain", "--untracked-files=no").splitlines() if line.strip()]
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model,
        "kernel": platform.release(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "git_commit": git("rev-parse", "HEAD"),
        # The binaries were built from the working tree, which may differ from the commit.
        "git_tracked_files_changed": changed,
        "load_average_1m_start": os.getloadavg()[0],
    }


class Server:
    """seqboat-server on ephemeral loopback ports (it prints the ports it bound)."""

    def __init__(self, binary, model, threads, log_path):
        self.log = open(log_path, "w")
        argv = [binary, "--model", model, "--listen", "127.0.0.1:0",
                "--http_listen", "127.0.0.1:0", "--metrics_listen", "127.0.0.1:0",
                # Every pass must run every token: no state is reused between passes.
                "--prefix_cache_mb", "0", "--threads", str(threads)]
        self.argv = argv
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.log, text=True)
        lines = []

        def read():
            for line in self.proc.stdout:
                lines.append(line.strip())
                if line.startswith("seqboat-server: ready"):
                    return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(60)
        if "seqboat-server: ready" not in lines:
            self.stop()
            raise RuntimeError("seqboat-server did not start: stdout %r; stderr in %s" % (lines, log_path))
        self.http = self.metrics_url = None
        for line in lines:
            if line.startswith("seqboat-server: HTTP API on "):
                self.http = line.split(" on ", 1)[1].rsplit("/v1", 1)[0]
            if line.startswith("seqboat-server: metrics on "):
                self.metrics_url = line.split(" on ", 1)[1]
        if not self.http or not self.metrics_url:
            self.stop()
            raise RuntimeError("seqboat-server printed no HTTP or metrics address: %r" % lines)
        deadline = time.time() + 30
        while requests.get(self.http + "/health", timeout=5).status_code != 200:
            if time.time() > deadline:
                self.stop()
                raise RuntimeError("seqboat-server's /health never answered 200")
            time.sleep(0.2)

    def counters(self):
        """The seqboat_* counter samples, {name or name{labels}: value}."""
        text = requests.get(self.metrics_url, timeout=10).text
        samples = {}
        for line in text.splitlines():
            if line.startswith("seqboat_") and " " in line:
                key, value = line.rsplit(" ", 1)
                samples[key] = float(value)
        return samples

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def layer_counts(samples, name):
    counts = {}
    prefix = name + '{layer="'
    for key, value in samples.items():
        if key.startswith(prefix):
            counts[int(key[len(prefix):].split('"')[0])] = value
    return [counts[l] for l in sorted(counts)]


def score(server, text, bias):
    """One pass over the whole text at `bias`: bits per byte and activation counts."""
    before = server.counters()
    started = time.time()
    response = requests.post(server.http + "/v1/completions", timeout=1800, json={
        "prompt": text, "max_tokens": 0, "echo": True, "logprobs": 0,
        "routing": {"activation_bias": bias}})
    seconds = time.time() - started
    if response.status_code != 200:
        raise RuntimeError("bias %g: HTTP %d: %s" % (bias, response.status_code, response.text[:500]))
    body = response.json()
    logprobs = body["choices"][0]["logprobs"]["token_logprobs"]
    prompt_tokens = body["usage"]["prompt_tokens"]
    text_bytes = len(text.encode("utf-8"))
    if len(logprobs) != text_bytes or any(lp is None for lp in logprobs):
        raise RuntimeError("bias %g: %d scored tokens for %d bytes" % (bias, len(logprobs), text_bytes))
    # The counters move once the engine's iteration is recorded; wait until they cover the
    # request (they must: nothing else runs on this server).
    deadline = time.time() + 10
    while True:
        after = server.counters()
        model_tokens = after["seqboat_model_tokens_total"] - before["seqboat_model_tokens_total"]
        if model_tokens >= prompt_tokens or time.time() > deadline:
            break
        time.sleep(0.1)
    activated = [a - b for a, b in zip(layer_counts(after, "seqboat_gau_activated_tokens_total"),
                                       layer_counts(before, "seqboat_gau_activated_tokens_total"))]
    cache_hit_tokens = (after.get("seqboat_prefix_cache_hit_tokens_total", 0.0)
                        - before.get("seqboat_prefix_cache_hit_tokens_total", 0.0))
    nats = -math.fsum(logprobs)
    return {
        "bias": bias,
        "bits_per_byte": nats / math.log(2) / text_bytes,
        "scored_tokens": len(logprobs),
        "scored_bytes": text_bytes,
        "prompt_tokens": prompt_tokens,
        "metrics_model_tokens": model_tokens,
        "metrics_count_every_prompt_token": model_tokens == prompt_tokens,
        "prefix_cache_hit_tokens": cache_hit_tokens,
        "activated_tokens_per_layer": activated,
        "layer_activation_rates": [a / model_tokens for a in activated],
        "mean_activation_rate": sum(activated) / (len(activated) * model_tokens),
        "request_seconds": seconds,
        "prefill_tokens_per_s": prompt_tokens / seconds,
    }


def run_decode_bench(args, rates, workdir):
    out = os.path.join(workdir, "runtime_bench.json")
    argv = [os.path.join(args.bin_dir, "seqboat-bench-runtime"),
            "--decode_rates", ",".join("%.6f" % r for r in rates),
            "--decode_batches", ",".join(map(str, args.decode_batches)),
            "--decode_positions", str(args.decode_position),
            # Rounds instead of retries in place: each rate is timed decode_rounds times,
            # spread over the run.
            "--decode_rounds", str(args.decode_rounds), "--contention_retries", "0",
            "--threads", str(args.threads), "--model_dir", workdir, "--json_out", out]
    log("running " + " ".join(argv))
    started = time.time()
    with open(os.path.join(workdir, "runtime_bench.txt"), "w") as table:
        # Progress lines (stderr) go on to ours; the table is kept for the JSON.
        proc = subprocess.run(argv, stdout=table, check=False)
    if proc.returncode != 0:
        raise RuntimeError("seqboat-bench-runtime exited %d" % proc.returncode)
    with open(out) as f:
        bench = json.load(f)
    with open(os.path.join(workdir, "runtime_bench.txt")) as f:
        bench["printed_table"] = f.read()
    bench["argv"] = argv
    bench["wall_seconds"] = time.time() - started
    return bench


def fmt_rate(rate):
    return "%.1f%%" % (100 * rate)


def write_markdown(path, result):
    m = result["machine"]
    rows = result["biases"]
    batches = result["decode"]["batches"] if result.get("decode") else []
    layers = len(rows[0]["layer_activation_rates"])
    base = next(r for r in rows if r["bias"] == 0)
    lines = [
        "# Activation bias: quality against decode speed",
        "",
        "Made by `bench/activation_tradeoff.py` (bench/README.md); every number below is measured, "
        "all of them are in [activation_tradeoff.json](activation_tradeoff.json); plot: "
        "[activation_tradeoff.png](activation_tradeoff.png).",
        "",
        "- Machine: %s, nproc %d, %s, commit `%s`%s." % (
            m["cpu_model"], m["nproc"], m["date"], m["git_commit"][:12],
            " (working tree with uncommitted changes in %d tracked files)" % len(m["git_tracked_files_changed"])
            if m["git_tracked_files_changed"] else ""),
        "- Quality: the demo model (models/demo, L=%d) scores models/demo/heldout.txt (%d bytes) "
        "through seqboat-server's `POST /v1/completions` (`max_tokens: 0, echo: true, logprobs: 0, "
        "routing: {activation_bias: b}`), **the whole text in one pass** (no windows: its %d "
        "tokens fit the server's default limits, `--max_prompt_tokens` %d (/v1/models' "
        "max_model_len) and `--max_text_bytes` 262144). Bits/byte = -(sum of the %d token logprobs) / ln 2 / %d "
        "bytes (byte-level: one token per byte, newline = `</s>`). At bias 0: %.4f "
        "(models/README.md's seqboat-eval figure: %.3f)." % (
            layers, base["scored_bytes"], base["prompt_tokens"], result["server"]["max_model_len"],
            base["scored_tokens"], base["scored_bytes"], base["bits_per_byte"], README_BITS_PER_BYTE),
        "- Activation rate: deltas of `seqboat_gau_activated_tokens_total{layer}` over deltas of "
        "`seqboat_model_tokens_total` for each pass (the start token and every prompt token: "
        "prefill is counted, %s); mean = over layers and tokens." % (
            "checked: the token delta equals the request's prompt_tokens at every bias"
            if all(r["metrics_count_every_prompt_token"] for r in rows)
            else "**but at some bias the token delta differed from prompt_tokens; see the JSON**"),
    ]
    if result.get("decode"):
        d = result["decode"]
        lines.append(
            "- Decode: `seqboat-bench-runtime` on the paper's enwik8-size model (L=14, D=616, w=1024, "
            "random F32 weights, %d threads), its routers calibrated per layer to each bias's mean "
            "rate (the same rate in every layer, unlike the demo model's uneven layers), one token "
            "per slot per step from position %d; tok/s = batch / median step time; the rate shown "
            "is the one measured in the timed steps. Each row was timed in %d rounds (all rates in "
            "turn) and the fastest round is shown (JSON: every round). Other processes "
            "took %.0f%% of the CPUs over the bench run." % (
                d["threads"], d["position"], d.get("rounds", 1), 100 * d["others_cpu_share_run"]))
    lines += ["", ""]
    header = ["bias", "bits/byte", "vs bias 0", "mean act."] + ["L%d" % l for l in range(layers)]
    for b in batches:
        header += ["enwik8 rate (b%d)" % b, "tok/s b%d" % b, "rel. b%d" % b]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---:"] * len(header)) + "|")
    for r in rows:
        cells = ["%+g" % r["bias"] if r["bias"] else "0", "%.4f" % r["bits_per_byte"],
                 "%+.4f" % (r["bits_per_byte"] - base["bits_per_byte"]),
                 fmt_rate(r["mean_activation_rate"])]
        cells += [fmt_rate(x) for x in r["layer_activation_rates"]]
        for b in batches:
            row = r["decode"].get(str(b)) if r.get("decode") else None
            base_row = base["decode"].get(str(b)) if base.get("decode") else None
            if row is None:
                cells += ["-", "-", "-"]
                continue
            cells += [fmt_rate(row["measured_rate"]), "%.1f" % row["tokens_per_s"],
                      "%.2f" % (row["tokens_per_s"] / base_row["tokens_per_s"])]
        lines.append("| " + " | ".join(cells) + " |")
    best = min(rows, key=lambda r: r["bits_per_byte"])
    lines += ["", "Lowest bits/byte at bias %g (%.1f%% mean activation). Mean activation %s from "
              "bias %+g to %+g." % (
                  best["bias"], 100 * best["mean_activation_rate"],
                  "falls monotonically" if all(
                      a["mean_activation_rate"] > b["mean_activation_rate"]
                      for a, b in zip(sorted(rows, key=lambda r: r["bias"]),
                                      sorted(rows, key=lambda r: r["bias"])[1:]))
                  else "does not fall monotonically",
                  min(r["bias"] for r in rows), max(r["bias"] for r in rows))]
    spreads = sorted(max(d["round_median_ms"]) / min(d["round_median_ms"]) - 1
                     for r in rows for d in (r.get("decode") or {}).values()
                     if len(d.get("round_median_ms") or []) > 1)
    if spreads:
        lines += ["", "Noise: the slowest round of a row took %.0f%% longer than its fastest "
                  "(median over rows; %.0f%% at most): the machine's speed moved that much "
                  "during the run%s; small tok/s differences between neighbouring biases are "
                  "within it." % (
                      100 * spreads[len(spreads) // 2], 100 * spreads[-1],
                      ", though other processes took only %.0f%% of the CPUs" % (
                          100 * result["decode"]["others_cpu_share_run"])
                      if result["decode"]["others_cpu_share_run"] < 0.05 else "")]
    lines += ["", "Script run: %.0f s (scoring %.0f s, decode bench %.0f s)." % (
        result["wall_seconds"], result["scoring_seconds"],
        result["decode"]["wall_seconds"] if result.get("decode") else 0.0), ""]
    with open(path, "w") as f:
        f.write("\n".join(lines))


def main():
    args = parse_args()
    if args.markdown_only:
        with open(args.json_out) as f:
            write_markdown(args.md_out, json.load(f))
        log("wrote " + args.md_out)
        return
    machine = machine_facts()
    machine["binaries_built"] = binary_facts(args.bin_dir)
    with open(args.text, "rb") as f:
        text = f.read().decode("utf-8")
    with tempfile.TemporaryDirectory(prefix="seqboat_tradeoff_") as workdir:
        model = args.model
        if not model:
            model = os.path.join(workdir, "demo.safetensors")
            subprocess.run([os.path.join(args.bin_dir, "seqboat-convert"), "--checkpoint", args.checkpoint,
                            "--dict", args.dict, "--out", model], check=True, stdout=subprocess.DEVNULL)
            log("converted the demo model to " + model)

        server = Server(os.path.join(args.bin_dir, "seqboat-server"), model, args.threads,
                        os.path.join(workdir, "server.log"))
        scoring_started = time.time()
        try:
            info = requests.get(server.http + "/v1/models", timeout=10).json()["data"][0]
            log("server up: HTTP %s, metrics %s" % (server.http, server.metrics_url))
            rows = []
            for bias in args.biases:
                row = score(server, text, bias)
                log("bias %+g: %.4f bits/byte, mean activation %.1f%% (layers %s), %.1f s" % (
                    bias, row["bits_per_byte"], 100 * row["mean_activation_rate"],
                    " ".join(fmt_rate(x) for x in row["layer_activation_rates"]), row["request_seconds"]))
                if not row["metrics_count_every_prompt_token"]:
                    log("bias %+g: the metrics counted %d tokens, the request had %d prompt tokens" % (
                        bias, row["metrics_model_tokens"], row["prompt_tokens"]))
                rows.append(row)
        finally:
            server.stop()
        scoring_seconds = time.time() - scoring_started
        base = next(r for r in rows if r["bias"] == 0)
        check = base["bits_per_byte"] - README_BITS_PER_BYTE
        log("bias 0: %.4f bits/byte against models/README.md's %.3f (difference %+.4f)%s" % (
            base["bits_per_byte"], README_BITS_PER_BYTE, check,
            "" if abs(check) < 0.0015 else "  ** MISMATCH **"))

        decode = None
        if not args.no_decode:
            rates = [r["mean_activation_rate"] for r in rows]
            bench = run_decode_bench(args, rates, workdir)
            labels = [c["label"] for c in bench["calibration"]]
            for r, label, calibration in zip(rows, labels, bench["calibration"]):
                r["decode_target_rate"] = calibration["target_rate"]
                r["decode"] = {str(d["batch"]): {k: d[k] for k in (
                    "measured_rate", "measured_layer_rates", "busy_layer_rate", "position", "steps",
                    "step_ms", "tokens_per_s", "others_cpu_share", "kept_round",
                    "round_median_ms", "round_others_cpu_share")}
                    for d in bench["decode"] if d["rate_label"] == label}
            decode = {
                "model": "paper enwik8 config, random F32 weights (bench/random_model.h)",
                "batches": args.decode_batches,
                "position": args.decode_position,
                "rounds": args.decode_rounds,
                "threads": bench["machine"]["threads"],
                "others_cpu_share_run": bench["machine"]["others_cpu_share"]["run"],
                "wall_seconds": bench["wall_seconds"],
                "runtime_bench": bench,
            }

    machine["load_average_1m_end"] = os.getloadavg()[0]
    result = {
        "what": "activation bias vs bits/byte (demo model, held-out text, server scoring API), "
                "GAU activation rate (server metrics) and decode tok/s (enwik8-size random model "
                "at the same mean rates)",
        "command": " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:]),
        "machine": machine,
        "server": {"argv": [os.path.basename(server.argv[0])] + server.argv[1:],
                   "max_model_len": info.get("max_model_len"),
                   "scoring": "whole text in one request (no windows)"},
        "text": {"path": os.path.relpath(args.text, ROOT), "bytes": base["scored_bytes"]},
        "reference_bits_per_byte_bias0": {"models_readme_seqboat_eval": README_BITS_PER_BYTE,
                                          "measured": base["bits_per_byte"], "difference": check},
        "biases": rows,
        "decode": decode,
        "scoring_seconds": scoring_seconds,
        "wall_seconds": time.time() - START,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.json_out)), exist_ok=True)
    with open(args.json_out, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    write_markdown(args.md_out, result)
    log("wrote %s and %s" % (args.json_out, args.md_out))
    with open(args.md_out) as f:
        print(f.read())


if __name__ == "__main__":
    main()
