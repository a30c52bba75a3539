#!/usr/bin/env bash
# The CUDA correctness tests alone, first thing on a GPU lease (issue: native training): the
# reference logits, the network stage by stage against flex, fused reductions and GroupNorm at
# the network's shapes (burn#5202, the lead for the 1.56 logits difference), a training step.
#
# Prepared on a build machine (the test binary is built by the CI test command too):
#   cargo test --locked -p nvnet --features cuda --test reference --no-run
#   mkdir -p .device && cp <the test binary it names> .device/cuda_reference
#   strip .device/cuda_reference && xz -9e .device/cuda_reference
# Run on the GPU machine from the repository root (carry [".device"]):
#   bash bench/cuda_tests.sh [SECONDS]
# Prints a summary: each test's result, every stage's difference, and only those fused-reduction
# cases that differ by more than 1e-4 (with the index of the worst element: 0 confirms #5202).
# The whole log and the autotune choices go to $OUT when that is set.
set -u
cd "$(dirname "$0")/../.device" || exit 2
LIMIT=${1:-240}
if [ ! -x cuda_reference ] && [ -f cuda_reference.xz ]; then
  xz -dkc cuda_reference.xz > cuda_reference.tmp && chmod +x cuda_reference.tmp &&
    mv cuda_reference.tmp cuda_reference || { echo "cannot unpack cuda_reference.xz (xz?)"; exit 2; }
fi
[ -x cuda_reference ] || { echo "no .device/cuda_reference (see the header)"; exit 2; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
start=$(date +%s)
NVNET_TESTDATA="$PWD/../testdata" timeout "$LIMIT" ./cuda_reference --ignored cuda_reference:: \
  --nocapture --test-threads 1 >cuda_tests.log 2>&1
rc=$?
echo "exit $rc after $(( $(date +%s) - start )) s"
awk '
  /^test |test result|panicked|departs/ { print; next }
  /max \|flex - / { print; next }
  /max abs diff/ {
    split($0, parts, "max abs diff "); split(parts[2], v, " ");
    if (v[1] + 0 > 1e-4 || v[1] ~ /inf|NaN/ || $0 ~ /on cuda/) print
  }' cuda_tests.log | head -80
if [ -n "${OUT:-}" ]; then
  cp cuda_tests.log "$OUT/"
  tar czf "$OUT/autotune.tgz" -C .. $(cd .. && find . -path '*/target/autotune' -type d | head -5) 2>/dev/null
fi
true
