#!/usr/bin/env python3
"""Runs a .tflite model with TensorFlow Lite Micro on a batch of samples (oracle for
edgeopt tests: the `tflm` numerics, which the generated C must match bit for bit).

usage: tflm_run.py MODEL INPUT.npy OUTPUT.npy [--arena BYTES] [--outputs N]

INPUT.npy holds N samples stacked on axis 0, each of the model's input shape without
its batch dimension; they are run one at a time (batch 1) and OUTPUT.npy gets the N
outputs stacked the same way (a leading dimension of 1 dropped), in the model's own
dtype. Single input. With --outputs N (the model's output count; the package cannot
tell it), output k > 0 goes beside OUTPUT.npy as OUTPUT.k.npy, in the model's order.

The interpreter is the `tflite-micro` PyPI package (module `tflite_micro`): TFLM's
reference kernels (the same integer results as CMSIS-NN), not LiteRT's.
"""
import argparse
import sys

import numpy as np
from tflite_micro.python.tflite_micro import runtime


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument(
        "--arena",
        type=int,
        default=None,
        help="tensor arena bytes (default: the package's heuristic, 10x the model size)",
    )
    ap.add_argument("--outputs", type=int, default=1, help="how many outputs to read")
    a = ap.parse_args()

    xs = np.load(a.input)
    it = runtime.Interpreter.from_file(a.model, arena_size=a.arena)
    inp = it.get_input_details(0)
    if xs.dtype != inp["dtype"]:
        sys.exit(f"input dtype {xs.dtype} but the model takes {inp['dtype']}")
    if tuple(xs.shape[1:]) != tuple(inp["shape"][1:]):
        sys.exit(f"samples of shape {xs.shape[1:]} but the model takes {inp['shape']}")
    n_out = a.outputs
    ys = [[] for _ in range(n_out)]
    for x in xs:
        it.set_input(np.ascontiguousarray(x[None]), 0)
        it.invoke()
        for k in range(n_out):
            y = np.array(it.get_output(k))
            # Drop the batch dimension; an output whose first dimension is not the
            # batch (FULLY_CONNECTED over [1, rows, k] gives [rows, n]) is kept whole.
            ys[k].append((y[0] if y.shape[0] == 1 else y).copy())
    stem = a.output[:-4] if a.output.endswith(".npy") else a.output
    for k, y in enumerate(ys):
        np.save(a.output if k == 0 else f"{stem}.{k}.npy", np.stack(y))


if __name__ == "__main__":
    main()
