#!/usr/bin/env bash
# Create the TensorFlow Similarity 0.17.1 venv used as a peer by bench/test_bench_model.py.
# TF Similarity needs tf-keras (Keras 2) and numpy<2, so it lives apart from the simdex venv.
# Usage: bench/tfsim_env.sh [VENV_DIR]   (default /tmp/tfsim-venv; takes a few minutes)
set -euo pipefail
VENV="${1:-/tmp/tfsim-venv}"
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet tensorflow-similarity==0.17.1 tf-keras tensorflow "numpy<2"
echo "ready: SIMDEX_TFSIM_PYTHON=$VENV/bin/python (run with TF_USE_LEGACY_KERAS=1)"
