#!/usr/bin/env python3
"""Runs many ONNX models with onnxruntime in one process (oracle for edgeopt tests).

usage: onnx_run_many.py JOBS.json

JOBS.json is a list of {"model": PATH, "inputs": [NPY, ...], "out_dir": DIR}. For each
job, inputs are fed in the order of the model's graph inputs and every output is
written to DIR/output_<k>.npy; a job that onnxruntime cannot load or run gets
DIR/error.txt with the message instead (the caller decides what that means). Prints
one line per job: "ok DIR" or "error DIR".
"""
import json
import os
import sys

import numpy as np
from ort_options import make_session


def quiet(opts):
    opts.log_severity_level = 3


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    with open(sys.argv[1]) as f:
        jobs = json.load(f)
    for job in jobs:
        out = job["out_dir"]
        os.makedirs(out, exist_ok=True)
        try:
            sess = make_session(job["model"], 1, quiet)
            names = [i.name for i in sess.get_inputs()]
            if len(names) != len(job["inputs"]):
                raise ValueError(f"model has {len(names)} inputs, {len(job['inputs'])} given")
            feeds = {n: np.load(p) for n, p in zip(names, job["inputs"])}
            for k, o in enumerate(sess.run(None, feeds)):
                np.save(os.path.join(out, f"output_{k}.npy"), np.ascontiguousarray(o))
            print("ok", out)
        except Exception as e:  # noqa: BLE001 - reported to the caller per job
            with open(os.path.join(out, "error.txt"), "w") as f:
                f.write(str(e))
            print("error", out)


if __name__ == "__main__":
    main()
