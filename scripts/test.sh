#!/usr/bin/env bash
# Run every nvnet test: sets up the machine first (see setup.sh), then the whole workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
start=$(date +%s)
# A test run builds the workspace's crates from scratch more often than not (a fresh clone, a new
# path): incremental compilation only adds work then (7.4 GB of its caches after one build here).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
# The web page (web/ → wasm, www/), which the browser tests in tests/ load from dist/.
trunk build --release --offline=true
# One invocation, so that the features (flex, autodiff, wgpu, cuda) are unified and Burn is built
# once (the wasm crate is built by trunk above, for wasm32). The wgpu tests run on Vulkan (llvmpipe
# without a GPU); the browser tests in tests/ drive headless Chromium on dist/. With nvnet-cli's
# `cuda` feature the tests run the trainers' CUDA binary (burn-cuda loads the CUDA libraries at run
# time, so it builds without a GPU and says plainly that the driver is missing); the CUDA
# reference tests are compiled too, and ignored: they run with --ignored on a GPU machine.
# --lib --bins --tests: every test, without building shared/examples/train_step.rs (timings run
# by hand, docs/PERFORMANCE.md; 240 s of compiling here).
cargo test --workspace --exclude nvnet-web --locked --no-fail-fast --features nvnet-cli/cuda \
  --lib --bins --tests
echo "[test] all tests passed in $(( $(date +%s) - start )) s" >&2
