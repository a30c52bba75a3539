#!/usr/bin/env bash
# The main job. Until the web app lands, it builds the nvnet tool and describes the default
# network (the paper's F=32 NvNet with its VAE at the 160×192×128 training crop).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
# The dev profile shares the test build; Burn and its kernels are optimised in every profile.
cargo build --locked -p nvnet-cli
exec "$CARGO_TARGET_DIR/debug/nvnet" info --init-filters 32 --vae --shape 160,192,128 "$@"
