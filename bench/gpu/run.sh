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

echo "== build (the CUDA module must compile; warnings are logged, not fatal, since this"
echo "   machine's nvcc may be another version than CI's, where they are errors)"
start=$(date +%s)
if ! "$PY" -m pip install --no-build-isolation -e . -v -Cbuild-dir=build/gpu-run -Ccmake.define.SIMDEX_CUDA=ON \
    -Ccmake.define.SIMDEX_CUDA_WERROR=OFF > bench/results/gpu_build.log 2>&1; then
  tail -40 bench/results/gpu_build.log
  echo "BUILD FAILED (full log: bench/results/gpu_build.log)"
  exit 1
fi
grep -E "simdex: |warning" bench/results/gpu_build.log || true
echo "build took $(( $(date +%s) - start )) s"
"$PY" -c "import simdex.gpu as g; assert g.cuda_available(), g.no_cuda_reason(); print(g.device_info())"

status=0
echo "== tests"
"$PY" -m pytest tests/test_gpu.py tests/test_gpu_nodevice.py -q -rs > bench/results/gpu_tests.log 2>&1 || status=1
tail -30 bench/results/gpu_tests.log
[[ $status -eq 0 ]] || echo "GPU TESTS FAILED (log: bench/results/gpu_tests.log); running the benchmarks anyway"

echo "== benchmarks"
"$PY" -m pytest bench/gpu/test_bench_gpu.py -q -s -p no:cacheprovider \
  --benchmark-json bench/results/gpu.json --benchmark-columns=min,mean,max,rounds \
  > bench/results/gpu_bench.log 2>&1 || status=1
tail -60 bench/results/gpu_bench.log
echo "== wrote bench/results/gpu.json and bench/results/gpu_summary.json (logs: bench/results/gpu_*.log)"
exit $status
