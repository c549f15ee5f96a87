#!/usr/bin/env python3
"""Runs many .tflite models with LiteRT in one process (oracle for edgeopt tests).

usage: litert_run_many.py JOBS.json [--resolver builtin|ref|auto]

JOBS.json is a list of {"model": PATH, "input": NPY, "out_dir": DIR}. As in
litert_run.py, INPUT holds N samples stacked on axis 0 (each of the model's input
shape without its batch dimension), run one at a time at batch 1; the N outputs of the
model's first output are stacked into DIR/output.npy (a leading dimension of 1
dropped), in the model's own dtype; output k > 0, stacked the same way, goes to
DIR/output.k.npy. A job
that LiteRT refuses (load, allocate or invoke) gets DIR/error.txt with the message
instead (the caller decides what that means). Prints one line per job: "ok DIR" or
"error DIR". One process for all jobs: a test over hundreds of single-op models pays
the interpreter's import once.
"""
import argparse
import json
import os

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

RESOLVERS = {
    "builtin": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    "ref": OpResolverType.BUILTIN_REF,
    "auto": OpResolverType.AUTO,
}


def run(job, resolver):
    xs = np.load(job["input"])
    it = Interpreter(model_path=job["model"], experimental_op_resolver_type=resolver)
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    outs = it.get_output_details()
    if xs.dtype != inp["dtype"]:
        raise ValueError(f"input dtype {xs.dtype} but the model takes {inp['dtype']}")
    if tuple(xs.shape[1:]) != tuple(inp["shape"][1:]):
        raise ValueError(f"samples of shape {xs.shape[1:]} but the model takes {inp['shape']}")
    ys = [[] for _ in outs]
    for x in xs:
        it.set_tensor(inp["index"], x[None])
        it.invoke()
        for k, out in enumerate(outs):
            y = it.get_tensor(out["index"])
            # Drop the batch dimension; an output whose first dimension is not the
            # batch (FULLY_CONNECTED over [1, rows, k] gives [rows, n]) is kept whole.
            ys[k].append((y[0] if y.shape[0] == 1 else y).copy())
    return [np.stack(y) for y in ys]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("jobs")
    ap.add_argument("--resolver", default="builtin", choices=sorted(RESOLVERS))
    a = ap.parse_args()
    with open(a.jobs) as f:
        jobs = json.load(f)
    for job in jobs:
        out = job["out_dir"]
        os.makedirs(out, exist_ok=True)
        try:
            for k, y in enumerate(run(job, RESOLVERS[a.resolver])):
                np.save(os.path.join(out, "output.npy" if k == 0 else f"output.{k}.npy"), y)
            print("ok", out, flush=True)
        except Exception as e:  # noqa: BLE001 - reported to the caller per job
            with open(os.path.join(out, "error.txt"), "w") as f:
                f.write(str(e).strip().splitlines()[-1] if str(e).strip() else repr(e))
            print("error", out, flush=True)


if __name__ == "__main__":
    main()
