"""Exact-integer onnxruntime sessions for the oracle scripts (one place).

On x86-64 CPUs without VNNI (e.g. AMD Zen 2), onnxruntime's default u8 x s8 integer
kernels use `vpmaddubsw`, whose i16 pair sums saturate for full-range int8 weights, so
quantized models compute something else there (measured: edgeopt's ResNet-8 QDQ export
84.32% instead of 87.08%; the MLPerf DS-CNN int8 outputs 29 steps off). The oracle must
compute what the model means on every machine, so sessions set
`session.x64quantprecision`, which makes onnxruntime convert such weights to u8 and use
its exact u8 x u8 kernels (a no-op with VNNI and on other ISAs).

onnxruntime 1.32 fails to initialize graphs that share an initializer between nodes
with that option ("Attempt to replace the existing tensor": the conversion rewrites the
shared zero point once per user); tf2onnx emits such graphs. Those are given to it with
every shared initializer duplicated per use, which changes nothing the graph computes.
"""
import copy

import onnx
import onnxruntime as ort


def session_options(threads=1):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.x64quantprecision", "1")
    return so


def unshared(model_path):
    """The model's bytes with every initializer used by several node inputs copied
    once per extra use (and every DequantizeLinear of initializers read by several
    nodes copied once per extra reader)."""
    m = onnx.load(model_path)
    g = m.graph
    inits = {t.name: t for t in g.initializer}
    # A DequantizeLinear of constants read by several nodes (a weight shared by the
    # steps of an unrolled recurrent layer) is the same sharing one level up: one
    # copy of the node per extra reader.
    clones = []
    for node in list(g.node):
        if node.op_type != "DequantizeLinear" or not all(i in inits for i in node.input if i):
            continue
        out = node.output[0]
        k = 0
        for other in g.node:
            for i, name in enumerate(other.input):
                if name != out:
                    continue
                k += 1
                if k == 1:
                    continue
                c = copy.deepcopy(node)
                c.name = f"{node.name}__use{k}"
                c.output[0] = f"{out}__use{k}"
                other.input[i] = c.output[0]
                clones.append(c)
    # Clones go first: their inputs are initializers, so the order stays topological.
    nodes = clones + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    uses = {}
    copies = []
    for node in g.node:
        for i, name in enumerate(node.input):
            if name not in inits:
                continue
            k = uses.get(name, 0)
            uses[name] = k + 1
            if k > 0:
                t = copy.deepcopy(inits[name])
                t.name = f"{name}__use{k}"
                copies.append(t)
                node.input[i] = t.name
    g.initializer.extend(copies)
    return m.SerializeToString()


def make_session(model, threads=1, configure=None):
    """An exact-integer CPU session for the model file `model`; `configure(opts)` may
    set more options (log level) on each attempt."""

    def attempt(source):
        so = session_options(threads)
        if configure is not None:
            configure(so)
        return ort.InferenceSession(source, so, providers=["CPUExecutionProvider"])

    try:
        return attempt(model)
    except Exception:
        return attempt(unshared(model))
