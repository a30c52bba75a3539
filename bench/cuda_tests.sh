#!/usr/bin/env bash
# The CUDA correctness tests alone, first thing on a GPU lease (issue: native training): the
# reference logits, the network stage by stage against flex, reductions and GroupNorm at the
# network's shapes, the tensor-core matmuls at odd k-stage counts (vendor/cubek-matmul), a
# training step, GroupNorm's gradients; then, alone, the memory a training step at the paper's
# recipe keeps (and GroupNorm + ReLU's share of it). Then, where it was carried, the same logits and stages with Burn's autotune
# checks: every convolution and fused kernel runs all its candidates and panics where one
# disagrees with the last candidate, its backtrace naming the operation and nvnet's stage
# (matmuls and reductions are not compared by these checks; the matmul test above covers those).
#
# Prepared on a build machine (CI only type-checks the CUDA build; this builds it):
#   cargo test --locked -p nvnet --features cuda --test reference --no-run
#   mkdir -p .device && cp <the test binary it names> .device/cuda_reference
#   strip .device/cuda_reference && xz -9e .device/cuda_reference
#   cargo test --locked -p nvnet --features cuda,autotune-checks --test reference --no-run
#   cp <the test binary it names> .device/cuda_reference_checks
#   strip --strip-debug .device/cuda_reference_checks && xz -9e .device/cuda_reference_checks
#   (--strip-debug keeps the symbols the backtrace needs)
# Run on the GPU machine from the repository root (carry [".device"]):
#   bash bench/cuda_tests.sh [SECONDS [CHECK_SECONDS [MEMORY_SECONDS]]]
# Prints a summary: each test's result, every stage's difference, and only those reduction
# cases that differ by more than 1e-4 (with the index of the worst element); for the checks,
# the panic and the backtrace frames of Burn's kernels and of nvnet. A matmul case that fails
# prints its kernel and k.
# The whole logs and the autotune choices go to $OUT when that is set.
set -u
cd "$(dirname "$0")/../.device" || exit 2
LIMIT=${1:-240}
CHECK_LIMIT=${2:-300}
MEMORY_LIMIT=${3:-420}
unpack() {
  if [ ! -x "$1" ] && [ -f "$1.xz" ]; then
    xz -dkc "$1.xz" > "$1.tmp" && chmod +x "$1.tmp" && mv "$1.tmp" "$1" ||
      { echo "cannot unpack $1.xz (xz?)"; exit 2; }
  fi
}
unpack cuda_reference
unpack cuda_reference_checks
[ -x cuda_reference ] || { echo "no .device/cuda_reference (see the header)"; exit 2; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
start=$(date +%s)
NVNET_TESTDATA="$PWD/../testdata" timeout "$LIMIT" ./cuda_reference --ignored cuda_reference:: \
  --skip cuda_reference::training_step_memory_on_cuda \
  --nocapture --test-threads 1 >cuda_tests.log 2>&1
rc=$?
echo "exit $rc after $(( $(date +%s) - start )) s"
# The memory of a step at the paper's recipe (F=32 + VAE, 160×192×128) alone: its first step
# compiles and autotunes new shapes, so it gets its own limit and cannot starve the tests above.
start=$(date +%s)
NVNET_TESTDATA="$PWD/../testdata" timeout "$MEMORY_LIMIT" ./cuda_reference --ignored \
  cuda_reference::training_step_memory_on_cuda --nocapture --test-threads 1 >>cuda_tests.log 2>&1
memory_rc=$?
echo "memory test: exit $memory_rc after $(( $(date +%s) - start )) s"
awk '
  /^test |test result|panicked|departs/ { print; next }
  /residual block|^training step F=/ { print; next }
  /max \|flex - / { print; next }
  /relative error/ {
    split($0, parts, "relative error "); if (parts[2] + 0 > 1e-4 || parts[2] ~ /inf|NaN/) print; next
  }
  /does not run here/ { skipped++; next }
  END { if (skipped) print skipped " matmul cases do not run on this GPU" }
  /max abs diff/ {
    split($0, parts, "max abs diff "); split(parts[2], v, " ");
    if (v[1] + 0 > 1e-4 || v[1] ~ /inf|NaN/ || $0 ~ /on cuda/) print
  }' cuda_tests.log | head -80
if [ -x cuda_reference_checks ]; then
  echo "--- with autotune checks (limit ${CHECK_LIMIT} s)"
  start=$(date +%s)
  NVNET_TESTDATA="$PWD/../testdata" RUST_BACKTRACE=1 timeout "$CHECK_LIMIT" ./cuda_reference_checks \
    --ignored cuda_reference::monai_weights_give_reference_logits_on_cuda \
    cuda_reference::the_reference_network_matches_flex_stage_by_stage_on_cuda \
    --nocapture --test-threads 1 >cuda_checks.log 2>&1
  checks_rc=$?
  echo "exit $checks_rc after $(( $(date +%s) - start )) s"
  # The panic, its first mismatches, and the frames that say which kernel and which stage.
  awk '
    /^test |test result|panicked|Tensors are not|Shape is different|more errors|max \|flex - / { print; n = 0; next }
    /=> Position/ && n++ < 6 { print; next }
    /[0-9]+: .*(burn_cubecl[a-z_]*::kernel|burn_cubecl_fusion::optim|cubek|nvnet::|reference::)/ { print }
  ' cuda_checks.log | head -80
fi
if [ -n "${OUT:-}" ]; then
  cp cuda_tests.log "$OUT/"
  [ -f cuda_checks.log ] && cp cuda_checks.log "$OUT/"
  tar czf "$OUT/autotune.tgz" -C .. $(cd .. && find . -path '*/target/autotune' -type d | head -5) 2>/dev/null
fi
# The tests' status: non-zero when any of the runs above failed or ran out of time.
status=0
for r in "$rc" "$memory_rc" "${checks_rc:-0}"; do ((r == 0)) || status=1; done
echo "cuda tests: $( ((status == 0)) && echo passed || echo FAILED)"
exit $status
