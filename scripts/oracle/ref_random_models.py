#!/usr/bin/env python3
"""Random single-op ONNX models and their onnxruntime outputs (oracle for the
reference kernels: crates/tests/tests/reference_vs_onnxruntime.rs).

usage: ref_random_models.py OUT_DIR [SEED]

Writes, for each case NAME: NAME.onnx (one float graph input `x`, every other operand a
constant initializer so importers fold it), NAME_x.npy (the input) and NAME_y.npy
(onnxruntime's output, one thread). Prints one NAME per line. Geometries are drawn
with a fixed seed over what the reference kernels support: Conv / ConvTranspose /
MaxPool / AveragePool in 1-D, 2-D and 3-D with strides, dilations, pads, auto_pad,
groups and ceil_mode; Resize in every mode and coordinate transform (scales or sizes,
axes, aspect-ratio policies, antialias, exclude_outside, cubic_coeff_a); Gemm, MatMul
with broadcasting; Softmax/LogSoftmax, ReduceMean/Sum/Max, Pad in every mode; Erf,
LayerNormalization (any axis, broadcast scale/bias), Split (sizes, equal parts,
opset-18 num_outputs with a short last part; the pieces concatenated in reverse order)
and Slice (negative and out-of-range starts/ends, INT64_MAX, negative steps, axes);
LSTM and GRU (every direction, both layouts, biases, initial states, peepholes, clip,
input_forget, linear_before_reset, sequence lengths; any one of their outputs); TopK (largest and
smallest, ties, values or indices).
Cases onnxruntime itself rejects are skipped (not printed).
"""
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

OPSET = 19


def model(node, inits, x_shape):
    g = h.make_graph(
        [node],
        "g",
        [h.make_tensor_value_info("x", T.FLOAT, list(x_shape))],
        [h.make_tensor_value_info("y", T.FLOAT, None)],
        [nh.from_array(np.asarray(a), n) for n, a in inits],
    )
    m = h.make_model(g, opset_imports=[h.make_opsetid("", OPSET)])
    m.ir_version = 9
    return m


def spatial_case(rng, kind):
    nd = int(rng.integers(1, 4))
    sp = [int(rng.integers(3, 9 if nd < 3 else 6)) for _ in range(nd)]
    k = [int(rng.integers(1, 4)) for _ in range(nd)]
    s = [int(rng.integers(1, 3)) for _ in range(nd)]
    d = [int(rng.integers(1, 3)) for _ in range(nd)]
    pads = [int(rng.integers(0, 3)) for _ in range(2 * nd)]
    # ONNX pools need pad < kernel extent; keep pads small enough for every op.
    pads = [min(p, k[i % nd] - 1) for i, p in enumerate(pads)]
    auto_pad = str(rng.choice(["NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]))
    attrs = dict(kernel_shape=k, strides=s)
    if auto_pad == "NOTSET":
        attrs["pads"] = pads
    else:
        attrs["auto_pad"] = auto_pad
    n = int(rng.integers(1, 3))
    if kind in ("Conv", "ConvTranspose"):
        group = int(rng.choice([1, 1, 2, 3]))
        cg = int(rng.integers(1, 4))
        mg = int(rng.integers(1, 4))
        c = group * cg
        attrs["dilations"] = d
        attrs["group"] = group
        if kind == "Conv":
            w = rng.standard_normal([mg * group, cg] + k).astype(np.float32)
        else:
            w = rng.standard_normal([c, mg] + k).astype(np.float32)
            if rng.random() < 0.4:
                attrs["output_padding"] = [int(rng.integers(0, min(si, di))) for si, di in zip(s, d)]
        b = rng.standard_normal([mg * group]).astype(np.float32)
        x_shape = [n, c] + sp
        inputs = ["x", "w"] + (["b"] if rng.random() < 0.6 else [])
        inits = [("w", w), ("b", b)][: len(inputs) - 1]
        return model(h.make_node(kind, inputs, ["y"], **attrs), inits, x_shape), x_shape
    c = int(rng.integers(1, 4))
    x_shape = [n, c] + sp
    attrs["dilations"] = d
    if rng.random() < 0.4:
        attrs["ceil_mode"] = 1
    if kind == "AveragePool" and rng.random() < 0.5:
        attrs["count_include_pad"] = 1
    return model(h.make_node(kind, ["x"], ["y"], **attrs), [], x_shape), x_shape


def resize_case(rng):
    mode = str(rng.choice(["nearest", "linear", "cubic"]))
    # onnxruntime runs cubic only on 4-D inputs.
    r = 4 if mode == "cubic" else int(rng.integers(3, 5))
    x_shape = [int(rng.integers(1, 3)), int(rng.integers(1, 3))] + [int(rng.integers(2, 7)) for _ in range(r - 2)]
    coord = str(rng.choice(["half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
                            "asymmetric", "tf_crop_and_resize"]))
    attrs = dict(mode=mode, coordinate_transformation_mode=coord)
    if mode == "nearest":
        attrs["nearest_mode"] = str(rng.choice(["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]))
    if mode == "cubic":
        attrs["cubic_coeff_a"] = float(rng.choice([-0.75, -0.5]))
        attrs["exclude_outside"] = int(rng.integers(0, 2))
    if mode != "nearest" and rng.random() < 0.3:
        attrs["antialias"] = 1
    axes = list(range(2, r)) if rng.random() < 0.5 else None
    na = len(axes) if axes else r
    ax_list = axes if axes else list(range(r))
    inits = []
    roi_name = ""
    if coord == "tf_crop_and_resize":
        starts = [float(rng.uniform(-0.2, 0.4)) if a >= 2 else 0.0 for a in ax_list]
        ends = [float(rng.uniform(0.6, 1.2)) if a >= 2 else 1.0 for a in ax_list]
        inits.append(("roi", np.array(starts + ends, np.float32)))
        roi_name = "roi"
        attrs["extrapolation_value"] = float(rng.choice([0.0, -1.5]))
    if axes:
        attrs["axes"] = axes
    if rng.random() < 0.5:
        scales = [1.0 if a < 2 else float(rng.choice([0.5, 0.6, 0.75, 1.5, 2.0, 2.5, 3.0])) for a in ax_list]
        inits.append(("scales", np.array(scales, np.float32)))
        ins = ["x", roi_name, "scales"]
    else:
        sizes = [x_shape[a] if a < 2 else int(rng.integers(1, 12)) for a in ax_list]
        inits.append(("sizes", np.array(sizes, np.int64)))
        ins = ["x", roi_name, "", "sizes"]
        if axes and rng.random() < 0.5:
            attrs["keep_aspect_ratio_policy"] = str(rng.choice(["not_larger", "not_smaller"]))
    del na
    return model(h.make_node("Resize", ins, ["y"], **attrs), inits, x_shape), x_shape


def crop_with_unit_scale(m, x_shape, y_shape):
    """onnxruntime skips the coordinate transform on axes whose size does not change,
    which ignores tf_crop_and_resize's roi there (the ONNX definition crops)."""
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in m.graph.node[0].attribute}
    if attrs.get("coordinate_transformation_mode") != b"tf_crop_and_resize":
        return False
    return any(a == b for a, b in zip(x_shape[2:], y_shape[2:]))


def misc_case(rng, i):
    kind = ["Gemm", "MatMul", "Softmax", "LogSoftmax", "Reduce", "Pad"][i % 6]
    if kind == "Gemm":
        m, k, n = (int(rng.integers(1, 7)) for _ in range(3))
        ta, tb = int(rng.integers(0, 2)), int(rng.integers(0, 2))
        x_shape = [k, m] if ta else [m, k]
        b = rng.standard_normal([n, k] if tb else [k, n]).astype(np.float32)
        c_shape = [[n], [1, n], [m, 1], [m, n], []][int(rng.integers(0, 5))]
        c = rng.standard_normal(c_shape).astype(np.float32)
        node = h.make_node("Gemm", ["x", "b", "c"], ["y"], transA=ta, transB=tb,
                           alpha=float(rng.choice([1.0, 0.5])), beta=float(rng.choice([1.0, 2.0])))
        return model(node, [("b", b), ("c", c)], x_shape), x_shape
    if kind == "MatMul":
        shapes = [([3], [3, 4]), ([2, 3, 4], [4]), ([2, 1, 3, 4], [5, 4, 2]), ([4, 3], [2, 3, 6]), ([1, 2, 5], [3, 1, 5, 2])]
        a, b = shapes[int(rng.integers(0, len(shapes)))]
        w = rng.standard_normal(b).astype(np.float32)
        return model(h.make_node("MatMul", ["x", "w"], ["y"]), [("w", w)], a), a
    x_shape = [int(rng.integers(1, 5)) for _ in range(int(rng.integers(1, 5)))]
    r = len(x_shape)
    if kind in ("Softmax", "LogSoftmax"):
        axis = int(rng.integers(-r, r))
        return model(h.make_node(kind, ["x"], ["y"], axis=axis), [], x_shape), x_shape
    if kind == "Reduce":
        op = str(rng.choice(["ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin"]))
        axes = sorted(set(int(a) for a in rng.integers(-r, r, size=int(rng.integers(0, r + 1)))))
        axes = [a for a in axes if (a % r) not in [(b % r) for b in axes if b != a]]
        keep = int(rng.integers(0, 2))
        if not keep and (not axes or len(axes) == r):
            # onnxruntime 1.32 returns shape [1] here; ONNX (and edgeopt) a scalar.
            keep = 1
        ins = ["x", "axes"] if axes else ["x"]
        inits = [("axes", np.array(axes, np.int64))] if axes else []
        if op in ("ReduceMean", "ReduceMax", "ReduceMin") and OPSET < 18:
            raise ValueError
        return model(h.make_node(op, ins, ["y"], keepdims=keep), inits, x_shape), x_shape
    mode = str(rng.choice(["constant", "reflect", "edge", "wrap"]))
    pads = [int(rng.integers(-1 if mode == "constant" else 0, 3)) for _ in range(2 * r)]
    if mode == "reflect":
        pads = [min(p, x_shape[i % r] - 1) for i, p in enumerate(pads)]
    pads = [p if x_shape[i % r] + p > 0 else 0 for i, p in enumerate(pads)]
    inits = [("pads", np.array(pads, np.int64)), ("v", np.array(1.25, np.float32))]
    return model(h.make_node("Pad", ["x", "pads", "v"], ["y"], mode=mode), inits, x_shape), x_shape


def graph_model(nodes, inits, x_shape):
    g = h.make_graph(
        nodes,
        "g",
        [h.make_tensor_value_info("x", T.FLOAT, list(x_shape))],
        [h.make_tensor_value_info("y", T.FLOAT, None)],
        [nh.from_array(np.asarray(a), n) for n, a in inits],
    )
    m = h.make_model(g, opset_imports=[h.make_opsetid("", OPSET)])
    m.ir_version = 9
    return m


def lstm_case(rng, op="LSTM"):
    gates, n_out = (4, 3) if op == "LSTM" else (3, 2)
    seq, batch, isz, hid = (int(rng.integers(1, 6)) for _ in range(4))
    direction = str(rng.choice(["forward", "reverse", "bidirectional"]))
    d = 2 if direction == "bidirectional" else 1
    layout = int(rng.integers(0, 2))
    x_shape = [batch, seq, isz] if layout else [seq, batch, isz]
    state = [batch, d, hid] if layout else [d, batch, hid]
    f = lambda *s: (rng.standard_normal(s) * 0.7).astype(np.float32)
    g = gates * hid
    ins, inits = ["x", "w", "r"], [("w", f(d, g, isz)), ("r", f(d, g, hid))]
    optional = [("b", f(d, 2 * g)),
                ("lens", rng.integers(0, seq + 1, size=batch).astype(np.int32)),
                ("h0", f(*state)), ("c0", f(*state)), ("p", f(d, 3 * hid))][: n_out + 2]
    for name, val in optional:
        if rng.integers(0, 2):
            ins.append(name)
            inits.append((name, val))
        else:
            ins.append("")
    while ins[-1] == "":
        ins.pop()
    attrs = dict(hidden_size=hid, direction=direction, layout=layout)
    if rng.integers(0, 4) == 0:
        attrs["clip"] = float(rng.choice([0.5, 2.0]))
    if op == "LSTM" and rng.integers(0, 4) == 0:
        attrs["input_forget"] = 1
    if op == "GRU":
        attrs["linear_before_reset"] = int(rng.integers(0, 2))
    which = int(rng.integers(0, n_out))
    outs = [""] * n_out
    outs[which] = "y"
    return model(h.make_node(op, ins, outs[: which + 1], **attrs), inits, x_shape), x_shape


def topk_case(rng):
    x_shape = [int(rng.integers(1, 6)) for _ in range(int(rng.integers(1, 4)))]
    r = len(x_shape)
    axis = int(rng.integers(-r, r))
    k = int(rng.integers(1, x_shape[axis % r] + 1))
    largest = int(rng.integers(0, 2))
    which = int(rng.integers(0, 2))
    inits = [("k", np.array([k], np.int64))]
    if which == 0:
        node = h.make_node("TopK", ["x", "k"], ["y", "i"], axis=axis, largest=largest)
        return model(node, inits, x_shape), x_shape
    # Indices as float, so the single float output checks them too; ties are made likely
    # by flooring the input.
    nodes = [h.make_node("Floor", ["x"], ["xr"]),
             h.make_node("TopK", ["xr", "k"], ["v", "i"], axis=axis, largest=largest),
             h.make_node("Cast", ["i"], ["y"], to=T.FLOAT)]
    return graph_model(nodes, inits, x_shape), x_shape


def new_ops_case(rng, i):
    kind = ["Erf", "LayerNormalization", "Split", "Slice", "LSTM", "TopK", "GRU"][i % 7]
    if kind == "TopK":
        return topk_case(rng)
    if kind == "GRU":
        return lstm_case(rng, "GRU")
    if kind == "LSTM":
        return lstm_case(rng)
    x_shape = [int(rng.integers(1, 6)) for _ in range(int(rng.integers(1, 5)))]
    r = len(x_shape)
    if kind == "Erf":
        # Spread the inputs over erf's whole range (tails included).
        k = np.array(float(rng.choice([0.5, 2.0, 4.0])), np.float32)
        nodes = [h.make_node("Mul", ["x", "k"], ["t"]), h.make_node("Erf", ["t"], ["y"])]
        return graph_model(nodes, [("k", k)], x_shape), x_shape
    if kind == "LayerNormalization":
        axis = int(rng.integers(-r, r))
        a = axis % r
        inner = x_shape[a:]
        # scale/bias: the full normalized shape, or a broadcastable suffix of it.
        cut = int(rng.integers(0, len(inner)))
        sshape = [1 if rng.integers(0, 3) == 0 else d for d in inner[cut:]]
        scale = rng.standard_normal(sshape).astype(np.float32)
        ins, inits = ["x", "s"], [("s", scale)]
        if rng.integers(0, 2):
            ins.append("b")
            inits.append(("b", rng.standard_normal(sshape).astype(np.float32)))
        eps = float(rng.choice([1e-5, 1e-3, 0.1]))
        node = h.make_node("LayerNormalization", ins, ["y"], axis=axis, epsilon=eps)
        return model(node, inits, x_shape), x_shape
    if kind == "Split":
        axis = int(rng.integers(-r, r))
        d = x_shape[axis % r] + int(rng.integers(0, 4))
        x_shape[axis % r] = d
        mode = int(rng.integers(0, 3))
        inits = []
        if mode == 0:  # explicit sizes
            n = int(rng.integers(1, min(d, 4) + 1))
            cuts = sorted(rng.choice(np.arange(1, d), size=n - 1, replace=False)) if n > 1 else []
            sizes = np.diff([0] + [int(c) for c in cuts] + [d]).astype(np.int64)
            split = h.make_node("Split", ["x", "sizes"], [f"p{k}" for k in range(n)], axis=axis)
            inits = [("sizes", sizes)]
        elif mode == 1:  # equal parts
            n = int(rng.choice([k for k in range(1, 5) if d % k == 0]))
            split = h.make_node("Split", ["x"], [f"p{k}" for k in range(n)], axis=axis)
        else:  # opset 18 num_outputs, last part shorter
            n = int(rng.integers(1, d + 1))
            c = -(-d // n)
            if c * (n - 1) >= d:
                raise ValueError
            split = h.make_node("Split", ["x"], [f"p{k}" for k in range(n)], axis=axis, num_outputs=n)
        cat = h.make_node("Concat", [f"p{k}" for k in reversed(range(n))], ["y"], axis=axis)
        return graph_model([split, cat], inits, x_shape), x_shape
    naxes = int(rng.integers(1, r + 1))
    axes = [int(a) for a in rng.permutation(r)[:naxes]]
    axes = [a - r if rng.integers(0, 2) else a for a in axes]
    big = np.iinfo(np.int64).max
    starts, ends, steps = [], [], []
    for a in axes:
        d = x_shape[a % r]
        st = int(rng.choice([rng.integers(-d - 2, d + 2), 0, -1]))
        en = int(rng.choice([rng.integers(-d - 2, d + 2), big, -big]))
        sp = int(rng.choice([1, 1, 2, 3, -1, -2]))
        starts.append(st)
        ends.append(en)
        steps.append(sp)
    inits = [("st", np.array(starts, np.int64)), ("en", np.array(ends, np.int64)),
             ("ax", np.array(axes, np.int64)), ("sp", np.array(steps, np.int64))]
    node = h.make_node("Slice", ["x", "st", "en", "ax", "sp"], ["y"])
    return model(node, inits, x_shape), x_shape


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    out = sys.argv[1]
    rng = np.random.default_rng(int(sys.argv[2]) if len(sys.argv) == 3 else 0)
    os.makedirs(out, exist_ok=True)
    ort.set_default_logger_severity(4)  # rejected geometries are expected; stay quiet
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    cases = []
    for kind, count in [("Conv", 60), ("ConvTranspose", 40), ("MaxPool", 40), ("AveragePool", 40),
                        ("Resize", 120), ("Misc", 60), ("New", 210)]:
        for i in range(count):
            try:
                if kind == "Resize":
                    m, xs = resize_case(rng)
                elif kind == "Misc":
                    m, xs = misc_case(rng, i)
                elif kind == "New":
                    m, xs = new_ops_case(rng, i)
                else:
                    m, xs = spatial_case(rng, kind)
            except ValueError:
                continue
            x = rng.standard_normal(xs).astype(np.float32)
            try:
                sess = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
                y = sess.run(None, {"x": x})[0]
            except Exception:
                continue  # a geometry onnxruntime rejects (e.g. kernel larger than input)
            if y.size == 0:
                continue
            if kind == "Resize" and crop_with_unit_scale(m, xs, y.shape):
                continue
            name = f"{kind.lower()}_{i:03d}"
            onnx.save(m, os.path.join(out, name + ".onnx"))
            np.save(os.path.join(out, name + "_x.npy"), x)
            np.save(os.path.join(out, name + "_y.npy"), np.ascontiguousarray(y))
            cases.append(name)
    print("\n".join(cases))


if __name__ == "__main__":
    main()
