#!/usr/bin/env bash
# One GPU lease in one command (issue: the trainers' GPU). GPU time comes in short, rare windows,
# so everything runs at once where it can, each part in its own process and folder (its own
# kernel and autotune caches) under its own deadline:
#   tests   the CUDA correctness tests: the reference logits and the network stage by stage
#           first, then again with every tuned operation moved off tensor cores (float32 kernels,
#           bench/autotune_without_tensor_cores.py), then the rest (training step and GroupNorm
#           gradients against flex, reductions, upsampling, the tensor-core matmuls at odd
#           k-stage counts); the autotune-checks build only where the logits fail;
#   f32     `nvnet --device cuda train` at the paper's recipe (F=32 + VAE, 160x192x128), f32;
#   bf16    the same in bf16: compiles beside f32, is paused (SIGSTOP) once its first step is
#           done while f32 takes its timed steps, then resumes alone;
#   proxy   the page's proxy: `predict --device wgpu --gpu-limits 128M,256M` on a 240x240x155
#           phantom (cold, warm, float16) against `--device cpu`, then `--device cuda`;
#   monai   MONAI's SegResNetVAE step (f32, bf16 AMP) alone on the GPU once the others stopped.
# NVRTC compiles one kernel at a time on one CPU core per process, so the processes compile side
# by side; their timed parts are kept apart (the proxy runs while the trainings compile, f32's
# steps while bf16 is paused, MONAI alone).
#
#   bash bench/gpu_run.sh full [SECONDS]    # the whole lease (default 560 s)
#   bash bench/gpu_run.sh again [SECONDS] [f32|bf16|both]
#       later, on the same machine: a training once more with the kernels and choices of the
#       first run on disk (the cached start); f32 then again with cubecl's profiler (the
#       kernels that cost the most); both: bf16, then f32 with the profiler
#
# bench/gpu_prepare.sh builds and packs on a CPU machine what this needs (carry [".device",
# ".gl"]): .device/cuda_reference.xz (the CUDA test binary), .device/nvnet.xz (the CLI with CUDA
# and wgpu), optionally .device/cuda_reference_checks.xz (Burn's autotune checks), MONAI's wheel,
# and .gl/*.deb (the Vulkan and GL loaders, as the library's device README says).
# Writes $OUT/summary.json (bench/gpu_summary.py), $OUT/logs.tgz and $OUT/autotune.tgz.
# bench/gpu_dry_run.sh rehearses it on the CPU (the test command runs that).
set -u
MODE=${1:-full}
END=${2:-560}
REPO=$(cd "$(dirname "$0")/.." && pwd)
D=$REPO/.device
W=${GPU_WORK:-/tmp/gpu}
OUT=${OUT:-$W/out}
T0=$(date +%s)
mkdir -p "$W" "$OUT"
now() { echo $(($(date +%s) - T0)); }
el() { echo "[$(now)s] $*"; }
# The deadlines, in hundredths of END: the parts share the GPU machine's one command.
mark() { echo $((END * $1 / 100)); }
until_() { local s=$(($(mark "$1") - $(now))); ((s > 1)) && echo $s || echo 1; }  # seconds left to mark $1

# A folder of its own with a Cargo.toml: cubecl keeps its caches in ./target beside it.
workdir() {
  mkdir -p "$W/$1" && touch "$W/$1/Cargo.toml" && cd "$W/$1" || exit 2
  printf '[compilation]\ncache = "target"\n%s' "${2:-}" > cubecl.toml
}

setup() {
  for f in cuda_reference cuda_reference_checks nvnet; do
    if [ ! -x "$W/$f" ] && [ -f "$D/$f.xz" ]; then
      xz -dc "$D/$f.xz" > "$W/$f.tmp" && chmod +x "$W/$f.tmp" && mv "$W/$f.tmp" "$W/$f"
    fi
  done
  # GPU_RUN_SETUP=0 (bench/gpu_dry_run.sh): nothing installed on the machine.
  if [ "${GPU_RUN_SETUP:-1}" = 1 ] && [ -d "$REPO/.gl" ] && [ ! -f "$W/.gl-done" ]; then
    for f in "$REPO"/.gl/*.deb; do dpkg -x "$f" /; done
    ldconfig && touch "$W/.gl-done"
  fi
  local icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
  if [ -f $icd ] && ! ls /usr/share/vulkan/icd.d/nvidia* /etc/vulkan/icd.d/nvidia* >/dev/null 2>&1; then
    export VK_DRIVER_FILES=$icd
  fi
  if [ "${GPU_RUN_SETUP:-1}" = 1 ] && [ ! -d "$W/site/monai" ] && ls "$D"/monai-*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target "$W/site" "$D"/monai-*.whl
  fi
  export PYTHONPATH=$W/site
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$W/gpu.txt"
  echo "vulkan: $(ldconfig -p | grep -c libvulkan) loader(s), VK_DRIVER_FILES=${VK_DRIVER_FILES:-unset}"
}

# Each process's GPU memory, every 250 ms: "seconds,pid,MiB".
watch_memory() {
  nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits -lms 250 |
    while IFS=, read -r pid mib; do echo "$(now),${pid// /},${mib// /}"; done > "$W/memory.csv" &
  WATCH=$!
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 250 |
    while read -r mib; do echo "$(now),$mib"; done > "$W/memory_total.csv" &
  WATCH="$WATCH $!"
}

tests() {
  workdir tests
  export NVNET_TESTDATA=$REPO/testdata RUST_BACKTRACE=1
  local bin=$W/cuda_reference first="cuda_reference::monai_weights_give_reference_logits_on_cuda cuda_reference::the_reference_network_matches_flex_stage_by_stage_on_cuda"
  [ -x "$bin" ] || { echo "no cuda_reference"; return; }
  el "tests: logits and stages (TF32 where autotune picks tensor cores)"
  # shellcheck disable=SC2086
  timeout "$(until_ 36)" "$bin" --ignored $first --exact --nocapture --test-threads 1 > "$W/tests_tf32.log" 2>&1
  echo "exit $?" >> "$W/tests_tf32.log"
  cp -r target/autotune "$W/autotune_tests_tf32" 2>/dev/null
  python3 "$REPO/bench/autotune_without_tensor_cores.py" target/autotune > "$W/f32_kernels.txt" 2>&1
  el "tests: logits and stages with float32 kernels only"
  # shellcheck disable=SC2086
  timeout "$(until_ 52)" "$bin" --ignored $first --exact --nocapture --test-threads 1 > "$W/tests_f32.log" 2>&1
  echo "exit $?" >> "$W/tests_f32.log"
  # The other tests tune afresh (a copy of the tuned choices, not the rewritten ones).
  rm -rf target/autotune && cp -r "$W/autotune_tests_tf32" target/autotune 2>/dev/null
  el "tests: the others"
  # shellcheck disable=SC2086
  timeout "$(until_ 79)" "$bin" --ignored cuda_reference:: --skip training_step_memory_on_cuda \
    $(for t in $first; do echo --skip "$t"; done) --nocapture --test-threads 1 > "$W/tests_rest.log" 2>&1
  echo "exit $?" >> "$W/tests_rest.log"
  if [ -x "$W/cuda_reference_checks" ] && ! grep -q "test result: ok" "$W/tests_tf32.log" &&
    (($(now) < $(mark 77))); then
    el "tests: autotune checks (every candidate against the others)"
    workdir checks
    # shellcheck disable=SC2086
    timeout "$(until_ 82)" "$W/cuda_reference_checks" --ignored $first --exact --nocapture --test-threads 1 > "$W/checks.log" 2>&1
    echo "exit $?" >> "$W/checks.log"
  fi
  el "tests: done"
}

train() {  # precision, name (the log's and the run folder's), [profiler settings for cubecl.toml]
  workdir "$1" "${3:-}"
  exec "$W/nvnet" --device cuda train --data "$W/data" --cache "$W/$1/cache" --out "run_$2" \
    --precision "$1" --epochs 1000 --samples-per-epoch 5 --val-every 1000 --seed 1 > "$W/train_$2.log" 2>&1
}

predict() {  # name, seconds, nvnet predict's arguments
  local name=$1 limit=$2; shift 2
  local start=$(date +%s%N)
  timeout "$limit" "$W/nvnet" predict --weights default --input "$CASE" --output "$W/proxy/$name" --verbose "$@" \
    > "$W/predict_$name.log" 2>&1
  local rc=$?
  local ms=$((($(date +%s%N) - start) / 1000000))
  echo "$name exit $rc $((ms / 1000)).$(printf %03d $((ms % 1000))) s" | tee -a "$W/proxy.txt"
}

proxy() {
  workdir proxy
  predict cpu 120 --device cpu
  predict wgpu_cold "$(until_ 54)" --device wgpu --gpu-limits 128M,256M
  predict wgpu_warm "$(until_ 59)" --device wgpu --gpu-limits 128M,256M
  predict wgpu_f16 "$(until_ 64)" --device wgpu --gpu-limits 128M,256M --precision f16
  predict cuda_f32 "$(until_ 71)" --device cuda --memory-budget 2G
  predict cuda_f32_warm "$(until_ 75)" --device cuda --memory-budget 2G
  el "proxy: done"
}

monai() {  # precision
  el "monai $1"
  timeout "$(($(mark 8) + 1))" python3 "$REPO/bench/monai_train_step.py" --device cuda --vae --init-filters 32 \
    --shape 160,192,128 --steps 15 --precision "$1" --threads 8 --quiet > "$W/monai_$1.log" 2>&1 &
  local start=$(now)
  wait $!
  echo "monai_$1 $start $(now)" >> "$W/phases.txt"
  tail -1 "$W/monai_$1.log" | head -c 400; echo
}

stepped() { grep -q "s/step" "$W/train_$1.log" 2>/dev/null; }

full() {
  setup
  watch_memory
  (tests) > "$W/tests.out" 2>&1 &
  local tests_pid=$!
  el "synth: 4 phantoms 240x240x155"
  [ -d "$W/data" ] || "$W/nvnet" synth --out "$W/data" --cases 4 --seed 5 > "$W/synth.log" 2>&1
  CASE=$(find "$W/data" -mindepth 1 -maxdepth 1 -type d ! -name '.*' | sort | head -1)
  mkdir -p "$W/proxy"
  (train f32 f32) & local f32=$!
  (train bf16 bf16) & local bf16=$!
  echo "f32 $f32" >> "$W/pids.txt"; echo "bf16 $bf16" >> "$W/pids.txt"
  (proxy) > "$W/proxy.out" 2>&1 &
  local proxy_pid=$!
  echo "tests $tests_pid" >> "$W/pids.txt"; echo "proxy $proxy_pid" >> "$W/pids.txt"
  # The first training to finish its first step takes its timed steps (mark 11: 60 s of a
  # 560-s lease); the other is paused (SIGSTOP) once its own first step is done, then resumes
  # alone for its timed steps.
  declare -A pid=([f32]=$f32 [bf16]=$bf16) first=()
  local timing="" since=0 paused=""
  while (($(now) < $(mark 82))); do
    sleep 2
    for p in f32 bf16; do
      if [ -z "${first[$p]:-}" ] && stepped $p; then
        first[$p]=$(now)
        if [ -z "$timing" ]; then
          timing=$p since=$(now); el "$p: first step done, timed steps"
        else
          kill -STOP "${pid[$p]}"; paused=$p; el "$p: first step done, paused while $timing is timed"
        fi
      fi
    done
    if [ -n "$timing" ] && (($(now) - since >= $(mark 11))); then
      kill -9 "${pid[$timing]}"; el "$timing: stopped after its timed steps"; timing=""
      if [ -n "$paused" ]; then
        kill -CONT "${pid[$paused]}"; timing=$paused since=$(now) paused=""; el "$timing: resumed alone, timed steps"
      fi
    fi
    if ! kill -0 $tests_pid 2>/dev/null && ! kill -0 $proxy_pid 2>/dev/null &&
      ! kill -0 $f32 2>/dev/null && ! kill -0 $bf16 2>/dev/null; then break; fi
  done
  kill -CONT $bf16 $f32 2>/dev/null
  kill -9 $f32 $bf16 2>/dev/null
  kill $tests_pid $proxy_pid 2>/dev/null
  pkill -f cuda_reference; pkill -f "nvnet predict"
  sleep 3
  el "all stopped; MONAI alone"
  monai f32
  monai bf16
  kill $WATCH 2>/dev/null; pkill -f "nvidia-smi --query" 2>/dev/null
  report
}

again() {  # what to run again: f32 (then profiled), bf16, or both (bf16, then f32 profiled)
  local what=${1:-f32}
  setup
  watch_memory
  if [ "$what" != f32 ]; then
    el "bf16 again, the caches of the first run on disk"
    timed_training bf16 bf16_again "$([ "$what" = bf16 ] && echo $((END - 25)) || mark 45)"
  fi
  if [ "$what" != bf16 ]; then
    if [ "$what" = f32 ]; then
      el "f32 again, the caches of the first run on disk"
      timed_training f32 f32_again "$(mark 60)"
    fi
    el "f32 with cubecl's profiler"
    timed_training f32 f32_profiled $((END - 25)) \
      $'[profiling.logger]\nlevel = "basic"\nfile = "'"$W"'/profile.log"\n'
    workdir f32  # its cubecl.toml without the profiler again
  fi
  kill $WATCH 2>/dev/null; pkill -f "nvidia-smi --query" 2>/dev/null
  report
}

timed_training() {  # precision, name, until (seconds from the start), [cubecl.toml extra]
  (train "$1" "$2" "${4:-}") &
  local p=$!
  echo "$2 $p" >> "$W/pids.txt"
  while (($(now) < $3)) && kill -0 $p 2>/dev/null; do sleep 2; done
  kill -9 $p 2>/dev/null; wait $p 2>/dev/null
}

report() {
  cd "$W" || exit 2
  tar czf "$OUT/autotune.tgz" $(find . -path '*/target/autotune' -type d) autotune_tests_tf32 2>/dev/null
  tar czf "$OUT/logs.tgz" --exclude='*.nii.gz' --exclude=profile.log ./*.log ./*.txt ./*.csv ./*.out ./*/run_*/metrics.csv 2>/dev/null
  python3 "$REPO/bench/gpu_summary.py" "$W" "$MODE" > "$OUT/summary.json"
  # The reply shows the end of the output: the numbers, each test's result, each part's errors.
  python3 "$REPO/bench/gpu_summary.py" --brief "$OUT/summary.json"
}

case $MODE in
  full) full ;;
  again) again "${3:-f32}" ;;
  *) echo "usage: $0 full|again [SECONDS] [f32|bf16|both]"; exit 2 ;;
esac
