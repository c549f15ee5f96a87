#!/usr/bin/env python3
"""edgeopt PTQ vs onnxruntime quantize_static on the MLPerf Tiny ResNet-8.

Same fp32 model (pretrainedResnet.onnx, tf2onnx), same 500 MLPerf calibration images
(calibration_samples.txt matched by file name to ../shared/data/cifar10), accuracy on
all 10,000 CIFAR-10 test images:

- onnxruntime.quantization.quantize_static, QDQ, int8 activations and per-channel
  int8 weights, calibration MinMax / Entropy / Percentile (scripts/oracle/
  ort_quantize_static.py); evaluated in onnxruntime (CPU EP, default graph
  optimizations).
- edgeopt quantize with --method minmax / percentile / entropy / mse (int8,
  per-channel), evaluated by edgeopt's own integer kernels (`--eval-data`).

Writes bench/results/quant-vs-ort-<date>.{json,md}.

    python bench/quant_vs_ort.py [--edgeopt target/release/edgeopt] [--limit N]
"""
import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.environ.get("EDGEOPT_DATA", os.path.join(ROOT, "..", "shared", "data"))
IC = os.path.join(DATA, "mlperf-tiny", "benchmark", "training", "image_classification")
MODEL = os.path.join(DATA, "mlperf-tiny", "onnx", "tf2onnx_from_tflite", "pretrainedResnet.onnx")
CIFAR = os.path.join(DATA, "cifar10")


def lines(p):
    with open(p) as f:
        return [l.strip() for l in f if l.strip()]


def ort_accuracy(model, x, y, batch=500):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    # Exact int8 products on x86 without VNNI (see scripts/oracle/ort_options.py).
    so.add_session_config_entry("session.x64quantprecision", "1")
    s = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    correct = 0
    for i in range(0, len(x), batch):
        out = s.run(None, {name: x[i : i + batch]})[0]
        correct += int((out.argmax(1) == y[i : i + batch]).sum())
    return 100.0 * correct / len(x)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--edgeopt", default=os.path.join(ROOT, "target", "release", "edgeopt"))
    ap.add_argument("--limit", type=int, default=None, help="evaluate on the first N test images")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    a = ap.parse_args()

    x = np.load(os.path.join(CIFAR, "test_x.npy"))
    y = np.load(os.path.join(CIFAR, "test_y.npy")).astype(np.int64)
    names = lines(os.path.join(CIFAR, "test_filenames.txt"))
    select = lines(os.path.join(IC, "calibration_samples.txt"))
    index = {n: i for i, n in enumerate(names)}
    rows = [index[s] for s in select]
    assert len(rows) == 500
    n = a.limit or len(x)
    xf = x[:n].astype(np.float32)  # the fp32 model takes raw 0..255 pixels
    yn = y[:n]

    results = {"float": {}, "onnxruntime": {}, "edgeopt": {}}
    with tempfile.TemporaryDirectory() as d:
        calib = os.path.join(d, "calib.npy")
        np.save(calib, x[rows].astype(np.float32))
        results["float"]["onnxruntime"] = ort_accuracy(MODEL, xf, yn)
        for method in ["MinMax", "Entropy", "Percentile"]:
            out = os.path.join(d, f"ort_{method}.onnx")
            t0 = time.time()
            subprocess.run(
                [sys.executable, os.path.join(ROOT, "scripts", "oracle", "ort_quantize_static.py"), MODEL, calib, out, "--method", method],
                check=True,
            )
            secs = time.time() - t0
            acc = ort_accuracy(out, xf, yn)
            results["onnxruntime"][method] = {"accuracy": acc, "quantize_seconds": secs}
            print(f"onnxruntime {method}: {acc:.2f}%", file=sys.stderr)
        names_file = os.path.join(CIFAR, "test_filenames.txt")
        select_file = os.path.join(IC, "calibration_samples.txt")
        for method, extra in [
            ("minmax", []),
            ("percentile", []),
            ("entropy", []),
            ("mse", []),
            ("minmax+bias-correction", ["--bias-correction"]),
        ]:
            m = method.split("+")[0]
            cmd = [
                a.edgeopt, "quantize", MODEL,
                "--calib", os.path.join(CIFAR, "test_x.npy"),
                "--calib-names", names_file, "--calib-select", select_file,
                "--method", m,
                "--eval-data", os.path.join(CIFAR, "test_x.npy"),
                "--eval-labels", os.path.join(CIFAR, "test_y.npy"),
                "--json",
            ] + extra
            if a.limit:
                cmd += ["--eval-limit", str(a.limit)]
            t0 = time.time()
            r = subprocess.run(cmd, check=True, capture_output=True, text=True)
            secs = time.time() - t0
            s = json.loads(r.stdout)
            results["edgeopt"][method] = {"accuracy": s["quantized_accuracy"], "seconds_incl_eval": secs}
            results["float"]["edgeopt"] = s["float_accuracy"]
            print(f"edgeopt {method}: {s['quantized_accuracy']:.2f}%", file=sys.stderr)

    best_ort = max(v["accuracy"] for v in results["onnxruntime"].values())
    best_eo = max(v["accuracy"] for v in results["edgeopt"].values())
    date = datetime.date.today().isoformat()
    meta = {
        "date": date,
        "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cpus".strip(),
        "onnxruntime": ort.__version__,
        "model": os.path.relpath(MODEL, DATA),
        "calibration": "500 MLPerf Tiny calibration images (calibration_samples.txt)",
        "test_images": int(n),
        "best_onnxruntime": best_ort,
        "best_edgeopt": best_eo,
        "edgeopt_minmax_ge_best_onnxruntime": results["edgeopt"]["minmax"]["accuracy"] >= best_ort,
    }
    out = {"meta": meta, "results": results}
    os.makedirs(a.out, exist_ok=True)
    base = os.path.join(a.out, f"quant-vs-ort-{date}")
    with open(base + ".json.tmp", "w") as f:
        json.dump(out, f, indent=2)
    os.replace(base + ".json.tmp", base + ".json")
    md = [
        f"# edgeopt PTQ vs onnxruntime quantize_static — ResNet-8 (MLPerf Tiny), {date}",
        "",
        f"Machine: {meta['machine']}; onnxruntime {ort.__version__}. Model `{meta['model']}` (fp32), "
        f"calibration on the 500 MLPerf calibration images, top-1 on {n} CIFAR-10 test images. "
        "int8 activations (asymmetric, per tensor), int8 weights (symmetric, per channel).",
        "",
        "| tool | calibration | top-1 % |",
        "|---|---|---|",
        f"| float (onnxruntime) | - | {results['float']['onnxruntime']:.2f} |",
        f"| float (edgeopt) | - | {results['float']['edgeopt']:.2f} |",
    ]
    for k, v in results["onnxruntime"].items():
        md.append(f"| onnxruntime quantize_static (QDQ, per-channel) | {k} | {v['accuracy']:.2f} |")
    for k, v in results["edgeopt"].items():
        md.append(f"| edgeopt quantize (integer kernels) | {k} | {v['accuracy']:.2f} |")
    md += [
        "",
        f"Best onnxruntime: {best_ort:.2f}%; best edgeopt: {best_eo:.2f}%. "
        "Reference: the MLPerf int8 model (TFLite converter PTQ) scores 86.97%.",
        "",
        "Reproduce: `python bench/quant_vs_ort.py --edgeopt target/release/edgeopt`.",
        "",
    ]
    with open(base + ".md.tmp", "w") as f:
        f.write("\n".join(md))
    os.replace(base + ".md.tmp", base + ".md")
    print("\n".join(md))


if __name__ == "__main__":
    main()
