#!/usr/bin/env bash
# The main job. Until the web app lands: build the nvnet tool, make a sample phantom case, and
# segment it with the embedded default model on the CPU (what the page will do on the GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
# The dev profile shares the test build; Burn and its kernels are optimised in every profile.
cargo build --locked -p nvnet-cli
nvnet="$CARGO_TARGET_DIR/debug/nvnet"
demo="${NVNET_DEMO_DIR:-$HOME/.cache/nvnet-demo}"
rm -rf "$demo" && mkdir -p "$demo"
"$nvnet" synth --out "$demo/cases" --cases 1 --seed 77 --shape 96,96,64 --preview "$demo/sample.png"
"$nvnet" predict --weights default --input "$demo/cases" --output "$demo/pred" --save-probabilities --save-uncertainty "$@"
"$nvnet" evaluate --pred "$demo/pred" --gt "$demo/cases" --out "$demo/metrics.csv"
echo "[run] the sample case: $demo/cases (preview $demo/sample.png); its segmentation: $demo/pred" >&2
