#!/usr/bin/env python3
"""Builds small ONNX models that exercise importer paths the backend node tests miss
(oracle-side fixtures for crates/tests/tests/onnx_conformance.rs).

usage: onnx_make_models.py OUT_DIR

Writes OUT_DIR/<name>.onnx for each model below (each passes onnx.checker) and prints
their names. The Rust test runs them in edgeopt and in onnxruntime (onnx_run.py) on the
same inputs and compares.

- shape_chain_dynamic: a PyTorch-style flatten, x.view(x.size(0), C, -1), written as
  Shape -> Gather / Slice -> Unsqueeze -> Concat -> Reshape, with a dynamic batch.
- shape_chain_static: the same graph with a fixed batch (everything folds).
- opset11_softmax: Softmax/LogSoftmax before opset 13 (flatten-to-2D semantics) on a
  non-last axis, Clip with constant bounds as inputs, Squeeze/Unsqueeze axes attributes.
- opset10_attrs: the attribute forms of opset 10 (Pad pads/value, Clip min/max,
  ReduceMean axes, Resize with only scales, Dropout), plus Softmax on the last axis.
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh


def const(name, arr):
    return nh.from_array(np.asarray(arr), name)


def shape_chain(batch):
    rng = np.random.default_rng(1)
    w = rng.standard_normal((2, 3, 3, 3)).astype(np.float32)
    fc = rng.standard_normal((10, 32)).astype(np.float32)
    nodes = [
        h.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),
        h.make_node("Relu", ["c"], ["r"]),
        h.make_node("Shape", ["r"], ["s"]),
        h.make_node("Gather", ["s", "zero"], ["n"], axis=0),
        h.make_node("Unsqueeze", ["n", "axes0"], ["n1"]),
        h.make_node("Slice", ["s", "one", "two"], ["ch"]),
        h.make_node("Concat", ["n1", "ch", "minus1"], ["target"], axis=0),
        h.make_node("Reshape", ["r", "target"], ["v"]),
        h.make_node("Flatten", ["v"], ["f"], axis=1),
        h.make_node("Gemm", ["f", "fc"], ["logits"], transB=1),
        h.make_node("Softmax", ["logits"], ["y"], axis=-1),
    ]
    inits = [
        const("w", w),
        const("fc", fc),
        const("zero", np.array(0, np.int64)),
        const("axes0", np.array([0], np.int64)),
        const("one", np.array([1], np.int64)),
        const("two", np.array([2], np.int64)),
        const("minus1", np.array([-1], np.int64)),
    ]
    g = h.make_graph(
        nodes,
        "shape_chain",
        [h.make_tensor_value_info("x", T.FLOAT, [batch, 3, 8, 8])],
        [h.make_tensor_value_info("y", T.FLOAT, [batch, 10])],
        inits,
    )
    return h.make_model(g, opset_imports=[h.make_opsetid("", 13)])


def opset11_softmax():
    nodes = [
        h.make_node("Softmax", ["x"], ["s1"], axis=1),
        h.make_node("LogSoftmax", ["x"], ["s0"], axis=0),
        h.make_node("Clip", ["x", "lo", "hi"], ["c"]),
        h.make_node("Unsqueeze", ["c"], ["u"], axes=[0, 3]),
        h.make_node("Squeeze", ["u"], ["sq"], axes=[0]),
    ]
    inits = [const("lo", np.array(0.2, np.float32)), const("hi", np.array(0.6, np.float32))]
    g = h.make_graph(
        nodes,
        "opset11",
        [h.make_tensor_value_info("x", T.FLOAT, ["N", 3, 4])],
        [
            h.make_tensor_value_info("s1", T.FLOAT, ["N", 3, 4]),
            h.make_tensor_value_info("s0", T.FLOAT, ["N", 3, 4]),
            h.make_tensor_value_info("sq", T.FLOAT, ["N", 3, 1, 4]),
        ],
        inits,
    )
    return h.make_model(g, opset_imports=[h.make_opsetid("", 11)])


def opset10_attrs():
    nodes = [
        h.make_node("Pad", ["x"], ["p"], pads=[0, 0, 1, 2, 0, 0, 2, 1], value=0.5),
        h.make_node("Clip", ["p"], ["c"], min=0.1, max=0.8),
        h.make_node("Resize", ["c", "scales"], ["r"], mode="nearest"),
        h.make_node("Dropout", ["r"], ["d"]),
        h.make_node("ReduceMean", ["d"], ["m"], axes=[2], keepdims=0),
        h.make_node("Softmax", ["m"], ["y"], axis=2),
    ]
    inits = [const("scales", np.array([1, 1, 2, 1.5], np.float32))]
    g = h.make_graph(
        nodes,
        "opset10",
        [h.make_tensor_value_info("x", T.FLOAT, [2, 3, 4, 4])],
        [h.make_tensor_value_info("y", T.FLOAT, [2, 3, 10])],
        inits,
    )
    return h.make_model(g, opset_imports=[h.make_opsetid("", 10)])


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    models = {
        "shape_chain_dynamic": shape_chain("batch"),
        "shape_chain_static": shape_chain(2),
        "opset11_softmax": opset11_softmax(),
        "opset10_attrs": opset10_attrs(),
    }
    for name, m in models.items():
        m.ir_version = 7
        onnx.checker.check_model(m, full_check=True)
        onnx.save(m, os.path.join(out, name + ".onnx"))
        print(name)


if __name__ == "__main__":
    main()
