#!/usr/bin/env python3
"""Batch-1, single-thread latency of the int8 MLPerf Tiny models: edgeopt vs onnxruntime
vs LiteRT (default interpreter = XNNPACK delegate, and the builtin-kernels resolver).

All tools run in one invocation on the same machine, with the same seeded random
in-range int8 input, a warm-up, then `--runs` timed runs; each tool is measured in
`--rounds` interleaved rounds and the lowest round median is kept (the machine is
shared, so the best round is the least disturbed one; all rounds are in the JSON).

    python bench/latency_int8.py [--runs 500] [--rounds 3] [--edgeopt target/release/edgeopt]

edgeopt is timed in-process by `edgeopt bench` (a prepared `Session`: weights packed
once, buffers reused). LiteRT and onnxruntime are timed from Python around
`set_tensor`+`invoke` / `run`, which includes a few microseconds of Python-binding
overhead per call; `--python-overhead` reports the time of an empty Python call
for reference. Writes bench/results/latency-int8-<date>.{json,md}.
"""
import argparse
import datetime
import json
import os
import platform
import subprocess
import time

import numpy as np
import onnxruntime as ort
from ai_edge_litert.interpreter import Interpreter, OpResolverType

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.environ.get("EDGEOPT_DATA", os.path.join(ROOT, "..", "shared", "data"))
TM = os.path.join(DATA, "mlperf-tiny", "benchmark", "training")
OX = os.path.join(DATA, "mlperf-tiny", "onnx", "tf2onnx_from_tflite")

MODELS = [
    ("ResNet-8 int8", f"{TM}/image_classification/trained_models/pretrainedResnet_quant.tflite", f"{OX}/pretrainedResnet_quant.onnx"),
    ("DS-CNN int8", f"{TM}/keyword_spotting/trained_models/kws_ref_model.tflite", f"{OX}/kws_ref_model.onnx"),
    ("AD autoencoder int8", f"{TM}/anomaly_detection/trained_models/ad01_int8.tflite", f"{OX}/ad01_int8.onnx"),
]


def stats(times_s):
    t = np.sort(np.array(times_s)) * 1e3
    return {"median_ms": float(np.median(t)), "p90_ms": float(t[int(0.9 * (len(t) - 1))]), "min_ms": float(t[0])}


def time_calls(fn, warmup, runs):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return stats(ts)


def random_input(shape, dtype, rng):
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max + 1, size=shape, dtype=dtype)
    return rng.uniform(-1.0, 1.0, size=shape).astype(dtype)


def litert_fn(path, resolver):
    kw = {} if resolver is None else {"experimental_op_resolver_type": resolver}
    it = Interpreter(model_path=path, num_threads=1, **kw)
    it.allocate_tensors()
    d = it.get_input_details()[0]
    x = random_input(d["shape"], d["dtype"], np.random.default_rng(0))

    def call():
        it.set_tensor(d["index"], x)
        it.invoke()

    return call


def ort_fn(path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    i = s.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in i.shape]
    dtype = {"tensor(float)": np.float32, "tensor(int8)": np.int8, "tensor(uint8)": np.uint8}[i.type]
    x = random_input(shape, dtype, np.random.default_rng(0))
    return lambda: s.run(None, {i.name: x})


def bench_edgeopt(exe, path, warmup, runs):
    out = subprocess.run(
        [exe, "bench", path, "--threads", "1", "--warmup", str(warmup), "--runs", str(runs), "--json"],
        check=True, capture_output=True, text=True,
    ).stdout
    r = json.loads(out)
    return {"median_ms": r["median_ms"], "p90_ms": r["p90_ms"], "min_ms": r["min_ms"]}


def cpu_flags():
    if not os.path.exists("/proc/cpuinfo"):
        return set()
    for line in open("/proc/cpuinfo"):
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def best(rounds):
    return min(rounds, key=lambda s: s["median_ms"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=500)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--edgeopt", default=os.path.join(ROOT, "target", "release", "edgeopt"))
    a = ap.parse_args()
    rows = []
    py_overhead = time_calls(lambda: None, a.warmup, a.runs)["median_ms"]
    for name, tfl, onx in MODELS:
        fns = {
            "litert_xnnpack": litert_fn(tfl, None),
            "litert_builtin": litert_fn(tfl, OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES),
            "onnxruntime": ort_fn(onx),
        }
        rounds = {k: [] for k in list(fns) + ["edgeopt"]}
        for _ in range(a.rounds):
            for k, fn in fns.items():
                rounds[k].append(time_calls(fn, a.warmup, a.runs))
            rounds["edgeopt"].append(bench_edgeopt(a.edgeopt, tfl, a.warmup, a.runs))
        row = {"model": name, "rounds": rounds}
        for k in rounds:
            row[k] = best(rounds[k])
        refs = {k: row[k]["median_ms"] for k in ("litert_xnnpack", "litert_builtin", "onnxruntime")}
        fastest = min(refs, key=refs.get)
        row["fastest_reference"] = fastest
        row["ratio_vs_fastest"] = row["edgeopt"]["median_ms"] / refs[fastest]
        rows.append(row)
        print(name, json.dumps({k: v for k, v in row.items() if k != "rounds"}), flush=True)
    date = datetime.date.today().isoformat()
    cpu = ""
    if os.path.exists("/proc/cpuinfo"):
        cpu = open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0].split(":", 1)[1].strip()
    meta = {
        "date": date,
        "machine": f"{platform.machine()} {os.cpu_count()} cores",
        "cpu": cpu,
        "load_average": os.getloadavg(),
        "threads": 1, "batch": 1, "runs": a.runs, "warmup": a.warmup, "rounds": a.rounds,
        "onnxruntime": ort.__version__,
        "python_call_overhead_ms": py_overhead,
        # Which of edgeopt's kernel paths ran (EDGEOPT_KERNELS pins one; unset = the
        # best this CPU has: avx512 > avx-vnni > avx2 > portable).
        "edgeopt_kernels": os.environ.get("EDGEOPT_KERNELS", "native"),
        "cpu_flags": sorted(f for f in cpu_flags() if f.startswith(("avx512", "avx_vnni", "avx2"))),
    }
    out = os.path.join(ROOT, "bench", "results", f"latency-int8-{date}")
    for path, text in ((out + ".json", json.dumps({"meta": meta, "rows": rows}, indent=2)), (out + ".md", None)):
        if text is None:
            lines = [
                f"# Batch-1 single-thread latency of the int8 MLPerf Tiny models, {date}\n",
                f"{cpu} ({meta['machine']}); load average at the end {', '.join(f'{x:.1f}' for x in meta['load_average'])}.",
                f"Median (p90) in ms over {a.runs} runs after {a.warmup} warm-up; best of {a.rounds} interleaved rounds.",
                "Command: `python bench/latency_int8.py` (release build of edgeopt; `edgeopt bench` = prepared session, fast kernels, "
                f"`EDGEOPT_KERNELS={meta['edgeopt_kernels']}`; CPU flags: {' '.join(meta['cpu_flags'])}).",
                "LiteRT/onnxruntime times are taken from Python and include the binding overhead of one call "
                f"(an empty Python call costs {py_overhead * 1e3:.2f} µs here).\n",
                "| model | edgeopt | LiteRT (XNNPACK) | LiteRT (builtin) | onnxruntime | edgeopt / fastest |",
                "|---|---|---|---|---|---|",
            ]
            for r in rows:
                c = lambda k: f"{r[k]['median_ms']:.4f} ({r[k]['p90_ms']:.4f})"
                lines.append(f"| {r['model']} | {c('edgeopt')} | {c('litert_xnnpack')} | {c('litert_builtin')} | {c('onnxruntime')} | {r['ratio_vs_fastest']:.2f}x ({r['fastest_reference']}) |")
            text = "\n".join(lines) + "\n"
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    print("wrote", out + ".md")


if __name__ == "__main__":
    main()
