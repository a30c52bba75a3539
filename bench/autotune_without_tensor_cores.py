"""Rewrite cubecl's autotune cache so that every tuned operation takes its fastest candidate
that does not run on tensor cores.

Burn's autotune on CUDA picks tensor-core kernels (cmma, mma, tma) for float32 convolutions and
matrix products, and those multiply in TF32 (10-bit mantissa): a network's logits then differ
from an exact float32 computation by about 1e-3. Run once with autotune, rewrite the cache with
this script, run again: the second run takes the float32 kernels (direct convolution, unit and
vector-matrix products) chosen from the timings the first run measured, and its results can be
held to float32's tolerance. The cache is read when a process starts, so the second run is a new
process. (Checked on wgpu: with the 1×1 convolutions' choices moved by hand from im2col, a matrix
product, to the direct kernel, the next run launched the direct kernel and no matrix product.)

    python3 bench/autotune_without_tensor_cores.py DIR     # DIR: a cubecl `autotune` folder

Prints how many entries were switched and how many have no other candidate that ran.
"""
import json
import pathlib
import re
import sys

TENSOR_CORES = re.compile(r"c?mma|tma")


def candidates(entry):
    for result in entry["value"]["results"]:
        ok = result.get("outcome", {}).get("Ok")
        if ok is not None:
            yield ok


def median_ns(ok):
    median = ok["computation"]["median"]
    return median["secs"] * 1_000_000_000 + median["nanos"]


def rewrite(path):
    entries, switched, stuck, lines = 0, 0, [], []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        entry = json.loads(line)
        entries += 1
        plain = [ok for ok in candidates(entry) if not TENSOR_CORES.search(ok["name"])]
        chosen = entry["value"]["fastest_index"]
        names = {ok["index"]: ok["name"] for ok in candidates(entry)}
        if TENSOR_CORES.search(names.get(chosen, "")):
            if plain:
                entry["value"]["fastest_index"] = min(plain, key=median_ns)["index"]
                switched += 1
            else:
                stuck.append(names.get(chosen))
        lines.append(json.dumps(entry, separators=(",", ":")))
    path.write_text("".join(line + "\n" for line in lines))
    return entries, switched, stuck


def main():
    root = pathlib.Path(sys.argv[1])
    files = sorted(root.rglob("*.json.log"))
    if not files:
        sys.exit(f"{root}: no autotune cache files (*.json.log)")
    for path in files:
        entries, switched, stuck = rewrite(path)
        note = f", {len(stuck)} left on tensor cores (no other candidate ran: {sorted(set(stuck))})" if stuck else ""
        print(f"{path.relative_to(root)}: {entries} entries, {switched} switched off tensor cores{note}")


if __name__ == "__main__":
    main()
