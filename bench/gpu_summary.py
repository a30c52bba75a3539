"""The summary of a GPU lease (bench/gpu_run.sh) as JSON, read from its work folder's logs.

    python3 bench/gpu_summary.py /tmp/gpu full|again > summary.json
    python3 bench/gpu_summary.py --brief summary.json    # a few lines of it

The fields docs/gpu/<date>.json keeps, null where a part did not run or did not get that far,
and beside them what explains each number (the tests' results, every stage's difference, the
proxy's windows, the most expensive kernels).
"""
import gzip
import json
import pathlib
import re
import statistics
import struct
import sys

W = pathlib.Path(sys.argv[1])
MODE = sys.argv[2] if len(sys.argv) > 2 else "full"


def text(name):
    path = W / name
    return path.read_text(errors="replace") if path.exists() else ""


def floats(pattern, s):
    return [float(m) for m in re.findall(pattern, s)]


def tests(name):
    log = text(name)
    if not log:
        return None
    logits = floats(r"on cuda: max abs diff ([0-9.eE+-]+|NaN|inf)", log)
    stages = re.findall(r"^(.*): max \|flex - cuda\| ([0-9.eE+-]+|NaN|inf)", log, re.M)
    return {
        "results": dict(re.findall(r"^test cuda_reference::(\S+) \.\.\. (\w+)", log, re.M)),
        "logits_max_abs_diff": max(logits) if logits else None,
        "stages": {stage: float(d) for stage, d in stages},
        "panics": re.findall(r"panicked at .*\n.*", log)[:4],
        "exit": (re.findall(r"^exit (\d+)", log, re.M) or [None])[-1],
    }


def pids():
    out = {}
    for line in text("pids.txt").splitlines():
        name, pid = line.split()
        out[name] = pid
    return out


def memory_rows():
    rows = []
    for line in text("memory.csv").splitlines():
        parts = line.split(",")
        if len(parts) == 3 and parts[2].strip().isdigit():
            rows.append((int(parts[0]), parts[1], int(parts[2])))
    return rows


def peak_of(pid):
    values = [mib for _, p, mib in memory_rows() if p == pid]
    return max(values) if values else None


def peak_between(start, end):
    """The most memory all processes held together at one poll between two marks (the
    GPU's whole use where nvidia-smi gives no process's own)."""
    by_time = {}
    rows = memory_rows() or [
        (int(t), "all", int(mib)) for t, mib in
        (l.split(",") for l in text("memory_total.csv").splitlines()) if mib.strip().isdigit()]
    for t, _, mib in rows:
        if start <= t <= end:
            by_time[t] = by_time.get(t, 0) + mib
    return max(by_time.values()) if by_time else None


def training(name):
    log = text(f"train_{name}.log")
    if not log:
        return None
    epochs = [(int(e), float(s)) for e, s in re.findall(r"^epoch +(\d+) +([0-9.]+) s ", log, re.M)]
    steady = [s / 5 for e, s in epochs if e >= 2]  # --samples-per-epoch 5
    first = re.search(r"step 1/\d+ +([0-9.]+) s/step +([0-9.]+) s in all", log)
    errors = [l for l in log.splitlines() if re.search(r"error|panicked|out of memory", l, re.I)][:3]
    return {
        "first_step_s": float(first.group(1)) if first else None,
        "first_step_done_after_s": float(first.group(2)) if first else None,
        "epochs_of_5_steps": len(epochs),
        "step_s_median": round(statistics.median(steady), 4) if steady else None,
        "step_s_each_epoch": [round(s, 4) for s in steady],
        "peak_mib": peak_of(pids().get(name, "-")),
        "errors": errors,
    }


def monai(precision):
    log = text(f"monai_{precision}.log")
    median = floats(r"median ([0-9.]+) s", log)
    allocated = floats(r"peak allocated ([0-9.]+) GiB", log)
    phase = [l.split() for l in text("phases.txt").splitlines() if l.startswith(f"monai_{precision} ")]
    peak = peak_between(int(phase[0][1]), int(phase[0][2])) if phase else None
    return {
        "step_s_median": median[0] if median else None,
        "peak_allocated_gib": allocated[0] if allocated else None,
        "peak_mib": peak,
        "line": log.strip().splitlines()[-1][:300] if log.strip() else None,
    }


def labels(path):
    """A NIfTI label map's voxels as bytes and its data type (NIfTI-1 or -2, gzipped)."""
    raw = gzip.open(path).read()
    if struct.unpack("<i", raw[:4])[0] == 348:
        datatype = struct.unpack("<h", raw[70:72])[0]
        offset = int(struct.unpack("<f", raw[108:112])[0])
    else:
        datatype = struct.unpack("<h", raw[12:14])[0]
        offset = struct.unpack("<q", raw[168:176])[0]
    return datatype, raw[offset:]


def equal_bytes(a, b):
    """How many of two equally long label maps' voxels are equal (one byte each)."""
    try:
        import numpy as np
        return int(np.count_nonzero(np.frombuffer(a, np.uint8) == np.frombuffer(b, np.uint8)))
    except ImportError:
        return sum(x == y for x, y in zip(a, b))


def proxy():
    runs = {}
    for line in text("proxy.txt").splitlines():
        m = re.match(r"(\S+) exit (\d+) ([0-9.]+) s", line)
        if m:
            runs[m.group(1)] = {"exit": int(m.group(2)), "seconds": float(m.group(3))}
    cpu = sorted((W / "proxy" / "cpu").glob("*.nii.gz"))
    for name, run in runs.items():
        log = text(f"predict_{name}.log")
        run["windows"] = [l.strip() for l in log.splitlines() if re.search(r"window|roi", l, re.I)][:3]
        case = floats(r": ([0-9.]+) s +WT", log)
        run["case_s"] = case[0] if case else None
        if run["exit"] != 0:
            run["error"] = log.strip().splitlines()[-3:] if log.strip() else None
        mine = sorted((W / "proxy" / name).glob("*.nii.gz"))
        if name != "cpu" and cpu and mine:
            (ta, a), (tb, b) = labels(cpu[0]), labels(mine[0])
            if ta == tb == 2 and len(a) == len(b):  # uint8
                equal = equal_bytes(a, b)
                run["labels_equal_cpu"] = round(equal / len(a), 6)
                run["voxels_differing"] = len(a) - equal
    return runs


def duration_s(s):
    m = re.match(r"([0-9.]+)\s*(ns|µs|us|ms|s)", s)
    if not m:
        return 0.0
    return float(m.group(1)) * {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}[m.group(2)]


def kernels():
    log = text("profile.log")
    if not log:
        return None
    total, count = {}, {}
    for m in re.finditer(r"^\| (\S+)\s*\| (.+)$", log, re.M):
        name = re.sub(r"\s+", " ", m.group(2).strip())[:160]
        total[name] = total.get(name, 0.0) + duration_s(m.group(1))
        count[name] = count.get(name, 0) + 1
    everything = sum(total.values()) or 1.0
    top = sorted(total, key=total.get, reverse=True)[:6]
    return {
        "profiled_s": round(everything, 3),
        "top": [{"kernel": k, "s": round(total[k], 4), "share": round(total[k] / everything, 3),
                 "launches": count[k]} for k in top],
    }


def main():
    gpu = text("gpu.txt").strip() or None
    out = {"gpu": gpu, "mode": MODE}
    if MODE == "full":
        tf32, f32k = tests("tests_tf32.log"), tests("tests_f32.log")
        f32, bf16 = training("f32"), training("bf16")
        m32, m16 = monai("f32"), monai("bf16")
        px = proxy()
        warm = px.get("wgpu_warm", {})
        out.update({
            "cuda_logits_max_abs_diff": tf32 and tf32["logits_max_abs_diff"],
            "cuda_logits_max_abs_diff_f32_kernels": f32k and f32k["logits_max_abs_diff"],
            "train_step_s_f32": f32 and f32["step_s_median"],
            "monai_step_s_f32": m32["step_s_median"],
            "train_step_s_bf16": bf16 and bf16["step_s_median"],
            "monai_step_s_bf16": m16["step_s_median"],
            "peak_mib_f32": f32 and f32["peak_mib"],
            "monai_peak_mib_f32": m32["peak_mib"],
            "peak_mib_bf16": bf16 and bf16["peak_mib"],
            "monai_peak_mib_bf16": m16["peak_mib"],
            "first_step_s_f32": f32 and f32["first_step_done_after_s"],
            "first_step_s_bf16": bf16 and bf16["first_step_done_after_s"],
            "wgpu_case_s_cold": px.get("wgpu_cold", {}).get("seconds"),
            # The case as `predict` times it (read, segment, write), in a process whose autotune
            # choices the cold run left on disk; the process's whole time is in details.
            "wgpu_case_s_warm": warm.get("case_s") if warm.get("exit") == 0 else None,
            "wgpu_labels_equal_cpu": warm.get("labels_equal_cpu"),
            "details": {
                "tests_tf32": tf32, "tests_f32_kernels": f32k,
                "f32_kernels_rewrite": text("f32_kernels.txt").strip().splitlines(),
                "tests_rest": tests("tests_rest.log"), "autotune_checks": tests("checks.log"),
                "train_f32": f32, "train_bf16": bf16, "monai_f32": m32, "monai_bf16": m16,
                "proxy": px,
            },
        })
    else:
        again, bf16, profiled = training("f32_again"), training("bf16_again"), training("f32_profiled")
        out.update({
            "first_step_s_f32_cached": again and again["first_step_done_after_s"],
            "train_step_s_f32_alone": again and again["step_s_median"],
            "peak_mib_f32_alone": again and again["peak_mib"],
            "first_step_s_bf16_cached": bf16 and bf16["first_step_done_after_s"],
            "train_step_s_bf16_alone": bf16 and bf16["step_s_median"],
            "peak_mib_bf16_alone": bf16 and bf16["peak_mib"],
            "details": {"train_f32_again": again, "train_bf16_again": bf16,
                        "train_f32_profiled": profiled, "kernels": kernels()},
        })
    print(json.dumps(out, indent=1))


def brief(path):
    s = json.load(open(path))
    details = s.pop("details")
    print(json.dumps(s, separators=(",", ":")))
    for name, part in details.items():
        if isinstance(part, dict) and "results" in part:
            worst = max(part["stages"].items(), key=lambda kv: kv[1], default=None)
            print(name, part["results"], "exit", part["exit"], "worst stage", worst, part["panics"][:2])
        elif isinstance(part, dict) and part.get("errors"):
            print(name, part["errors"])
    for name, run in (details.get("proxy") or {}).items():
        print("proxy", name, {k: v for k, v in run.items() if k != "windows"}, run["windows"][:1])
    if details.get("kernels"):
        print("kernels", details["kernels"])


if __name__ == "__main__":
    if sys.argv[1] == "--brief":
        brief(sys.argv[2])
    else:
        main()
