#!/usr/bin/env bash
# Serving benchmark: starts seqboat-server on MODEL and runs `seqboat-cli bench` at
# concurrency 1, 8 and 64, then once with a shared prompt prefix (prefix cache). Writes one
# JSON per run into OUT_DIR and prints the tables.
# Usage: bench/serve_bench.sh BIN_DIR MODEL OUT_DIR [PROMPT_TOKENS OUTPUT_TOKENS REQUESTS_PER_WORKER]
set -euo pipefail
BIN=$1 MODEL=$2 OUT=$3
PROMPT=${4:-128} OUTPUT=${5:-64} PER_WORKER=${6:-4}
mkdir -p "$OUT"
log=$(mktemp)
"$BIN/seqboat-server" --model "$MODEL" --listen 127.0.0.1:0 --metrics_listen 127.0.0.1:0 \
    --max_batch 64 --max_waiting 256 --prefix_cache_mb 1024 --max_prompt_tokens 65536 >"$log" 2>"$log.err" &
pid=$!
trap 'kill $pid 2>/dev/null; rm -f "$log" "$log.err"' EXIT
for _ in $(seq 1 600); do grep -q "ready" "$log" && break; sleep 0.1; done
server=127.0.0.1:$(sed -n 's/^seqboat-server: listening on 127.0.0.1:\([0-9]*\)$/\1/p' "$log")
metrics=$(sed -n 's|^seqboat-server: metrics on http://\(.*\)/metrics$|\1|p' "$log")
"$BIN/seqboat-cli" --server "$server" info
run() {  # NAME CONCURRENCY REQUESTS SHARED_RATIO
  echo
  "$BIN/seqboat-cli" --server "$server" bench --concurrency "$2" --requests "$3" --prompt_tokens "$PROMPT" \
      --output_tokens "$OUTPUT" --shared_prefix_ratio "$4" --json_out "$OUT/$1.json" | head -n -1
}
# Warm-up (first requests touch the weights).
"$BIN/seqboat-cli" --server "$server" bench --concurrency 1 --requests 2 --prompt_tokens 16 --output_tokens 4 >/dev/null
run c1 1 $((PER_WORKER * 4)) 0
run c8 8 $((PER_WORKER * 16)) 0
run c64 64 $((PER_WORKER * 64)) 0
# Prefix cache: every prompt shares 90% of its tokens; compare TTFT with c8.
run c8_shared90 8 $((PER_WORKER * 16)) 0.9
echo
curl -s "http://$metrics/metrics" | grep -E "^seqboat_(engine_step_seconds|batch_size)_(sum|count)|^seqboat_prefix_cache_(hits|misses)_total|^seqboat_engine_iterations_total"
