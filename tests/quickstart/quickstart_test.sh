#!/usr/bin/env bash
# Runs the README's quickstart on the bundled demo model: scripts/serve_demo.sh (what
# `make serve` runs) converts models/demo and starts the server; then the README's client
# commands (seqboat-cli generate/info, the metrics endpoint, the Python example) must work,
# the text must look like English, and SIGTERM must stop the server with exit code 0.
# Usage: quickstart_test.sh BIN_DIR
set -euo pipefail
BIN=$(cd "$1" && pwd)
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
work=$(mktemp -d)
server_pid=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then kill -9 "$server_pid"; fi
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "quickstart: $*" >&2; echo "--- server stderr" >&2; cat "$work/err" >&2 || true; exit 1; }

SEQBOAT_BIN_DIR="$BIN" SEQBOAT_DEMO_MODEL="$work/demo.safetensors" \
  scripts/serve_demo.sh --listen 127.0.0.1:0 --http_listen 127.0.0.1:0 --metrics_listen 127.0.0.1:0 \
  >"$work/out" 2>"$work/err" &
server_pid=$!
for _ in $(seq 1 600); do
  grep -q "^seqboat-server: ready" "$work/out" 2>/dev/null && break
  kill -0 "$server_pid" 2>/dev/null || fail "the server exited before it was ready"
  sleep 0.1
done
grep -q "^seqboat-server: ready" "$work/out" || fail "the server was not ready within 60 s"
port=$(sed -n 's/^seqboat-server: listening on 127.0.0.1:\([0-9]*\)$/\1/p' "$work/out")
metrics=$(sed -n 's|^seqboat-server: metrics on http://127.0.0.1:\([0-9]*\)/metrics$|\1|p' "$work/out")
server="127.0.0.1:$port"
http=$(sed -n 's|^seqboat-server: HTTP API on http://127.0.0.1:\([0-9]*\)/v1$|\1|p' "$work/out")

# The commands serve_demo.sh prints (README's quickstart), with the test's ports.
text=$("$BIN/seqboat-cli" --server "$server" generate "The computer" --max_new_tokens 200 --temperature 0.8 --ignore_eos --seed 1)
[ "${#text}" -ge 150 ] || fail "generate printed ${#text} characters: '$text'"
# A trained byte-level model writes mostly letters and spaces; a random one writes noise.
english=$(printf '%s' "$text" | tr -cd 'a-zA-Z ,.\n' | wc -c)
total=$(printf '%s' "$text" | wc -c)
[ $((100 * english / total)) -ge 85 ] || fail "only $english of $total bytes are letters/spaces: '$text'"
"$BIN/seqboat-cli" --server "$server" info | grep -q "^parameters " || fail "info"
body=$(curl -sf "http://127.0.0.1:$http/v1/completions" -H 'Content-Type: application/json' \
  -d '{"prompt": "The computer", "max_tokens": 100, "ignore_eos": true}') || fail "no HTTP API on port $http"
/usr/bin/python3 -c 'import json, sys; u = json.loads(sys.argv[1])["usage"]; assert u["completion_tokens"] == 100, u' \
  "$body" || fail "the HTTP completion: $body"
scrape=$(curl -sf "http://127.0.0.1:$metrics/metrics") || fail "no metrics on port $metrics"
grep -q "^seqboat_generated_tokens_total 300$" <<<"$scrape" ||
  fail "metrics: $(grep "^seqboat_generated_tokens_total" <<<"$scrape")"
py=$(/usr/bin/python3 client/examples/generate.py --server "$server" "The computer" 2>/dev/null)
[ "${#py}" -ge 50 ] || fail "the Python example printed '$py'"

kill -TERM "$server_pid"
wait "$server_pid" && code=0 || code=$?
server_pid=""
[ "$code" = 0 ] || fail "the server exited with $code after SIGTERM"
echo "quickstart: ok (sample: ${text:0:120}...)"
