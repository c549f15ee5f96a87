#!/usr/bin/env python3
"""Batch-1, single-thread latency of the MLPerf Tiny models: edgeopt vs onnxruntime vs LiteRT.

Measures all three in one run on the same machine and writes
bench/results/latency-<date>.json and .md (committed). Every tool gets the same
seeded random in-range input, a warm-up, then the median and p90 of N timed runs.

    python bench/latency.py [--runs 200] [--edgeopt target/release/edgeopt]

Needs the oracle venv (scripts/setup-oracles.sh) and a release build of edgeopt.
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
from ai_edge_litert.interpreter import Interpreter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.environ.get("EDGEOPT_DATA", os.path.join(ROOT, "..", "shared", "data"))
TM = os.path.join(DATA, "mlperf-tiny", "benchmark", "training")
OX = os.path.join(DATA, "mlperf-tiny", "onnx", "tf2onnx_from_tflite")

# (name, tflite path, onnx path)
MODELS = [
    ("ResNet-8 fp32", f"{TM}/image_classification/trained_models/pretrainedResnet.tflite", f"{OX}/pretrainedResnet.onnx"),
    ("ResNet-8 int8", f"{TM}/image_classification/trained_models/pretrainedResnet_quant.tflite", f"{OX}/pretrainedResnet_quant.onnx"),
    ("DS-CNN fp32 (hybrid)", f"{TM}/keyword_spotting/trained_models/kws_ref_model_float32.tflite", f"{OX}/kws_ref_model_float32.onnx"),
    ("DS-CNN int8", f"{TM}/keyword_spotting/trained_models/kws_ref_model.tflite", f"{OX}/kws_ref_model.onnx"),
    ("AD autoencoder fp32", f"{TM}/anomaly_detection/trained_models/ad01_fp32.tflite", f"{OX}/ad01_fp32.onnx"),
    ("AD autoencoder int8", f"{TM}/anomaly_detection/trained_models/ad01_int8.tflite", f"{OX}/ad01_int8.onnx"),
]


def stats(times_s):
    t = np.sort(np.array(times_s)) * 1e3
    return {"median_ms": float(np.median(t)), "p90_ms": float(t[int(0.9 * (len(t) - 1))])}


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


def bench_litert(path, warmup, runs):
    it = Interpreter(model_path=path, num_threads=1)
    it.allocate_tensors()
    d = it.get_input_details()[0]
    x = random_input(d["shape"], d["dtype"], np.random.default_rng(0))

    def call():
        it.set_tensor(d["index"], x)
        it.invoke()

    return time_calls(call, warmup, runs)


def bench_ort(path, warmup, runs):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    i = s.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in i.shape]
    dtype = {"tensor(float)": np.float32, "tensor(int8)": np.int8, "tensor(uint8)": np.uint8}[i.type]
    x = random_input(shape, dtype, np.random.default_rng(0))
    return time_calls(lambda: s.run(None, {i.name: x}), warmup, runs)


def bench_edgeopt(exe, path, warmup, runs):
    out = subprocess.run(
        [exe, "bench", path, "--threads", "1", "--warmup", str(warmup), "--runs", str(runs), "--json"],
        check=True, capture_output=True, text=True,
    ).stdout
    r = json.loads(out)
    return {"median_ms": r["median_ms"], "p90_ms": r["p90_ms"]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--edgeopt", default=os.path.join(ROOT, "target", "release", "edgeopt"))
    a = ap.parse_args()
    rows = []
    for name, tfl, onx in MODELS:
        row = {"model": name}
        row["litert"] = bench_litert(tfl, a.warmup, a.runs)
        row["onnxruntime"] = bench_ort(onx, a.warmup, a.runs)
        row["edgeopt_tflite"] = bench_edgeopt(a.edgeopt, tfl, a.warmup, a.runs)
        row["edgeopt_onnx"] = bench_edgeopt(a.edgeopt, onx, a.warmup, a.runs)
        best_ref = min(row["litert"]["median_ms"], row["onnxruntime"]["median_ms"])
        row["ratio_vs_best_ref"] = row["edgeopt_tflite"]["median_ms"] / best_ref
        rows.append(row)
        print(name, json.dumps(row), flush=True)
    date = datetime.date.today().isoformat()
    meta = {
        "date": date,
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.processor() or platform.platform()}",
        "cpu": open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0].split(":", 1)[1].strip() if os.path.exists("/proc/cpuinfo") else "",
        "threads": 1, "batch": 1, "runs": a.runs, "warmup": a.warmup,
        "onnxruntime": ort.__version__,
    }
    out = os.path.join(ROOT, "bench", "results", f"latency-{date}")
    with open(out + ".json", "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=2)
    with open(out + ".md", "w") as f:
        f.write(f"# Batch-1 single-thread latency, {date}\n\n{meta['cpu']}; median (p90) in ms over {a.runs} runs after {a.warmup} warm-up.\n")
        f.write("Command: `python bench/latency.py`\n\n")
        f.write("| model | edgeopt (.tflite) | edgeopt (.onnx) | LiteRT | onnxruntime | edgeopt / best reference |\n|---|---|---|---|---|---|\n")
        for r in rows:
            c = lambda k: f"{r[k]['median_ms']:.3f} ({r[k]['p90_ms']:.3f})"
            f.write(f"| {r['model']} | {c('edgeopt_tflite')} | {c('edgeopt_onnx')} | {c('litert')} | {c('onnxruntime')} | {r['ratio_vs_best_ref']:.2f}x |\n")
    print("wrote", out + ".md")


if __name__ == "__main__":
    main()
