#!/usr/bin/env python3
"""onnxruntime's static post-training quantization, as the reference PTQ tool.

    ort_quantize_static.py MODEL.onnx CALIB.npy OUT.onnx [--method MinMax|Entropy|Percentile]
                           [--per-tensor] [--percentile 99.999]

CALIB.npy holds the calibration inputs exactly as the model takes them ([N, ...],
float32); each row is fed at batch 1. Writes a QDQ model (int8 activations and
weights, per-channel weights unless --per-tensor), the format edgeopt's bench compares
against. Deterministic for a given input.
"""
import argparse
import os
import sys
import tempfile

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process


class Reader(CalibrationDataReader):
    def __init__(self, name, x):
        self.name = name
        self.x = x
        self.i = 0

    def get_next(self):
        if self.i >= len(self.x):
            return None
        r = {self.name: self.x[self.i : self.i + 1]}
        self.i += 1
        return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("calib")
    ap.add_argument("out")
    ap.add_argument("--method", default="MinMax", choices=["MinMax", "Entropy", "Percentile"])
    ap.add_argument("--per-tensor", action="store_true")
    ap.add_argument("--percentile", type=float, default=99.999)
    a = ap.parse_args()
    x = np.load(a.calib).astype(np.float32)
    m = onnx.load(a.model)
    name = m.graph.input[0].name
    with tempfile.TemporaryDirectory() as d:
        pre = os.path.join(d, "pre.onnx")
        # ORT's recommended pre-processing (shape inference, graph optimization).
        quant_pre_process(a.model, pre, skip_symbolic_shape=True)
        extra = {}
        if a.method == "Percentile":
            extra["CalibPercentile"] = a.percentile
        tmp = a.out + ".tmp"
        quantize_static(
            pre,
            tmp,
            Reader(name, x),
            quant_format=QuantFormat.QDQ,
            per_channel=not a.per_tensor,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=getattr(CalibrationMethod, a.method),
            extra_options=extra,
        )
        os.replace(tmp, a.out)
    print(f"wrote {a.out} ({a.method}, {'per-tensor' if a.per_tensor else 'per-channel'})", file=sys.stderr)


if __name__ == "__main__":
    main()
