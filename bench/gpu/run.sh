#!/usr/bin/env bash
# Build simdex with CUDA, run the GPU tests and the GPU benchmarks, in one command.
#
#   bench/gpu/run.sh                      # full sizes: N=10M, Q=10k, d=128, k=10
#   SIMDEX_BENCH_N=1000000 bench/gpu/run.sh   # smaller
#
# Needs: nvcc (CUDA >= 12), a CUDA device, and a Python with numpy, scipy-openblas32,
# pybind11, scikit-build-core, ninja, pytest, pytest-benchmark ($PYTHON, default
# .venv/bin/python if present, else python3). CuPy (cupy-cuda12x / cupy-cuda13x)
# enables the cuBLAS-rate and CuPy-baseline comparisons; without it they are skipped.
# Writes bench/results/gpu.json (pytest-benchmark) and bench/results/gpu_summary.json.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
mkdir -p bench/results
echo "== environment"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true
nvcc --version | tail -1
"$PY" -c "import numpy, pybind11, scikit_build_core, pytest, pytest_benchmark; print('python deps ok')"
"$PY" -c "import cupy; print('cupy', cupy.__version__)" || echo "cupy missing: cuBLAS comparisons will be skipped"

echo "== build (CUDA part must compile; -Werror)"
start=$(date +%s)
"$PY" -m pip install --no-build-isolation -e . -v -Ccmake.define.SIMDEX_CUDA=ON 2>&1 | tee bench/results/gpu_build.log | grep -E "CUDA|error|warning" || true
echo "build took $(( $(date +%s) - start )) s"
"$PY" -c "import simdex.gpu as g; assert g.cuda_available(), g.no_cuda_reason(); print(g.device_info())"

echo "== tests"
"$PY" -m pytest tests/test_gpu.py tests/test_gpu_nodevice.py -q -rs 2>&1 | tee bench/results/gpu_tests.log

echo "== benchmarks"
"$PY" -m pytest bench/gpu/test_bench_gpu.py -q -s -p no:cacheprovider \
  --benchmark-json bench/results/gpu.json --benchmark-columns=min,mean,max,rounds 2>&1 | tee bench/results/gpu_bench.log
echo "== wrote bench/results/gpu.json and bench/results/gpu_summary.json"
