#!/usr/bin/env bash
# Run every nvnet test: sets up the machine first (see setup.sh), then the whole workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
start=$(date +%s)
# The web page (web/ → wasm, www/), which the browser tests in tests/ load from dist/.
trunk build --release --offline=true
# One invocation, so that the library's features (flex, autodiff, wgpu) are unified and Burn is
# built once (the wasm crate is built by trunk above, for wasm32). The wgpu tests run on Vulkan
# (llvmpipe without a GPU); the browser tests in tests/ drive headless Chromium on dist/.
cargo test --workspace --exclude nvnet-web --locked --no-fail-fast
# The trainers' CUDA binary must build here too (burn-cuda loads the CUDA libraries at run time,
# so it builds without a GPU; running it needs one).
cargo build --release --locked -p nvnet-cli --features cuda
echo "[test] all tests passed in $(( $(date +%s) - start )) s" >&2
