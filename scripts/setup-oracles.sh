#!/usr/bin/env bash
# Creates .venv with the Python oracles (onnxruntime, onnx, numpy, LiteRT, TFLite Micro) that tests
# and benchmarks compare edgeopt against. Idempotent: skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! .venv/bin/python -c "import onnxruntime, onnx, numpy, ai_edge_litert, tflite_micro" 2>/dev/null; then
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check -r scripts/oracle/requirements.txt
fi
