#!/usr/bin/env python3
"""Runs many .tflite models with TensorFlow Lite Micro in one process (oracle for
edgeopt tests: the `tflm` numerics).

usage: tflm_run_many.py JOBS.json

JOBS.json is a list of {"model": PATH, "input": NPY, "out_dir": DIR}. As in
tflm_run.py, INPUT holds N samples stacked on axis 0, run one at a time at batch 1;
DIR/output.npy gets the N outputs stacked the same way (a leading dimension of 1
dropped), in the model's own dtype. A job that TFLite Micro refuses gets
DIR/error.txt with the message instead. Prints one line per job: "ok DIR" or
"error DIR".
"""
import json
import os
import sys

import numpy as np
from tflite_micro.python.tflite_micro import runtime


def run(job):
    xs = np.load(job["input"])
    it = runtime.Interpreter.from_file(job["model"], arena_size=job.get("arena"))
    inp = it.get_input_details(0)
    if xs.dtype != inp["dtype"]:
        raise ValueError(f"input dtype {xs.dtype} but the model takes {inp['dtype']}")
    if tuple(xs.shape[1:]) != tuple(inp["shape"][1:]):
        raise ValueError(f"samples of shape {xs.shape[1:]} but the model takes {inp['shape']}")
    ys = []
    for x in xs:
        it.set_input(np.ascontiguousarray(x[None]), 0)
        it.invoke()
        y = np.array(it.get_output(0))
        ys.append((y[0] if y.shape[0] == 1 else y).copy())
    return np.stack(ys)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    with open(sys.argv[1]) as f:
        jobs = json.load(f)
    for job in jobs:
        out = job["out_dir"]
        os.makedirs(out, exist_ok=True)
        try:
            np.save(os.path.join(out, "output.npy"), run(job))
            print("ok", out, flush=True)
        except Exception as e:  # noqa: BLE001 - reported to the caller per job
            msg = str(e).strip()
            with open(os.path.join(out, "error.txt"), "w") as f:
                f.write(msg.splitlines()[-1] if msg else repr(e))
            print("error", out, flush=True)


if __name__ == "__main__":
    main()
