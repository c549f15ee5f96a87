"""Top-1 accuracy of an ONNX classifier in onnxruntime (CPU, default optimizations).

usage: onnx_accuracy.py MODEL X.npy Y.npy
X is fed as float32 (no other preprocessing); prints {"accuracy": %, "n": N} as JSON.
"""
import json
import sys

import numpy as np
from ort_options import make_session


def main():
    model, xp, yp = sys.argv[1:4]
    x = np.load(xp).astype(np.float32)
    y = np.load(yp).astype(np.int64)
    s = make_session(model, 2)
    name = s.get_inputs()[0].name
    correct = 0
    for i in range(0, len(x), 500):
        out = s.run(None, {name: x[i : i + 500]})[0]
        correct += int((out.argmax(1) == y[i : i + 500]).sum())
    print(json.dumps({"accuracy": 100.0 * correct / len(x), "n": int(len(x))}))


if __name__ == "__main__":
    main()
