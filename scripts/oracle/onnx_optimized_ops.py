#!/usr/bin/env python3
"""Which kernels onnxruntime actually runs for an ONNX model (oracle for edgeopt tests).

usage: onnx_optimized_ops.py MODEL OUT.onnx

Creates a CPU session with the default graph optimizations (as onnx_run.py does),
asks onnxruntime to save the optimized graph to OUT.onnx, and prints a JSON object
mapping "domain:op_type" to its node count in that graph. A QDQ model that
onnxruntime runs with integer kernels shows QLinearConv / QGemm / QLinearAdd ...
(com.microsoft contrib ops) instead of float Conv / Gemm between
DequantizeLinear / QuantizeLinear.
"""
import collections
import json
import sys

import onnx
import onnxruntime as ort


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    model, out = sys.argv[1], sys.argv[2]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    # Basic+extended fusions (the QDQ -> integer-kernel fusions live there) without
    # the layout-specific NCHWc rewrites, so the saved graph is portable.
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.optimized_model_filepath = out
    ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    g = onnx.load(out).graph
    counts = collections.Counter(f"{n.domain or 'ai.onnx'}:{n.op_type}" for n in g.node)
    print(json.dumps(dict(sorted(counts.items()))))


if __name__ == "__main__":
    main()
