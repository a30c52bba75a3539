#!/usr/bin/env bash
# The page's second engine build: the same crate with its `relaxed-simd` feature (the 3×3×3
# kernel's fused multiply-add), as nvnet-web-relaxed.js and nvnet-web-relaxed_bg.wasm beside
# trunk's nvnet-web.js and nvnet-web_bg.wasm. www/engine.js picks one per browser. Run by trunk
# after each build (Trunk.toml's post_build hook, in its staging folder), with the profile and
# wasm-bindgen flags of index.html's rust link.
set -euo pipefail
out="${TRUNK_STAGING_DIR:?run by trunk (Trunk.toml)}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
target_dir=$(cargo metadata --format-version 1 --no-deps --locked | grep -o '"target_directory":"[^"]*"' | cut -d'"' -f4)
# Its own folder: cargo names a wasm library's output the same whatever its features, so in one
# folder each build would overwrite the other's and both would rebuild every time.
export CARGO_TARGET_DIR="$target_dir/relaxed-engine"
cargo build --target wasm32-unknown-unknown --profile web --locked -p nvnet-web --features relaxed-simd
wasm="$CARGO_TARGET_DIR/wasm32-unknown-unknown/web/nvnet_web.wasm"
bindgen_out=$(mktemp -d)
trap 'rm -rf "$bindgen_out"' EXIT
wasm-bindgen --target=no-modules --out-dir="$bindgen_out" --out-name=nvnet-web-relaxed \
  --no-typescript "$wasm"
cp "$bindgen_out/nvnet-web-relaxed.js" "$bindgen_out/nvnet-web-relaxed_bg.wasm" "$out/"
