"""onnxruntime sessions for the oracle scripts (one place).

On x86-64 CPUs without VNNI (e.g. AMD Zen 2), onnxruntime's default u8 x s8 integer
kernels use `vpmaddubsw`, whose i16 pair sums saturate for full-range int8 weights, so
quantized models lose accuracy there (measured: edgeopt's ResNet-8 QDQ export 84.32%
instead of 87.08%; the MLPerf DS-CNN int8 outputs 29 steps off). The oracle must
compute what the model means on every machine, so:
- `session.x64quantprecision` makes onnxruntime promote such products to int16
  (exact, slower); a no-op with VNNI and on other ISAs;
- onnxruntime 1.32 fails to initialize some tf2onnx int8 graphs with that option
  ("Attempt to replace the existing tensor"); those are retried without the s8 -> u8
  rewrite (`QDQS8ToU8Transformer`), so their int8 activations run on the s8 x s8
  kernels, which widen to int16 and do not saturate.
"""
import onnxruntime as ort


def session_options(threads=1, precise=True):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    if precise:
        so.add_session_config_entry("session.x64quantprecision", "1")
    return so


def make_session(model, threads=1, configure=None):
    """An exact-integer CPU session for `model` (path or bytes); `configure(opts)` may
    set more options (log level, optimized-model path) on each attempt."""
    attempts = [(True, None), (False, ["QDQS8ToU8Transformer"])]
    for i, (precise, disabled) in enumerate(attempts):
        so = session_options(threads, precise)
        if configure is not None:
            configure(so)
        kw = {"disabled_optimizers": disabled} if disabled else {}
        try:
            return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"], **kw)
        except Exception:
            if i == len(attempts) - 1:
                raise
