#!/usr/bin/env bash
# Training on burn-cuda against MONAI's SegResNetVAE on the same GPU (issue: native training):
# F=32 with the VAE at 160x192x128, batch 1, f32 then bf16, step time and peak GPU memory.
#
# Prepared on a build machine, run on the GPU machine from the repository root:
#   cargo build --release --locked -p nvnet-cli --features cuda
#   mkdir -p .device && cp $CARGO_TARGET_DIR/release/nvnet .device/ && strip .device/nvnet
#   python3 -m pip download --no-deps monai==1.6.1 -d .device     # PyTorch is already there
#   # optional, the CUDA correctness tests (reference logits, a training step against flex):
#   cargo test --locked -p nvnet --features cuda --test reference --no-run
#   cp <the test binary it names> .device/cuda_reference && strip .device/cuda_reference
#   bash bench/cuda_train.sh [SECONDS_F32] [SECONDS_BF16] [SECONDS_TESTS] [SECONDS_F32_AGAIN] [SECONDS_MONAI]
# 0 seconds skips that part (e.g. MONAI, already measured on an H200: `... 480 0 0 0 0` gives the
# first f32 run the whole command).
#
# The first steps on burn-cuda compile and autotune every kernel (no step had finished after
# 230 s on an H200, 2026-11-28). nvnet keeps the compiled kernels (PTX, target/cuda) and cubecl
# the autotuning choices (target/autotune) beside the nearest Cargo.toml, the repository here.
# bench/cuda_variants.sh (which measured the step time, 2026-11-28) compiles variants side by side.
# So the f32 run is made twice: the second starts with what the first compiled and tuned, which
# shows whether the time went to compiling. Every 10 s the size of both caches is logged beside
# the GPU's utilisation. The autotune choices are saved to $OUT when that is set.
set -u
cd "$(dirname "$0")/../.device"
# Within one 600-s command: MONAI ~70 s, setup ~20 s, then these.
F32=${1:-200}
BF16=${2:-90}
TESTS=${3:-60}
AGAIN=${4:-100}
MONAI=${5:-180}  # both precisions, each at most half
T0=$(date +%s)
el() { echo "[t+$(( $(date +%s) - T0 ))s] $*"; }
for f in nvnet cuda_reference; do
  [ -x $f ] || [ ! -f $f.gz ] || { gunzip -c $f.gz > $f && chmod +x $f; }
done
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -m pip install -q --no-deps ./monai-*.whl 2>&1 | tail -1
python3 -c "import torch, monai; print('torch', torch.__version__, 'monai', monai.__version__)"

# Peak GPU memory of a phase: nvidia-smi every 100 ms while it runs (the GPU is otherwise idle).
poll() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > mem_$1.log & POLL=$!; }
peak() { kill $POLL 2>/dev/null; wait $POLL 2>/dev/null; echo "$1: peak nvidia-smi memory.used $(sort -n mem_$1.log | tail -1) MiB"; }
# The kernel caches growing (compiling) against the GPU working, every 10 s.
watch_caches() {
  while sleep 10; do
    echo "[cache] $(du -sk ../target/cuda ../target/autotune 2>/dev/null | awk '{printf "%s %s KiB  ", $2, $1}')gpu $(nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader)"
  done > cache_$1.log & WATCH=$!
}

el synth
[ -d data ] || ./nvnet synth --out data --cases 4 --seed 5 2>&1 | tail -1

for p in f32 bf16; do
  [ "$MONAI" = 0 ] && break
  el "monai $p"
  poll monai_$p
  timeout $((MONAI / 2)) python3 ../bench/monai_train_step.py --device cuda --vae --init-filters 32 \
    --shape 160,192,128 --steps 20 --precision $p --threads 8 --quiet 2>&1 | tail -2
  peak monai_$p
done

# After every run, so that a command cut off by its time limit still brings them back.
save_caches() {
  # The compiled kernels (target/cuda, ~60 MB) are beyond what a lease returns (16 MiB a file).
  [ -d ../target/autotune ] && tar czf "$OUT/cubecl-autotune.tgz" -C .. target/autotune
}
train() {  # precision, seconds, run name
  local r=${3:-$1}
  [ "$2" = 0 ] && return   # `timeout 0` would mean no limit
  el "nvnet train --device cuda --precision $1 (the paper's recipe: F=32, VAE, 160x192x128) -> run_$r"
  poll nvnet_$r
  watch_caches $r
  rm -rf run_$r
  timeout "$2" ./nvnet --device cuda train --data data --out run_$r --precision "$1" \
    --epochs 1000 --samples-per-epoch 10 --val-every 1000 --seed 1 > train_$r.log 2>&1
  local rc=$?
  echo "exit $rc (124: stopped by the time limit, as planned)"
  [ $rc = 124 ] || tail -3 train_$r.log
  kill $WATCH 2>/dev/null; wait $WATCH 2>/dev/null
  peak nvnet_$r
  head -2 cache_$r.log; echo ...; tail -2 cache_$r.log
  grep -E "step|^epoch" train_$r.log | head -4
  echo ...
  grep -E "step|^epoch" train_$r.log | tail -3
  [ -f run_$r/metrics.csv ] && awk -F, 'NR>2 {n++; s+=$2} END {if (n) printf "steady: %d epochs of 10 steps, %.3f s per step (epochs 2..)\n", n, s/n/10}' run_$r/metrics.csv
  if [ -n "${OUT:-}" ]; then cp train_$r.log cache_$r.log "$OUT/"; cp run_$r/metrics.csv "$OUT/metrics_$r.csv" 2>/dev/null; save_caches; fi
}
train f32 "$F32"
train f32 "$AGAIN" f32_again   # with the kernels the first run compiled and tuned
train bf16 "$BF16"
if [ -x cuda_reference ] && [ "$TESTS" != 0 ]; then
  el "cuda reference tests"
  NVNET_TESTDATA="$PWD/../testdata" timeout "$TESTS" ./cuda_reference --ignored cuda_reference:: --nocapture --test-threads 1 2>&1 |
    grep -E "max abs|^loss|worst|test result|panicked|^test " | head -20
fi
el done
[ -n "${OUT:-}" ] && save_caches
true
