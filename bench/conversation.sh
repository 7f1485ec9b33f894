#!/usr/bin/env bash
# Conversations with the prefix cache (end-of-request snapshots on, the default) and without it
# (`--prefix_cache_mb 0`), side by side: `seqboat-cli bench --turns` against each server in
# turn, the same seeded conversations on each. Each turn's prompt is the
# previous prompt, its answer and TURN_TOKENS new tokens. Prints the time to first token by
# turn for both and their ratio; writes both JSON reports into OUT_DIR. The first prompt is
# TURN_TOKENS long, as each later turn's new text is.
# Usage: bench/conversation.sh BIN_DIR MODEL OUT_DIR [TURNS TURN_TOKENS OUTPUT_TOKENS CONVERSATIONS]
set -euo pipefail
BIN=$1 MODEL=$2 OUT=$3
TURNS=${4:-10} TURN_TOKENS=${5:-200} OUTPUT=${6:-32} CONVERSATIONS=${7:-2}
mkdir -p "$OUT"
run() {  # on|off
  local log; log=$(mktemp)
  "$BIN/seqboat-server" --model "$MODEL" --listen 127.0.0.1:0 --http_listen "" --metrics_listen "" \
      --max_prompt_tokens 65536 --prefix_cache_mb "$([ "$1" = on ] && echo 1024 || echo 0)" \
      >"$log" 2>"$log.err" &
  local pid=$!
  for _ in $(seq 1 600); do grep -q "ready" "$log" && break; sleep 0.1; done
  local server=127.0.0.1:$(sed -n 's/^seqboat-server: listening on 127.0.0.1:\([0-9]*\)$/\1/p' "$log")
  "$BIN/seqboat-cli" --server "$server" bench --concurrency 1 --requests 1 --prompt_tokens 16 --output_tokens 4 >/dev/null 2>&1
  "$BIN/seqboat-cli" --server "$server" bench --concurrency 1 --requests "$CONVERSATIONS" --turns "$TURNS" \
      --turn_tokens "$TURN_TOKENS" --prompt_tokens "$TURN_TOKENS" --output_tokens "$OUTPUT" --json_out "$OUT/$1.json" >/dev/null 2>&1
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -f "$log" "$log.err"
}
run on
run off
/usr/bin/python3 - "$OUT" <<'PY'
import json, os, sys
on, off = (json.load(open(os.path.join(sys.argv[1], n + ".json"))) for n in ("on", "off"))
print("%-5s %14s %22s %22s %10s" % ("turn", "prompt tokens", "TTFT p50 ms, cache on", "TTFT p50 ms, cache off", "off / on"))
for a, b in zip(on["by_turn"], off["by_turn"]):
    print("%-5d %14d %22.1f %22.1f %10.2f" % (a["turn"], a["prompt_tokens"], a["ttft_ms"]["p50"], b["ttft_ms"]["p50"],
                                            b["ttft_ms"]["p50"] / a["ttft_ms"]["p50"]))
first, last = on["by_turn"][0]["ttft_ms"]["p50"], on["by_turn"][-1]["ttft_ms"]["p50"]
print("cache on: last turn / first turn TTFT = %.2f; cache off: %.2f" % (
    last / first, off["by_turn"][-1]["ttft_ms"]["p50"] / off["by_turn"][0]["ttft_ms"]["p50"]))
print(json.dumps({"on": on["by_turn"], "off": off["by_turn"]}))
PY
