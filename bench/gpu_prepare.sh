#!/usr/bin/env bash
# Builds and packs on a CPU machine what bench/gpu_run.sh needs on the GPU machine, where
# nothing is built: the CUDA test binary, the nvnet CLI with CUDA and wgpu, MONAI's wheel
# (PyTorch is there already) and the Vulkan loader. All of it is x86-64, stripped and xz'd,
# in .device/ and .gl/ (ignored by git: name both in the lease's carry).
#
#   bash bench/gpu_prepare.sh [--checks]
#
# --checks also builds the test binary with Burn's autotune checks (every tuned kernel run and
# compared with the others; gpu_run.sh uses it only where the reference logits fail). It
# rebuilds cubecl with that feature: about ten minutes more on two cores.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/nvnet-target}
mkdir -p .device .gl
for d in /.device/ /.gl/; do grep -qxF "$d" .git/info/exclude 2>/dev/null || echo "$d" >> .git/info/exclude; done

exe() {  # the executable cargo built, from its JSON messages on stdin
  jq -r 'select(.executable != null) | .executable' | tail -1
}
pack() {  # binary, name, strip option
  strip "$3" -o "/tmp/$2" "$1"
  xz -9 -T0 -c "/tmp/$2" > ".device/$2.xz"
  # The GPU machine's glibc must be at least this (2.35 here, Debian 12; the image has run
  # binaries built here before).
  echo "$2: $(stat -c %s ".device/$2.xz") bytes, needs $(objdump -T "/tmp/$2" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1)"
}

pack "$(cargo test --locked -p nvnet --features cuda --test reference --no-run \
  --message-format=json-render-diagnostics | exe)" cuda_reference --strip-all
if [ "${1:-}" = --checks ]; then
  # Symbols kept: the checks' backtraces name the kernel and nvnet's stage.
  pack "$(cargo test --locked -p nvnet --features cuda,autotune-checks --test reference --no-run \
    --message-format=json-render-diagnostics | exe)" cuda_reference_checks --strip-debug
fi
# The dev profile builds the dependencies at opt-level 3 and shares them with the test build;
# the GPU's time goes to its kernels.
pack "$(cargo build --locked -p nvnet-cli --features cuda --message-format=json-render-diagnostics | exe)" \
  nvnet --strip-all
[ -f .device/monai-1.6.1-py3-none-any.whl ] || python3 -m pip download -q --no-deps monai==1.6.1 -d .device
if ! ls .gl/libvulkan1_*.deb >/dev/null 2>&1; then
  o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
  mkdir -p /tmp/amd64/partial
  # shellcheck disable=SC2086
  apt-get $o update -qq && (cd .gl && apt-get $o download -qq libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
fi
du -sh .device .gl
