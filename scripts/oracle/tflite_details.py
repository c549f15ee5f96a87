#!/usr/bin/env python3
"""Oracle for TFLite import: what LiteRT (and the official flatbuffers reader) say
about a .tflite model, as JSON on stdout.

Usage: tflite_details.py MODEL.tflite

Output:
  {"version": schema version,
   "ops": [op names of subgraph 0 in execution order, from the LiteRT interpreter],
   "op_inputs"/"op_outputs": [tensor indices of each op (-1 = absent)],
   "op_options": [each op's builtin options, flatbuffers field names, or null],
   "inputs"/"outputs": [LiteRT get_input_details()/get_output_details(), with
                        scale/zero_point and the per-channel arrays],
   "tensors": [every tensor of subgraph 0 from get_tensor_details(), plus
               "const_count"/"const_sum"/"const_abs_sum" of the values of constant
               tensors and "const_values" (all of them, for constants of at most
               64 elements) (read with the flatbuffers reader in ai_edge_litert's
               schema_py_generated; null for non-constants)]}

Used by crates/tests/tests/tflite_import.rs; needs numpy and ai-edge-litert.
"""
import json
import sys

import numpy as np
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.interpreter import Interpreter, OpResolverType

# TensorType enum -> numpy dtype for constant buffers (little-endian files).
NP_TYPES = {
    0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64,
    6: np.bool_, 7: np.int16, 9: np.int8, 16: np.uint16,
}


def detail(d):
    q = d["quantization_parameters"]
    return {
        "name": d["name"],
        "index": int(d["index"]),
        "shape": [int(x) for x in d["shape"]],
        "shape_signature": [int(x) for x in d.get("shape_signature", d["shape"])],
        "dtype": np.dtype(d["dtype"]).name,
        "scale": float(d["quantization"][0]),
        "zero_point": int(d["quantization"][1]),
        "scales": [float(x) for x in q["scales"]],
        "zero_points": [int(x) for x in q["zero_points"]],
        "quantized_dimension": int(q["quantized_dimension"]),
    }


def const_stats(model, sg, index):
    t = sg.tensors[index]
    buf = model.buffers[t.buffer] if t.buffer < len(model.buffers) else None
    data = None if buf is None else buf.data
    if data is None or len(data) == 0 or t.type not in NP_TYPES:
        return None
    v = np.frombuffer(np.asarray(data, dtype=np.uint8).tobytes(), dtype=NP_TYPES[t.type])
    small = [float(x) for x in v] if v.size <= 64 else None
    v = v.astype(np.float64)
    return {"count": int(v.size), "sum": float(v.sum()), "abs_sum": float(np.abs(v).sum()),
            "values": small}


def options(op):
    """An operator's builtin options as a dict (flatbuffers field names), or None."""
    o = op.builtinOptions
    if o is None:
        return None
    out = {}
    for k, v in vars(o).items():
        if isinstance(v, np.ndarray):
            v = v.tolist()
        if isinstance(v, (bool, int, float, list)) or v is None:
            out[k] = v
    return out


def main():
    path = sys.argv[1]
    raw = open(path, "rb").read()
    model = schema.ModelT.InitFromPackedBuf(raw, 0)
    sg = model.subgraphs[0]
    # No default delegate (XNNPACK): it would replace operators by DELEGATE nodes.
    it = Interpreter(
        model_path=path,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    it.allocate_tensors()
    tensors = []
    for d in it.get_tensor_details():
        if d["index"] >= len(sg.tensors):
            continue  # scratch tensors the interpreter added, not in the model
        e = detail(d)
        s = const_stats(model, sg, e["index"])
        e["const_count"] = None if s is None else s["count"]
        e["const_sum"] = None if s is None else s["sum"]
        e["const_abs_sum"] = None if s is None else s["abs_sum"]
        e["const_values"] = None if s is None else s["values"]
        tensors.append(e)
    ops = it._get_ops_details()
    out = {
        "version": int(model.version),
        "ops": [o["op_name"] for o in ops],
        "op_inputs": [[int(i) for i in o["inputs"]] for o in ops],
        "op_outputs": [[int(i) for i in o["outputs"]] for o in ops],
        "op_options": [options(op) for op in sg.operators],
        "inputs": [detail(d) for d in it.get_input_details()],
        "outputs": [detail(d) for d in it.get_output_details()],
        "tensors": tensors,
    }
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
