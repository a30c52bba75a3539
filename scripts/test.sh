#!/usr/bin/env bash
# Run every nvnet test (what CI runs: .ci/run). Sets up the machine first (setup.sh), builds the
# page, builds every native test binary in one cargo invocation, lints (clippy on the CUDA build
# with -D warnings, rustfmt), then
# runs each test binary in turn. Ends with a table of the phases and their seconds, pass or fail.
#
#   bash scripts/test.sh            everything
#   bash scripts/test.sh --quick    the inner loop: no set-up, no page, no lints, no GPU
#                                   backend; the unit tests, the library's reference tests and
#                                   the CLI's quick tests
#   bash scripts/test.sh -- FILTER  passes FILTER to every test binary (e.g. a test's name)
set -uo pipefail
cd "$(dirname "$0")/.."

quick=false
filter=()
while (($#)); do
  case "$1" in
    --quick) quick=true ;;
    --) shift; filter=("$@"); break ;;
    *) echo "usage: bash scripts/test.sh [--quick] [-- FILTER...]" >&2; exit 2 ;;
  esac
  shift
done

names=(); secs=(); results=()
failed=0
started=$(date +%s)
# Each phase's output is also kept, so that a failed phase's last lines can be shown again above
# the table: a CI log that keeps only its start and end still shows why.
logs=$(mktemp -d)
table() {
  local total=$(( $(date +%s) - started ))
  {
    for i in "${!names[@]}"; do
      if [ "${results[$i]}" != ok ]; then
        echo "[test] === the last lines of: ${names[$i]}"
        tail -n 40 "$logs/$i.log"
      fi
    done
    echo "[test] phase                                  seconds  result"
    for i in "${!names[@]}"; do
      printf '[test] %-38s %7d  %s\n' "${names[$i]}" "${secs[$i]}" "${results[$i]}"
    done
    printf '[test] %-38s %7d\n' "total" "$total"
  } >&2
  rm -rf "$logs"
}
trap table EXIT

# phase NAME COMMAND...: run, time and record; a failed build phase stops the run.
phase() {
  local name=$1; shift
  local t0; t0=$(date +%s)
  echo "[test] --- $name" >&2
  local rc=0 log="$logs/${#names[@]}.log"
  : > "$log"
  if "$@" > >(tee -a "$log") 2> >(tee -a "$log" >&2); then rc=0; else rc=$?; fi
  names+=("$name"); secs+=($(( $(date +%s) - t0 )))
  if ((rc == 0)); then results+=("ok"); else results+=("FAILED (exit $rc)"); failed=1; fi
  return $rc
}

setup() { source scripts/setup.sh; }
if $quick; then
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/nvnet-target}"
else
  phase "set-up" setup || exit 1
  set +e  # setup.sh's `set -e`: a failing test binary must not stop the others
fi

# A test run builds the workspace's crates from scratch more often than not (a fresh clone, a new
# path): incremental compilation only adds work then.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

# The web page (web/ → wasm, www/), which the browser tests load from dist/.
$quick || phase "page (trunk build --release)" trunk build --release --offline=true || exit 1

# One build of every native test binary, features unified so that Burn is built once: the CLI's
# default `wgpu` (the wgpu tests run on Vulkan, llvmpipe without a GPU), named here so that the
# wgpu tests cannot drop out unseen. --lib --bins --tests: every test, without the examples.
# --quick builds the library and the CLI without any GPU backend (Burn's wgpu kernels are most of
# the library's compile time) and, of the end-to-end tests, the library's reference tests (their
# wgpu ones compile out) and the CLI's quick ones, in its own cargo profile (target/quick).
build=(--workspace --exclude nvnet-web --features nvnet/wgpu,nvnet-cli/wgpu --lib --bins --tests)
binaries="$CARGO_TARGET_DIR/test-binaries.json"
if $quick; then
  build=(-p nvnet -p nvnet-cli --no-default-features --profile quick --lib --bins
    --test reference --test cli --test data_safety)
  binaries="$CARGO_TARGET_DIR/test-binaries-quick.json"
fi
build_tests() {
  cargo test --locked "${build[@]}" --no-run --timings \
    --message-format=json-render-diagnostics > "$binaries"
}
phase "test build" build_tests || exit 1

# Clippy, which also type-checks the trainers' CUDA build, its test binary included
# (bench/gpu_prepare.sh builds it, bench/gpu_run.sh runs it on a GPU machine): burn-cuda loads the CUDA libraries
# at run time, so it checks without a GPU; a full second build of Burn with CUDA's features would
# cost more than all the tests. Then the page's engine, for wasm, in both its builds. Any warning
# fails, as does unformatted code.
lint() {
  cargo fmt --all --check &&
    cargo clippy --workspace --exclude nvnet-web --locked --features nvnet-cli/cuda --lib --bins \
      --tests --timings -- -D warnings &&
    cargo clippy -p nvnet-web --target wasm32-unknown-unknown --locked -- -D warnings &&
    cargo clippy -p nvnet-web --target wasm32-unknown-unknown --locked --features relaxed-simd \
      -- -D warnings
}
$quick || phase "fmt, clippy (CUDA build type-checked)" lint || exit 1

# The GPU lease script (bench/gpu_run.sh) rehearsed on the CPU with the test build's nvnet and
# stand-ins for nvidia-smi, the CUDA test binary and MONAI: leases are rare, and the script must
# still run when one comes.
$quick || phase "GPU lease script, dry run on the CPU" bash bench/gpu_dry_run.sh

# cubecl keeps its kernel autotune results in target/ beside the nearest Cargo.toml: each crate's
# folder, where its tests run. All three are linked to one folder in $CARGO_TARGET_DIR: it
# outlives the clone as the build does, and a choice made by the library's tests (the same
# shapes, the same devices) serves the CLI's, whose processes would tune again otherwise. A
# crate's own target/ folder, not a link, is left alone.
kernels="$CARGO_TARGET_DIR/cubecl"
mkdir -p "$kernels"
for crate in shared native-trainer tests; do
  if [ -L "$crate/target" ] || [ ! -e "$crate/target" ]; then ln -sfn "$kernels" "$crate/target"; fi
done

# A test binary as cargo runs it: from its crate's folder.
run_binary() {
  local dir=$1 exe=$2; shift 2
  (cd "$dir" && "$exe" "$@")
}
# Each test binary, in the order: the library, the CLI, the end-to-end tests (the browser last).
while IFS=$'\t' read -r _ crate kind name exe; do
  label="$crate $kind $name"
  # --show-output: what the passing tests print (measured differences, timings) is in the log.
  phase "$label" run_binary "$crate" "$exe" --show-output "${filter[@]}"
done < <(jq -r 'select(.reason == "compiler-artifact" and .profile.test and .executable != null)
  | (.manifest_path | split("/") | .[-2]) as $crate
  | [({"shared": 1, "native-trainer": 2, "tests": 3}[$crate] // 9), $crate, .target.kind[0],
     .target.name, .executable] | @tsv' "$binaries" | sort -k1,1n -k3,3 -k4,4)

if ((failed)); then
  echo "[test] FAILED" >&2
  exit 1
fi
echo "[test] all tests passed in $(( $(date +%s) - started )) s" >&2
