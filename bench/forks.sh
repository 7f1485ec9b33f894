#!/usr/bin/env bash
# n forks of one prompt against n separate requests of it, side by side on one seqboat-server:
# `seqboat-cli bench --n N` (one request, one prefill, the state copied N-1 times) and N
# concurrent requests of the same prompt (--shared_prefix_ratio 1: the prefix cache may serve
# the later ones), in turn. Prints the TTFT and the prompt tokens the model ran for each
# (from seqboat_model_tokens_total and seqboat_generated_tokens_total).
# Usage: bench/forks.sh BIN_DIR MODEL [N PROMPT_TOKENS OUTPUT_TOKENS ROUNDS]
set -euo pipefail
BIN=$1 MODEL=$2 N=${3:-8} PROMPT=${4:-512} OUTPUT=${5:-16} ROUNDS=${6:-2}
log=$(mktemp)
"$BIN/seqboat-server" --model "$MODEL" --listen 127.0.0.1:0 --http_listen "" --metrics_listen 127.0.0.1:0 \
    --max_batch "$N" --max_waiting 64 --max_prompt_tokens 65536 --prefix_cache_mb 1024 >"$log" 2>"$log.err" &
pid=$!
trap 'kill $pid 2>/dev/null; rm -f "$log" "$log.err"' EXIT
for _ in $(seq 1 600); do grep -q "ready" "$log" && break; sleep 0.1; done
server=127.0.0.1:$(sed -n 's/^seqboat-server: listening on 127.0.0.1:\([0-9]*\)$/\1/p' "$log")
metrics=$(sed -n 's|^seqboat-server: metrics on http://\(.*\)/metrics$|\1|p' "$log")
# Tokens through the model less the decode steps' inputs: every generated token but each
# sequence's last is fed back, so a case's prompt tokens run are the difference + N.
fed_less_generated() {
  curl -s "http://$metrics/metrics" | awk '/^seqboat_model_tokens_total /{m=$2} /^seqboat_generated_tokens_total /{g=$2} END{print m-g}'
}
"$BIN/seqboat-cli" --server "$server" bench --concurrency 1 --requests 1 --prompt_tokens 16 --output_tokens 4 >/dev/null 2>&1
printf "%-32s %8s %14s %14s %22s\n" "case" "round" "TTFT p50 ms" "wall s" "prompt tokens run"
for round in $(seq 1 "$ROUNDS"); do
  for mode in forks separate; do
    before=$(fed_less_generated)
    # Each round a new prompt (the seed), so that no earlier round's snapshots serve it.
    if [ "$mode" = forks ]; then
      out=$("$BIN/seqboat-cli" --server "$server" bench --concurrency 1 --requests 1 --n "$N" --seed "$((100 + round))" \
          --prompt_tokens "$PROMPT" --output_tokens "$OUTPUT" --shared_prefix_ratio 1 2>/dev/null | tail -1)
    else
      out=$("$BIN/seqboat-cli" --server "$server" bench --concurrency "$N" --requests "$N" --seed "$((100 + round))" \
          --prompt_tokens "$PROMPT" --output_tokens "$OUTPUT" --shared_prefix_ratio 1 2>/dev/null | tail -1)
    fi
    after=$(fed_less_generated)
    /usr/bin/python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print("%-32s %8s %14.1f %14.2f %22d" % (sys.argv[2], sys.argv[3], r["ttft_ms"]["p50"], r["wall_s"], int(float(sys.argv[5]) - float(sys.argv[4]) + int(sys.argv[6]))))' \
        "$out" "$mode (n=$N, $PROMPT-token prompt)" "$round" "$before" "$after" "$N"
  done
done
