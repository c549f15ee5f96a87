#!/usr/bin/env python3
"""Runs a float ONNX model in float64 with the onnx reference evaluator: the exact
answer (up to f64 rounding) that float32 runtimes approximate.

usage: onnx_run_f64.py MODEL INPUT.npy OUT_DIR

Float32 initializers, inputs and declared types are widened to float64; the output is
written as OUT_DIR/output_0.npy in float64. Used where two float32 runtimes legitimately
differ by summation order, to measure each one's error against the same reference.
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper
from onnx.reference import ReferenceEvaluator


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    model, inp, out_dir = sys.argv[1:]
    m = onnx.load(model)
    for i, init in enumerate(m.graph.initializer):
        a = numpy_helper.to_array(init)
        if a.dtype == np.float32:
            m.graph.initializer[i].CopyFrom(numpy_helper.from_array(a.astype(np.float64), init.name))
    for v in list(m.graph.input) + list(m.graph.output) + list(m.graph.value_info):
        if v.type.tensor_type.elem_type == TensorProto.FLOAT:
            v.type.tensor_type.elem_type = TensorProto.DOUBLE
    x = np.load(inp)
    if x.dtype == np.float32:
        x = x.astype(np.float64)
    y = ReferenceEvaluator(m).run(None, {m.graph.input[0].name: x})[0]
    os.makedirs(out_dir, exist_ok=True)
    np.save(os.path.join(out_dir, "output_0.npy"), y)


if __name__ == "__main__":
    main()
