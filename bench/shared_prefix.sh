#!/usr/bin/env bash
# The shared-prefix snapshot rule, measured: a seqboat-server with branch-point snapshots (a
# snapshot where a prompt leaves, or ends on, a cached sequence; the default) against one with
# block-boundary snapshots only (`--prefix_cache_branch_points=false`), a fresh server of each
# per case and round, in turn. Two cases of sequential requests: prompts that share a prefix
# of SHARED_RATIO (a system prompt that ends off the 32-token block grid), and one prompt
# repeated. Prints TTFT p50 and the prompt tokens the model ran.
# Usage: bench/shared_prefix.sh BIN_DIR MODEL [PROMPT_TOKENS SHARED_RATIO REQUESTS OUTPUT_TOKENS ROUNDS]
set -euo pipefail
BIN=$1 MODEL=$2 PROMPT=${3:-300} RATIO=${4:-0.9} REQUESTS=${5:-16} OUTPUT=${6:-8} ROUNDS=${7:-2}
run() {  # rule (branch|blocks), shared ratio -> "TTFT_p50_ms prompt_tokens_run"
  local log; log=$(mktemp)
  "$BIN/seqboat-server" --model "$MODEL" --listen 127.0.0.1:0 --http_listen "" --metrics_listen 127.0.0.1:0 \
      --prefix_cache_branch_points="$([ "$1" = branch ] && echo true || echo false)" >"$log" 2>"$log.err" &
  local pid=$!
  for _ in $(seq 1 600); do grep -q "ready" "$log" && break; sleep 0.1; done
  local server=127.0.0.1:$(sed -n 's/^seqboat-server: listening on 127.0.0.1:\([0-9]*\)$/\1/p' "$log")
  local metrics; metrics=$(sed -n 's|^seqboat-server: metrics on http://\(.*\)/metrics$|\1|p' "$log")
  local json; json=$(mktemp)
  "$BIN/seqboat-cli" --server "$server" bench --concurrency 1 --requests "$REQUESTS" --prompt_tokens "$PROMPT" \
      --output_tokens "$OUTPUT" --shared_prefix_ratio "$2" --json_out "$json" >/dev/null 2>&1
  # Tokens through the model less the decode steps' inputs (each request feeds all but its last
  # generated token): the prompt tokens that ran.
  local run_tokens; run_tokens=$(curl -s "http://$metrics/metrics" |
      awk -v r="$REQUESTS" '/^seqboat_model_tokens_total /{m=$2} /^seqboat_generated_tokens_total /{g=$2} END{print m-g+r}')
  local ttft; ttft=$(/usr/bin/python3 -c 'import json,sys; print("%.1f" % json.load(open(sys.argv[1]))["ttft_ms"]["p50"])' "$json")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -f "$log" "$log.err" "$json"
  echo "$ttft $run_tokens"
}
printf "%-22s %6s %-8s %12s %18s\n" "case" "round" "rule" "TTFT p50 ms" "prompt tokens run"
for round in $(seq 1 "$ROUNDS"); do
  for case in shared repeat; do
    ratio=$([ "$case" = shared ] && echo "$RATIO" || echo 1)
    for rule in branch blocks; do
      read -r ttft tokens < <(run "$rule" "$ratio")
      printf "%-22s %6d %-8s %12s %18s\n" "$case ($REQUESTS x $PROMPT)" "$round" "$rule" "$ttft" "$tokens"
    done
  done
done
