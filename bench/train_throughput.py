#!/usr/bin/env python3
"""Training throughput and accuracy of edgeopt's training engine (burn 0.22, flex CPU
backend), batch 64, 2 threads.

Runs `edgeopt train` (the CLI binary; crates/cli/src/train.rs):

  throughput (one epoch each, samples/s and epoch wall time, plus test accuracy):
    - LeNet-5 on MNIST (60,000 training images)
    - ResNet-8 (MLPerf Tiny, from scratch) on CIFAR-10 train20k (20,000 images)
    - the MLPerf pretrained ResNet-8 fine-tuned for 1 epoch at a low learning rate
      (must stay >= 86.5% on the CIFAR-10 test set)
  --full: the Deep Compression baselines trained to completion
    - LeNet-300-100 on MNIST (target >= 98.2%)
    - LeNet-5 on MNIST (target >= 99.0%)

Writes bench/results/train-<date>.json and .md (commit them). Each entry records
its exact command.

    cargo build --release -p edgeopt --bin edgeopt
    python bench/train_throughput.py [--bin target/release/edgeopt] [--full]
"""
import argparse
import datetime
import json
import os
import platform
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.environ.get("EDGEOPT_DATA", os.path.join(ROOT, "..", "shared", "data"))
RESNET = os.path.join(DATA, "mlperf-tiny", "onnx", "tf2onnx_from_tflite", "pretrainedResnet.onnx")

COMMON = ["--batch-size", "64", "--threads", "2", "--seed", "1", "--quiet"]

RUNS = [
    ("throughput", "LeNet-5 / MNIST, 1 epoch",
     ["--arch", "lenet5", "--dataset", f"{DATA}/mnist", "--epochs", "1", "--lr", "0.05"]),
    ("throughput", "ResNet-8 (from scratch) / CIFAR-10 train20k, 1 epoch",
     ["--arch", "resnet8", "--dataset", f"{DATA}/cifar10", "--epochs", "1", "--lr", "0.05",
      "--augment", "crop,flip"]),
    ("throughput", "ResNet-8 MLPerf pretrained, fine-tune 1 epoch (AdamW 2e-5) / CIFAR-10 train20k",
     ["--init", RESNET, "--dataset", f"{DATA}/cifar10", "--epochs", "1", "--optimizer", "adamw",
      "--lr", "2e-5", "--weight-decay", "0", "--normalize", "raw", "--augment", "crop,flip"]),
]

FULL = [
    ("full", "LeNet-300-100 / MNIST (Deep Compression baseline 98.36%)",
     ["--arch", "lenet300100", "--dataset", f"{DATA}/mnist", "--epochs", "30", "--lr", "0.05",
      "--weight-decay", "1e-4"]),
    ("full", "LeNet-5 / MNIST (Deep Compression baseline 99.20%)",
     ["--arch", "lenet5", "--dataset", f"{DATA}/mnist", "--epochs", "20", "--lr", "0.05",
      "--weight-decay", "5e-4"]),
]


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def loadavg():
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def run(binary, args, tmp):
    out = os.path.join(tmp, "model.onnx")
    rep = os.path.join(tmp, "report.json")
    cmd = [binary, "train", *args, *COMMON, "--report", rep, "-o", out]
    load_before = loadavg()
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.time() - t0
    if p.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{p.stderr}")
    with open(rep) as f:
        r = json.load(f)
    epochs = r["train"]["epochs"]
    return {
        "command": " ".join(["edgeopt", "train", *args, *COMMON, "-o", "model.onnx"]).replace(DATA, "$DATA"),
        "epochs": len(epochs),
        "samples_per_sec": [round(e["samples_per_sec"], 1) for e in epochs],
        "epoch_seconds": [round(e["seconds"], 2) for e in epochs],
        "final_train_loss": epochs[-1]["train_loss"],
        "test_accuracy": r["test"]["accuracy"] if r.get("test") else None,
        "wall_seconds": round(wall, 1),
        # 1-minute load average before and after: other processes on the machine
        # slow the run down; compare numbers only between quiet runs.
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "edgeopt"))
    ap.add_argument("--full", action="store_true", help="also the full MNIST baseline runs")
    ap.add_argument("--only-full", action="store_true")
    a = ap.parse_args()
    plan = [] if a.only_full else list(RUNS)
    if a.full or a.only_full:
        plan += FULL
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind, name, args in plan:
            print(f"running: {name}", flush=True)
            r = run(a.bin, args, tmp)
            r.update({"kind": kind, "name": name})
            print(f"  {r['samples_per_sec']} samples/s, epoch {r['epoch_seconds']} s, "
                  f"test accuracy {r['test_accuracy']}", flush=True)
            results.append(r)
    date = datetime.date.today().isoformat()
    meta = {
        "date": date,
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "system": platform.platform()},
        "engine": "burn 0.22.1, flex backend (pure Rust), f32",
        "binary": os.path.relpath(a.bin, ROOT),
        "note": "batch 64, 2 threads; samples/s counts training samples (forward + backward + "
                "update) excluding validation; data loading runs on a background thread",
        "results": results,
    }
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    suffix = "full" if a.only_full else "throughput"
    base = os.path.join(ROOT, "bench", "results", f"train-{suffix}-{date}")
    with open(base + ".json", "w") as f:
        json.dump(meta, f, indent=2)
    with open(base + ".md", "w") as f:
        f.write(f"# edgeopt training ({date})\n\n")
        f.write(f"Machine: {meta['machine']['cpu']}, {meta['machine']['cores']} cores. "
                f"Engine: {meta['engine']}. {meta['note']}.\n\n")
        f.write("| run | epochs | samples/s | epoch time (s) | test accuracy | load avg |\n|---|---|---|---|---|---|\n")
        for r in results:
            acc = "" if r["test_accuracy"] is None else f"{100 * r['test_accuracy']:.2f}%"
            sps = ", ".join(str(x) for x in r["samples_per_sec"][:3]) + (" ..." if r["epochs"] > 3 else "")
            ep = ", ".join(str(x) for x in r["epoch_seconds"][:3]) + (" ..." if r["epochs"] > 3 else "")
            la = f"{r['loadavg_before']:.1f} / {r['loadavg_after']:.1f}" if r["loadavg_before"] is not None else ""
            f.write(f"| {r['name']} | {r['epochs']} | {sps} | {ep} | {acc} | {la} |\n")
        f.write("\nCommands (`$DATA` = ../shared/data):\n\n")
        for r in results:
            f.write(f"- {r['name']}: `{r['command']}`\n")
    print(f"wrote {base}.json and .md")


if __name__ == "__main__":
    main()
