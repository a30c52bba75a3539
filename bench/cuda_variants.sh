#!/usr/bin/env bash
# Training on burn-cuda (issue: native training), F=32 with the VAE at 160x192x128, batch 1:
# how long the first steps spend compiling kernels, and the step time and peak GPU memory after.
#
# Earlier leases saw no step within 230 s, one CPU core busy and the GPU idle: the first steps
# compile (NVRTC) and autotune every kernel, one at a time. A GPU machine has 16 cores, so the
# variants compile side by side here, each in its own folder with its own kernel caches:
#   f32, bf16       the release binary (burn's fusion and autotune, as shipped)
#   nofusion_f32    a build without burn's fusion (.device/nvnet-nofusion), if present
#   reference       the CUDA correctness tests (.device/cuda_reference), if present
# Stage 1 runs them together for S1 seconds. Stage 2 runs each training variant alone for S2 seconds,
# starting from the kernels it compiled and tuned in stage 1: its step times and peak memory are
# then its own. Each folder holds an empty Cargo.toml, so cubecl keeps its caches in <folder>/target
# (PTX in target/cuda, autotune choices in target/autotune); the driver's PTX-to-SASS cache goes to
# target/nvjit (CUDA_CACHE_PATH). The logs and the autotune choices are saved to $OUT.
#
# Prepared on a build machine (docs/PERFORMANCE.md gives the commands), run from the repository root
# on the GPU machine:  bash bench/cuda_variants.sh [S1] [S2]
set -u
cd "$(dirname "$0")/../.device"
S1=${1:-300}
S2=${2:-70}
T0=$(date +%s)
el() { echo "[t+$(($(date +%s) - T0))s] $*"; }
for f in nvnet nvnet-nofusion cuda_reference; do
  # xz packs the binaries a third smaller than gzip (the working tree that travels is capped)
  [ -x $f ] || [ ! -f $f.xz ] || { xz -dc $f.xz >$f 2>/dev/null ||
    python3 -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'))" $f.xz $f; chmod +x $f; }
done
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
el synth
[ -d data ] || ./nvnet synth --out data --cases 4 --seed 5 2>&1 | tail -1

VARIANTS="f32:nvnet:f32 bf16:nvnet:bf16"
[ -x nvnet-nofusion ] && VARIANTS="f32:nvnet:f32 nofusion_f32:nvnet-nofusion:f32 bf16:nvnet:bf16"

folder() { mkdir -p "v_$1" && touch "v_$1/Cargo.toml"; }
train() { # variant binary precision seconds tag
  folder "$1"
  (cd "v_$1" && CUDA_CACHE_PATH="$PWD/target/nvjit" CUDA_CACHE_MAXSIZE=4294967296 \
    timeout "$4" "../$2" --device cuda train --data ../data --out "run_$5" --precision "$3" \
    --epochs 1000 --samples-per-epoch 10 --val-every 1000 --seed 1 >"train_$5.log" 2>&1
    echo "exit $? (124: stopped by the time limit)" >>"train_$5.log")
}
sizes() { # the caches of one variant, in KiB
  (cd "v_$1" 2>/dev/null && du -sk target/cuda target/autotune target/nvjit 2>/dev/null |
    awk '{sub("target/", "", $2); printf "%s %s ", $2, $1}')
}
# Every 10 s: each folder's caches, whether a step has finished, the GPU's load and memory.
monitor() { # log name, variants
  local log=$1
  shift
  while sleep 10; do
    local line="[t+$(($(date +%s) - T0))s] gpu $(nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader)"
    for v in "$@"; do line="$line | $v: $(sizes "$v")steps $(cat v_$v/train_*.log 2>/dev/null | grep -c ' s/step')"; done
    echo "$line"
  done >"$log" &
  MON=$!
}
poll() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 >"mem_$1.log" & POLL=$!; }
peak() { kill $POLL 2>/dev/null; wait $POLL 2>/dev/null; echo "peak nvidia-smi memory.used $(sort -n "mem_$1.log" | tail -1) MiB"; }
report() { # variant tag
  local log="v_$1/train_$2.log"
  echo "== $1 ($2): $(tail -1 "$log"); caches KiB: $(sizes "$1")"
  grep -E "error|panicked" "$log" | head -3
  grep " s/step" "$log" | head -2
  grep " s/step" "$log" | tail -2 | sed 's/^/   ...  /'
  grep -E "^epoch +[0-9]+ " "$log" | tail -2
  local m="v_$1/run_$2/metrics.csv"
  [ -f "$m" ] && awk -F, 'NR>2 {n++; s+=$2} END {if (n) printf "steady: %d epochs of 10 steps, %.3f s per step (epochs 2..)\n", n, s/n/10}' "$m"
}

NAMES=$(for v in $VARIANTS; do echo -n "${v%%:*} "; done)
el "stage 1: $NAMES+ tests together for $S1 s"
monitor stage1.log $NAMES reference
for v in $VARIANTS; do
  IFS=: read -r name bin prec <<<"$v"
  train "$name" "$bin" "$prec" "$S1" first &
done
if [ -x cuda_reference ]; then
  folder reference
  (cd v_reference && NVNET_TESTDATA="$PWD/../../testdata" CUDA_CACHE_PATH="$PWD/target/nvjit" \
    timeout "$S1" ../cuda_reference --ignored cuda_reference:: --nocapture --test-threads 1 >test.log 2>&1
    echo "exit $?" >>test.log) &
fi
sleep $((S1 < 120 ? S1 / 2 : 60))
ps -eo pcpu,rss,etime,comm | grep -E "nvnet|cuda_ref" | head
wait $(jobs -p | grep -v "^$MON$") 2>/dev/null
kill $MON
awk 'NR % 3 == 0' stage1.log | tail -12
for v in $NAMES; do report "$v" first; done
[ -f v_reference/test.log ] && grep -E "max abs|^loss|worst|test result|panicked|^test |exit" v_reference/test.log | head -20

el "stage 2: each alone for $S2 s, from its caches"
for v in $VARIANTS; do
  IFS=: read -r name bin prec <<<"$v"
  poll "$name"
  train "$name" "$bin" "$prec" "$S2" again
  report "$name" again
  peak "$name"
done
el done
# The autotune choices (a few hundred KiB) come back; the compiled kernels (PTX and the driver's
# SASS, 400-440 MiB per variant on 2026-11-28) are beyond what a lease returns (16 MiB a file).
if [ -n "${OUT:-}" ]; then
  tar czf "$OUT/logs.tgz" stage1.log mem_*.log v_*/train_*.log v_*/test.log v_*/run_*/metrics.csv \
    v_*/target/autotune 2>/dev/null
  ls -l "$OUT"
fi
true
