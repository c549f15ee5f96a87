#!/usr/bin/env python3
"""Runs an ONNX model with onnxruntime (oracle for edgeopt tests).

usage: onnx_run.py MODEL INPUT_0.npy [INPUT_1.npy ...] OUT_DIR

Inputs are given in the order of the model's graph inputs, each a whole batch in the
input's own dtype. Writes OUT_DIR/output_<k>.npy for every model output, in its own
dtype, and prints the output names, one per line. onnxruntime runs on one thread with
its default graph optimizations (what a user of the model gets).
"""
import os
import sys

import numpy as np
from ort_options import make_session


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    model, inputs, out_dir = sys.argv[1], sys.argv[2:-1], sys.argv[-1]
    sess = make_session(model, 1)
    names = [i.name for i in sess.get_inputs()]
    if len(names) != len(inputs):
        sys.exit(f"{model} has {len(names)} inputs, {len(inputs)} given")
    feeds = {n: np.load(p) for n, p in zip(names, inputs)}
    outs = sess.run(None, feeds)
    os.makedirs(out_dir, exist_ok=True)
    for k, (o, meta) in enumerate(zip(outs, sess.get_outputs())):
        np.save(os.path.join(out_dir, f"output_{k}.npy"), np.ascontiguousarray(o))
        print(meta.name)


if __name__ == "__main__":
    main()
