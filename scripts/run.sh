#!/usr/bin/env bash
# The main job: build the web page (the nvnet engine compiled to wasm, with its embedded default
# model and sample case) and serve it on http://127.0.0.1:8080 — open it in a browser with WebGPU.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
port="${NVNET_PORT:-8080}"
echo "[run] building the page (the first build takes about 10 minutes), then serving it at http://127.0.0.1:$port/" >&2
trunk build --release --offline=true
echo "[run] open http://127.0.0.1:$port/ in a browser with WebGPU (Chrome, Edge, Firefox 141+, Safari 26+); Ctrl-C stops" >&2
exec trunk serve --release --offline=true --no-autoreload --port "$port" --address 127.0.0.1
