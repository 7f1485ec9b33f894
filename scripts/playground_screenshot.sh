#!/usr/bin/env bash
# Regenerates docs/playground.png: serves the demo model (scripts/serve_demo.sh) on free ports,
# drives the playground in Debian's chromium (tests/e2e/playground/screenshot.mjs), stops.
# Needs a build (make build), /usr/bin/chromium and `make deps`'s playwright-core.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-docs/playground.png}
LOG=$(mktemp)
trap 'kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; rm -f "$LOG"' EXIT
scripts/serve_demo.sh --listen 127.0.0.1:0 --http_listen 127.0.0.1:0 --metrics_listen "" >"$LOG" 2>/dev/null &
PID=$!
for _ in $(seq 1 120); do grep -q "seqboat-server: ready" "$LOG" && break; sleep 0.5; done
PORT=$(sed -n 's|.*HTTP API on http://127.0.0.1:\([0-9]*\)/v1|\1|p' "$LOG")
[ -n "$PORT" ] || { echo "the demo server did not start:"; cat "$LOG"; exit 1; }
SEQBOAT_HTTP_BASE="http://127.0.0.1:$PORT" SEQBOAT_SCREENSHOT="$OUT" \
  node tests/e2e/playground/screenshot.mjs
echo "wrote $OUT"
