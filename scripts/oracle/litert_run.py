#!/usr/bin/env python3
"""Runs a .tflite model with LiteRT on a batch of samples (oracle for edgeopt tests).

usage: litert_run.py MODEL INPUT.npy OUTPUT.npy [--resolver builtin|ref|auto]
                     [--tensors DIR --sample K]

INPUT.npy holds N samples stacked on axis 0, each of the model's input shape without
its batch dimension; they are run one at a time (batch 1) and OUTPUT.npy gets the N
outputs stacked the same way, in the model's own dtype.

--resolver selects LiteRT's kernels:
  builtin  LiteRT's builtin CPU kernels without default delegates (default)
  ref      TFLite's reference kernels (BUILTIN_REF)
  auto     the interpreter's default, which applies the XNNPACK delegate

--tensors DIR --sample K additionally runs sample K with every intermediate tensor
preserved and writes DIR/index.json (per operator: name, input and output tensor
names) and DIR/t<index>.npy for every tensor that has a value.
"""
import argparse
import json
import os
import sys

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

RESOLVERS = {
    "builtin": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    "ref": OpResolverType.BUILTIN_REF,
    "auto": OpResolverType.AUTO,
}


def make(model, resolver, preserve=False):
    it = Interpreter(
        model_path=model,
        experimental_op_resolver_type=RESOLVERS[resolver],
        experimental_preserve_all_tensors=preserve,
    )
    it.allocate_tensors()
    return it


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("--resolver", default="builtin", choices=sorted(RESOLVERS))
    ap.add_argument("--tensors")
    ap.add_argument("--sample", type=int, default=0)
    a = ap.parse_args()

    xs = np.load(a.input)
    it = make(a.model, a.resolver)
    inp = it.get_input_details()[0]
    out = it.get_output_details()[0]
    if xs.dtype != inp["dtype"]:
        sys.exit(f"input dtype {xs.dtype} but the model takes {inp['dtype']}")
    if tuple(xs.shape[1:]) != tuple(inp["shape"][1:]):
        sys.exit(f"samples of shape {xs.shape[1:]} but the model takes {inp['shape']}")
    ys = []
    for x in xs:
        it.set_tensor(inp["index"], x[None])
        it.invoke()
        ys.append(it.get_tensor(out["index"])[0].copy())
    np.save(a.output, np.stack(ys))

    if a.tensors:
        os.makedirs(a.tensors, exist_ok=True)
        it = make(a.model, a.resolver, preserve=True)
        it.set_tensor(inp["index"], xs[a.sample][None])
        it.invoke()
        details = {d["index"]: d for d in it.get_tensor_details()}
        ops = []
        for op in it._get_ops_details():
            ops.append(
                {
                    "op": op["op_name"],
                    "inputs": [details[i]["name"] if i >= 0 else None for i in op["inputs"]],
                    "outputs": [details[i]["name"] for i in op["outputs"]],
                }
            )
        files = {}
        for idx, d in details.items():
            try:
                v = it.get_tensor(idx)
            except ValueError:
                continue
            if v is None:
                continue
            f = f"t{idx}.npy"
            np.save(os.path.join(a.tensors, f), v)
            files[d["name"]] = f
        with open(os.path.join(a.tensors, "index.json"), "w") as fh:
            json.dump({"ops": ops, "files": files}, fh, indent=1)


if __name__ == "__main__":
    main()
