#!/usr/bin/env python3
"""Quantization-aware training (issue 4, item 5): the must-show figures on full data.

  - int4-weight ResNet-8 (MLPerf Tiny pretrainedResnet.tflite, per-channel int4
    weights, int8 activations) after QAT, <= 3 epochs on CIFAR-10 train20k:
    CIFAR-10 test accuracy (10,000 images) >= 85%.
  - ternary LeNet-5 (zoo, trained in float on MNIST first; every layer ternary, per
    channel, int8 activations) after QAT: MNIST test accuracy (10,000) >= 98.5%.

The int4 recipe: per-channel int4 weights whose scales are learned (LSQ, starting at
the PTQ clipping-search scales and exported into the plan, so `apply` builds exactly the
trained integer weights), knowledge distillation from the float model, AdamW 2e-4 with
a short warm-up, crop+flip augmentation. Ternary LeNet-5 uses plain QAT.

Each run prints float, PTQ and QAT accuracy, both as fake-quant in the training engine
and as the integer graph of `apply` on edgeopt's integer kernels (their difference is
the fake-quant / integer gap). Runs the `qat_bench` example of crates/tests:

    cargo build --release -p edgeopt-tests --example qat_bench
    python bench/qat.py [--bin target/release/examples/qat_bench] [--only resnet|lenet]

Writes bench/results/qat-<date>.json and .md (commit them); each entry records its
exact command.
"""
import argparse
import datetime
import json
import os
import platform
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

RUNS = {
    # Recipe: LSQ learned weight scales, distillation from the float model (T=4,
    # alpha 0.9), AdamW 2e-4 with 30 warm-up steps then cosine, crop+flip augmentation.
    "resnet": ("int4 ResNet-8 / CIFAR-10 (target >= 85%)",
               ["resnet-int4", "--epochs", "3", "--lr", "2e-4", "--warmup", "30",
                "--kd", "4", "--kd-alpha", "0.9", "--lsq"]),
    "lenet": ("ternary LeNet-5 / MNIST (target >= 98.5%)",
              ["lenet-ternary", "--float-epochs", "1", "--epochs", "3", "--lr", "1e-3"]),
}
TARGET = {"resnet": 0.85, "lenet": 0.985}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(
        os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")),
        "release", "examples", "qat_bench"))
    ap.add_argument("--only", choices=sorted(RUNS))
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    ap.add_argument("--from-json", metavar="DIR",
                    help="do not run: read DIR/<run>.json (+ .cmd, .secs) written by earlier "
                         "runs of the same commands, e.g. started with nohup")
    a = ap.parse_args()
    env = dict(os.environ)
    env.setdefault("EDGEOPT_DATA", os.path.join(ROOT, "..", "shared", "data"))
    results = []
    for key, (title, args) in RUNS.items():
        args = list(args)
        if a.only and key != a.only:
            continue
        cmd = [a.bin] + args
        t = time.time()
        if a.from_json:
            path = os.path.join(a.from_json, f"{key}.json")
            if not os.path.exists(path) or os.path.getsize(path) == 0:
                print(f"{path}: missing, skipped")
                continue
            with open(path) as f:
                r = json.load(f)
            with open(os.path.join(a.from_json, f"{key}.cmd")) as f:
                args = f.read().split()
            with open(os.path.join(a.from_json, f"{key}.secs")) as f:
                wall = float(f.read())
        else:
            p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
            if p.returncode != 0:
                raise SystemExit(f"{' '.join(cmd)} failed:\n{p.stderr[-3000:]}")
            r = json.loads(p.stdout)
            wall = time.time() - t
        r["title"] = title
        r["command"] = " ".join(["target/release/examples/qat_bench"] + args)
        r["wall_seconds"] = round(wall, 1)
        r["target"] = TARGET[key]
        r["meets_target"] = r["qat_integer_accuracy"] >= TARGET[key]
        results.append(r)
        print(f"{title}: QAT integer {100 * r['qat_integer_accuracy']:.2f}%", flush=True)
    date = datetime.date.today().isoformat()
    suffix = f"-{a.only}" if a.only else ""
    meta = {"date": date, "machine": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "threads": 2, "load_average": os.getloadavg()}
    os.makedirs(a.out, exist_ok=True)
    base = os.path.join(a.out, f"qat-{date}{suffix}")
    tmp = base + ".json.tmp"
    with open(tmp, "w") as f:
        json.dump({"meta": meta, "runs": results}, f, indent=2)
    os.replace(tmp, base + ".json")
    lines = [f"# QAT — {date}", "",
             f"Machine: {meta['machine']}, {meta['cpus']} cores, 2 training threads. "
             "Accuracies on the full test sets (10,000 images). `fake` = fake-quant in the "
             "training engine, `int` = the integer graph of `apply` on edgeopt's integer "
             "kernels. Seconds depend on what else ran on the 2-core machine: load average "
             f"at the end {', '.join(f'{x:.1f}' for x in meta['load_average'])}.", "",
             "| run | float | PTQ fake | PTQ int | QAT fake | QAT int | fake−int (pt) | QAT s | target |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        pc = lambda k: f"{100 * r[k]:.2f}%"
        lines.append(
            f"| {r['title']} | {pc('float_accuracy')} | {pc('ptq_fake_quant_accuracy')} | "
            f"{pc('ptq_integer_accuracy')} | {pc('qat_fake_quant_accuracy')} | "
            f"{pc('qat_integer_accuracy')} | {r['fake_minus_integer_pt']:+.2f} | "
            f"{r['qat_seconds']:.0f} | {'met' if r['meets_target'] else 'NOT met'} |")
    screen = f"qat-screen-{date}.md"
    if os.path.exists(os.path.join(a.out, screen)):
        lines += ["", f"How the int4 recipe was chosen (1-epoch screens, 3-epoch ablation): {screen}."]
    lines += ["", "Recipes:", ""]
    for r in results:
        lines.append(
            f"- {r['title']}: {r.get('qat_epochs')} epochs, lr {r.get('qat_lr', 0):.3g}, "
            f"{r.get('optimizer', '?')}; distillation: {r.get('distillation') or 'none'}; "
            f"weight scales: {r.get('weight_scales', 'PTQ rule at every step')}; "
            f"activation ranges: {r.get('ranges', 'fixed')}")
    lines += ["", "Commands (from the repository root, `EDGEOPT_DATA=../shared/data`):", ""]
    for r in results:
        lines.append(f"- {r['title']}: `{r['command']}` ({r['wall_seconds']:.0f} s wall)")
    lines += ["", "Per-epoch QAT log (train loss / accuracy under fake-quant, on augmented "
              "batches; with distillation the loss is the distillation loss):", ""]
    for r in results:
        for e in r.get("epochs_log", []):
            lines.append(f"- {r['run']} epoch {e['epoch']}: lr {e['lr']:.2e}, loss "
                         f"{e['train_loss']:.4f}, train acc "
                         f"{100 * (e['train_accuracy'] or 0):.2f}%, {e['samples_per_sec']:.0f} samples/s")
    tmp = base + ".md.tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, base + ".md")
    print(f"wrote {base}.json and .md")


if __name__ == "__main__":
    main()
