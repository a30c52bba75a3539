#!/usr/bin/env bash
# bench/gpu_run.sh rehearsed on the CPU, so that the lease script keeps working between the rare
# GPU leases (the test command runs this): nvidia-smi and the CUDA test binary are stand-ins,
# `nvnet` runs on the CPU with small shapes (cuda and wgpu become cpu, bf16 and f16 become f32;
# training steps of about 0.1 s, so that a busy machine still fits two epochs in the 4-s window),
# and MONAI fails for want of PyTorch. Checks that every part ran, in the order and under the
# deadlines the script sets, and that the summary holds the numbers docs/gpu keeps.
#
#   bash bench/gpu_dry_run.sh [NVNET]     # NVNET: a built nvnet (default: the test build's)
set -euo pipefail
cd "$(dirname "$0")/.."
nvnet=$(realpath "${1:-${CARGO_TARGET_DIR:-$HOME/.cache/nvnet-target}/debug/nvnet}")
[ -x "$nvnet" ] || { echo "no nvnet at $nvnet (build it first)" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/bin" "$work/gpu"

# A GPU of which every nvnet process uses 100 MiB.
cat > "$work/bin/nvidia-smi" <<'EOF'
#!/usr/bin/env bash
case "$*" in
  *compute-apps*) while sleep 0.25; do for p in $(pgrep -f nvnet-dry); do echo "$p, 100"; done; done ;;
  *memory.used*) while sleep 0.25; do echo 1000; done ;;
  *) echo "Dry run (CPU), 0 MiB, none" ;;
esac
EOF
# The CUDA test binary: what the real one prints, and one tuned choice on a tensor core.
cat > "$work/gpu/cuda_reference" <<'EOF'
#!/usr/bin/env bash
for t in "$@"; do case $t in *::*) echo "test $t ... ok" ;; esac; done
echo "segresnet_f8/model.pt on cuda: max abs diff 1e-3"
echo "encoder 0: max |flex - cuda| 1e-4 at flat index 3 (max |flex| 1e0)"
echo "test result: ok. 2 passed"
dir=target/autotune/0.10.0/dry && mkdir -p $dir
echo '{"key":{"key":1,"checksum":"c"},"value":{"fastest_index":1,"results":[{"outcome":{"Ok":{"name":"simple_sync_cmma","index":1,"computation":{"median":{"secs":0,"nanos":10}}}}},{"outcome":{"Ok":{"name":"conv_direct","index":0,"computation":{"median":{"secs":0,"nanos":30}}}}}]}}' > $dir/conv.json.log
EOF
# nvnet on the CPU.
cat > "$work/gpu/nvnet" <<EOF
#!/usr/bin/env bash
args=(); skip=0
for a in "\$@"; do
  if ((skip)); then skip=0; continue; fi
  case "\$a" in
    cuda|wgpu) args+=(cpu) ;;
    bf16|f16) args+=(f32) ;;
    --gpu-limits|--memory-budget) skip=1 ;;
    *) args+=("\$a") ;;
  esac
done
case " \$* " in
  *" synth "*) args+=(--shape 48,48,32) ;;
  *" train "*) args+=(--crop 16,16,16 --init-filters 8) ;;
esac
exec -a nvnet-dry "$nvnet" "\${args[@]}"
EOF
chmod +x "$work/bin/nvidia-smi" "$work/gpu/cuda_reference" "$work/gpu/nvnet"

export PATH="$work/bin:$PATH" GPU_WORK="$work/gpu" GPU_RUN_SETUP=0
OUT="$work/full" bash bench/gpu_run.sh full 45 > "$work/full.log" 2>&1 || { cat "$work/full.log"; exit 1; }
OUT="$work/again" bash bench/gpu_run.sh again 30 f32 > "$work/again.log" 2>&1 || { cat "$work/again.log"; exit 1; }
# On failure the logs come first and the reason last, where a truncated CI log still shows it.
python3 - "$work" > "$work/check.txt" 2>&1 <<'EOF' || { cat "$work/full.log" "$work/again.log" "$work/check.txt"; exit 1; }
import json, sys
work = sys.argv[1]
full = json.load(open(f"{work}/full/summary.json"))
again = json.load(open(f"{work}/again/summary.json"))
want = {
    "cuda_logits_max_abs_diff": full, "cuda_logits_max_abs_diff_f32_kernels": full,
    "train_step_s_f32": full, "train_step_s_bf16": full, "peak_mib_f32": full,
    "wgpu_case_s_cold": full, "wgpu_case_s_warm": full, "wgpu_labels_equal_cpu": full,
    "train_step_s_f32_alone": again,
}
missing = [k for k, s in want.items() if s.get(k) is None]
assert not missing, f"no value for {missing}"
rewrite = full["details"]["f32_kernels_rewrite"]
assert any("1 switched off tensor cores" in line for line in rewrite), rewrite
proxy = full["details"]["proxy"]
assert all(run["exit"] == 0 for run in proxy.values()) and len(proxy) == 6, proxy
assert full["wgpu_labels_equal_cpu"] == 1.0, full["wgpu_labels_equal_cpu"]
for key in ("gpu", "monai_step_s_f32", "train_step_s_bf16"):
    print(f"{key}: {full[key]}")
print("the lease script ran every part; its summary has the numbers docs/gpu keeps")
EOF
cat "$work/check.txt"
