#!/usr/bin/env bash
# The two front-ends side by side: one seqboat-server, `seqboat-cli bench` over gRPC and over the
# HTTP API (streamed /v1/completions) in turn at concurrency 1, 8 and 64, the same requests
# (seeded prompts and sampling) on each. Repeats the pair ROUNDS times, interleaved, so that
# the machine's drift falls on both alike. Writes one JSON per run into OUT_DIR and prints a table
# of medians over the rounds: output tokens/s, TTFT p50/p99, the server's CPU time per 1000
# output tokens (the front-end's own cost, apart from the load generator's), and HTTP's ratios.
# Usage: bench/http_vs_grpc.sh BIN_DIR MODEL OUT_DIR [PROMPT_TOKENS OUTPUT_TOKENS ROUNDS]
set -euo pipefail
BIN=$1 MODEL=$2 OUT=$3
PROMPT=${4:-128} OUTPUT=${5:-64} ROUNDS=${6:-3}
mkdir -p "$OUT"
log=$(mktemp)
"$BIN/seqboat-server" --model "$MODEL" --listen 127.0.0.1:0 --http_listen 127.0.0.1:0 --metrics_listen "" \
    --max_batch 64 --max_waiting 256 --max_prompt_tokens 65536 >"$log" 2>"$log.err" &
pid=$!
trap 'kill $pid 2>/dev/null; rm -f "$log" "$log.err"' EXIT
for _ in $(seq 1 600); do grep -q "ready" "$log" && break; sleep 0.1; done
grpc=127.0.0.1:$(sed -n 's/^seqboat-server: listening on 127.0.0.1:\([0-9]*\)$/\1/p' "$log")
http=$(sed -n 's|^seqboat-server: HTTP API on http://\(.*\)/v1$|\1|p' "$log")
"$BIN/seqboat-cli" --server "$grpc" info | head -3
cpu_ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }  # the server's user + system time
bench() {  # API CONCURRENCY REQUESTS JSON
  local before; before=$(cpu_ticks)
  "$BIN/seqboat-cli" --server "$grpc" --http_server "$http" bench --api "$1" --concurrency "$2" \
      --requests "$3" --prompt_tokens "$PROMPT" --output_tokens "$OUTPUT" --json_out "$4" >/dev/null 2>&1
  echo $(( $(cpu_ticks) - before )) > "$4.server_ticks"
}
bench grpc 1 2 /dev/null  # warm-up: the first requests touch the weights
bench http 1 2 /dev/null
for round in $(seq 1 "$ROUNDS"); do
  for c in 1 8 64; do
    requests=$(( c == 1 ? 8 : c * 2 ))
    for api in grpc http; do bench "$api" "$c" "$requests" "$OUT/${api}_c${c}_r${round}.json"; done
  done
done
/usr/bin/python3 - "$OUT" "$ROUNDS" "$MODEL" <<'PY'
import json, os, statistics, sys
out, rounds, model = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rows = []
tick = os.sysconf("SC_CLK_TCK")
print("\n%-5s %-4s %14s %12s %12s %16s   %s" % ("conc", "api", "out tokens/s", "TTFT p50 ms", "TTFT p99 ms",
                                              "server CPU ms/1k", "HTTP/gRPC tokens/s, CPU"))
summary = {"model": os.path.basename(model), "rounds": rounds, "runs": {}}
for c in (1, 8, 64):
    med = {}
    for api in ("grpc", "http"):
        runs = [json.load(open(os.path.join(out, "%s_c%d_r%d.json" % (api, c, r)))) for r in range(1, rounds + 1)]
        bad = [r["requests_by_code"] for r in runs if set(r["requests_by_code"]) != {"OK"}]
        if bad:
            sys.exit("failed requests in %s c%d: %s" % (api, c, bad))
        med[api] = {k: statistics.median(v) for k, v in {
            "tokens_per_s": [r["output_tokens_per_s"] for r in runs],
            "ttft_p50_ms": [r["ttft_ms"]["p50"] for r in runs],
            "ttft_p99_ms": [r["ttft_ms"]["p99"] for r in runs],
            "server_cpu_ms_per_1k_tokens": [
                int(open(os.path.join(out, "%s_c%d_r%d.json.server_ticks" % (api, c, r))).read()) * 1e3 / tick
                / (runs[r - 1]["output_tokens_per_s"] * runs[r - 1]["wall_s"]) * 1e3 for r in range(1, rounds + 1)],
            }.items()}
    ratio = med["http"]["tokens_per_s"] / med["grpc"]["tokens_per_s"]
    cpu_ratio = med["http"]["server_cpu_ms_per_1k_tokens"] / max(med["grpc"]["server_cpu_ms_per_1k_tokens"], 1e-9)
    for api in ("grpc", "http"):
        m = med[api]
        print("%-5d %-4s %14.1f %12.2f %12.2f %16.1f   %s" % (
            c, api, m["tokens_per_s"], m["ttft_p50_ms"], m["ttft_p99_ms"], m["server_cpu_ms_per_1k_tokens"],
            "%.3f, %.3f" % (ratio, cpu_ratio) if api == "http" else ""))
    summary["runs"]["c%d" % c] = dict(med, http_over_grpc_tokens_per_s=ratio, http_over_grpc_server_cpu=cpu_ratio)
print(json.dumps(summary))
json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=2)
PY
