#!/usr/bin/env python3
"""Independent parameter and MAC count of an ONNX or TFLite model (oracle for
`edgeopt inspect`).

Usage: count_macs.py MODEL.onnx|MODEL.tflite [--batch N]

Prints one JSON object: {"params": ..., "macs": ..., "layers": [[op, name, macs], ...]}.

- ONNX: params = elements of every initializer (plus Constant-node tensors); shapes
  come from `onnx.shape_inference` with dynamic dims set to the batch (leading) or 1.
- TFLite: params = elements of every tensor that has data in a buffer; shapes are the
  static ones stored in the file (batch 1, scaled by --batch for the leading dim).
- MACs, counted only for weight products (bias and element-wise ops count 0):
  Conv/QLinearConv/ConvInteger/CONV_2D: out_elems x prod(weight.shape[1:])
  (= (C_in/group) x kernel for both layouts); DEPTHWISE_CONV_2D (weights
  [1, kh, kw, C*m]): out_elems x kh x kw; ConvTranspose: in_elems x prod(w.shape[1:]);
  Gemm: M x N x K; MatMul/MatMulInteger/QLinearMatMul: out_elems x K;
  FULLY_CONNECTED: out_elems x K.
"""
import argparse
import json
import math
import sys


def prod(xs):
    return int(math.prod(int(x) for x in xs))


def count_onnx(path, batch):
    import onnx
    from onnx import numpy_helper, shape_inference

    model = onnx.load(path)
    g = model.graph
    for inp in g.input:
        dims = inp.type.tensor_type.shape.dim
        for k, d in enumerate(dims):
            if not d.HasField("dim_value"):
                d.Clear()
                d.dim_value = batch if k == 0 else 1
    model = shape_inference.infer_shapes(model, strict_mode=True)
    g = model.graph
    shapes = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        t = vi.type.tensor_type
        if t.HasField("shape"):
            shapes[vi.name] = [d.dim_value for d in t.shape.dim]
    params = 0
    for init in g.initializer:
        a = numpy_helper.to_array(init)
        shapes[init.name] = list(a.shape)
        params += a.size
    for n in g.node:
        if n.op_type == "Constant":
            for at in n.attribute:
                if at.name == "value":
                    a = numpy_helper.to_array(at.t)
                    shapes[n.output[0]] = list(a.shape)
                    params += a.size

    def shape(name):
        if name not in shapes:
            sys.exit(f"no inferred shape for {name}")
        return shapes[name]

    layers = []
    for n in g.node:
        op = n.op_type
        macs = 0
        if op in ("Conv", "ConvInteger"):
            macs = prod(shape(n.output[0])) * prod(shape(n.input[1])[1:])
        elif op == "QLinearConv":
            macs = prod(shape(n.output[0])) * prod(shape(n.input[3])[1:])
        elif op == "ConvTranspose":
            macs = prod(shape(n.input[0])) * prod(shape(n.input[1])[1:])
        elif op == "Gemm":
            trans_a = any(a.name == "transA" and a.i for a in n.attribute)
            a = shape(n.input[0])
            k = a[0] if trans_a else a[1]
            macs = prod(shape(n.output[0])) * k
        elif op in ("MatMul", "MatMulInteger", "QLinearMatMul"):
            macs = prod(shape(n.output[0])) * shape(n.input[0])[-1]
        layers.append([op, n.name, macs])
    return params, layers


def count_tflite(path, batch):
    from ai_edge_litert import schema_py_generated as s

    with open(path, "rb") as f:
        m = s.ModelT.InitFromPackedBuf(f.read(), 0)
    names = {v: k for k, v in vars(s.BuiltinOperator).items() if not k.startswith("_")}
    sg = m.subgraphs[0]
    params = 0
    for t in sg.tensors:
        buf = m.buffers[t.buffer] if t.buffer < len(m.buffers) else None
        if buf is not None and buf.data is not None and len(buf.data) > 0:
            params += prod(t.shape) if t.shape is not None else 1

    def shape(i):
        return [int(d) for d in sg.tensors[i].shape]

    def out_elems(op):
        s0 = shape(op.outputs[0])
        return prod(s0) // max(s0[0], 1) * batch if s0 else 1

    layers = []
    for op in sg.operators:
        oc = m.operatorCodes[op.opcodeIndex]
        name = names.get(max(oc.builtinCode, oc.deprecatedBuiltinCode), "?")
        macs = 0
        if name == "CONV_2D":
            macs = out_elems(op) * prod(shape(op.inputs[1])[1:])
        elif name == "DEPTHWISE_CONV_2D":
            w = shape(op.inputs[1])
            macs = out_elems(op) * w[1] * w[2]
        elif name == "FULLY_CONNECTED":
            macs = out_elems(op) * shape(op.inputs[1])[1]
        layers.append([name, sg.tensors[op.outputs[0]].name.decode(), macs])
    return params, layers


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--batch", type=int, default=1)
    a = ap.parse_args()
    if a.model.endswith(".onnx"):
        params, layers = count_onnx(a.model, a.batch)
    elif a.model.endswith(".tflite"):
        params, layers = count_tflite(a.model, a.batch)
    else:
        sys.exit("model must be .onnx or .tflite")
    print(json.dumps({"params": int(params), "macs": int(sum(l[2] for l in layers)), "layers": layers}))


if __name__ == "__main__":
    main()
