#!/usr/bin/env bash
# Set up a fresh machine for nvnet: the pinned Rust toolchain with the wasm32 target, and the
# system packages the tests need. Idempotent: what is already there is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[setup] %s\n' "$*" >&2; }

# Rust: the toolchain is pinned in rust-toolchain.toml; rustup installs it (and the wasm32
# target it lists) on first use.
if ! command -v cargo >/dev/null 2>&1; then
  say "cargo not found: install rustup first (https://rustup.rs)"; exit 1
fi
if ! rustup target list --installed 2>/dev/null | grep -q '^wasm32-unknown-unknown$'; then
  say "adding the wasm32-unknown-unknown target"
  rustup target add wasm32-unknown-unknown
fi

# System packages: Vulkan on the CPU (llvmpipe) for the native wgpu tests; Chromium for the
# browser tests (WebGPU on SwiftShader), with its driver for WebDriver users; jq, with which
# scripts/test.sh reads the list of test binaries that cargo built; MRIcron's templates, whose
# Colin 27 head (a real T1 with its skull, and BET's brain of it) the skull-stripping and
# registration tests read.
need=()
for pkg in mesa-vulkan-drivers libvulkan1 chromium chromium-driver jq mricron-data; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if ((${#need[@]})); then
  say "installing ${need[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# The page's build tools, at pinned versions: trunk 0.21.14 (0.22 needs a newer rustc) and
# the wasm-bindgen CLI matching the wasm-bindgen of Cargo.lock (`--locked` fails for it: one
# of its locked dependencies is gone from the registry).
# Both are build tools, not the product: built without trunk's fat LTO and single codegen unit
# and at opt-level 1 (the profile settings of a `cargo install` can be overridden from the
# environment). trunk built so took 10 min of wall time beside other work (15.5 CPU-minutes),
# against 12 min alone with fat LTO, and built the page.
tool_profile=(env CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16
  CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_DEBUG=false)
wbg_version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' Cargo.lock)
if ! trunk --version 2>/dev/null | grep -q '0.21.14'; then
  say "installing trunk 0.21.14"
  "${tool_profile[@]}" cargo install --locked trunk --version 0.21.14
fi
if ! wasm-bindgen --version 2>/dev/null | grep -q "$wbg_version"; then
  say "installing wasm-bindgen-cli $wbg_version"
  "${tool_profile[@]}" cargo install wasm-bindgen-cli --version "$wbg_version"
fi

# One warm target directory outside the clone, reused by later runs.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/nvnet-target}"
mkdir -p "$CARGO_TARGET_DIR"
