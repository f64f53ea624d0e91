#!/usr/bin/env bash
# Create the PyTorch Metric Learning 2.9.0 venv used to record reference values for
# tests/test_pml_reference.py (bench/pml_compare.py writes tests/data/pml_reference.npz).
# torch==2.13.0 installs from a local CPU file (never plain `torch`: that pulls GBs of CUDA).
# Usage: bench/pml_env.sh [VENV_DIR]   (default /tmp/pml-venv; takes a few minutes)
set -euo pipefail
VENV="${1:-/tmp/pml-venv}"
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet torch==2.13.0
"$VENV/bin/pip" install --quiet pytorch-metric-learning==2.9.0 "numpy>=1.24" scikit-learn
echo "ready: $VENV/bin/python bench/pml_compare.py"
