#!/usr/bin/env bash
# Serves the bundled demo model (models/demo): converts its fairseq checkpoint once with
# seqboat-convert, then runs seqboat-server on 127.0.0.1. Flags given to this script are
# passed on to the server (later flags win), e.g. --listen 127.0.0.1:0.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${SEQBOAT_BIN_DIR:-build/bin}
MODEL=${SEQBOAT_DEMO_MODEL:-build/models/demo.safetensors}
if [ ! -f "$MODEL" ] || [ models/demo/checkpoint.pt -nt "$MODEL" ]; then
  mkdir -p "$(dirname "$MODEL")"
  "$BIN/seqboat-convert" --checkpoint models/demo/checkpoint.pt --dict models/demo/dict.txt --out "$MODEL" >&2
fi
cat >&2 <<MSG

Serving the demo model ($MODEL). In another terminal:
  $BIN/seqboat-cli generate "The computer" --max_new_tokens 200 --temperature 0.8 --ignore_eos
  $BIN/seqboat-cli info
  curl -s http://127.0.0.1:8000/v1/completions -H 'Content-Type: application/json' \\
      -d '{"prompt": "The computer", "max_tokens": 100, "ignore_eos": true}'
  curl -s http://127.0.0.1:9464/metrics | grep seqboat_
or open the playground, http://127.0.0.1:8000/, in a browser.
Ctrl-C drains and stops the server.

MSG
exec "$BIN/seqboat-server" --model "$MODEL" --listen 127.0.0.1:50051 --http_listen 127.0.0.1:8000 \
    --metrics_listen 127.0.0.1:9464 "$@"
