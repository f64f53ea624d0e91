# simdex: the README's commands. Each target installs what it needs into its own
# virtual environment (.venv by default) and then runs.
#   make demo          install + run the demo (exact kNN table, near-duplicate image search)
#   make test          install + native sanitizer check + ruff + mypy + the whole test suite
#   make bench         install + benchmarks vs peers, rewrites bench/RESULTS.md
#   make check-native  C++ tests under AddressSanitizer + UBSan (part of make test)
#   make stress        60 s of concurrent add/replace/remove/reset/save/search checked
#                      against a serial model (make test runs a 3 s version)
#   make check-cuda-emu  the CUDA module's kernels and bindings on the CPU emulator
#                      (cuda/emu): its self-tests, then tests/test_gpu*.py under both
#                      stream orders (part of make test; needs no GPU)

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
EXTRAS ?= tf,plots,export,progress,data,test
SOURCES := $(shell git ls-files cpp cuda python CMakeLists.txt pyproject.toml 2>/dev/null)
STAMP = $(VENV)/.simdex-installed-$(EXTRAS)

.PHONY: demo test bench bench-gpu check-native check-cuda-emu install lint clean stress

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(STAMP): $(VENV)/bin/python $(SOURCES)
	$(PIP) install -q ".[$(EXTRAS)]"
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(PY) examples/knn_demo.py
	KERAS_BACKEND=tensorflow TF_CPP_MIN_LOG_LEVEL=2 $(PY) examples/near_duplicates.py --out demo_out

# What the CMake builds of check-native and check-cuda-emu need in the venv.
BUILD_DEPS = $(VENV)/.simdex-build-deps
$(BUILD_DEPS): $(VENV)/bin/python
	$(PIP) install -q "scipy-openblas32>=0.3.28" pybind11 cmake ninja
	touch $@

check-native: $(BUILD_DEPS)
	$(VENV)/bin/cmake -S . -B build/native-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug \
	  -DSIMDEX_PYTHON=OFF -DSIMDEX_CUDA=OFF -DSIMDEX_NATIVE_TESTS=ON \
	  -DSIMDEX_SANITIZE=address,undefined -DPython_EXECUTABLE=$(abspath $(PY)) > /dev/null
	$(VENV)/bin/cmake --build build/native-asan > /dev/null
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	  build/native-asan/simdex_native_tests

EMU_DIR := build/cuda-emu/cuda/emu
check-cuda-emu: $(STAMP) $(BUILD_DEPS)
	$(VENV)/bin/cmake -S . -B build/cuda-emu -G Ninja -DSIMDEX_CUDA=OFF -DSIMDEX_CUDA_EMU=ON \
	  -DPython_EXECUTABLE=$(abspath $(PY)) -Dpybind11_DIR="$$($(PY) -m pybind11 --cmakedir)" > /dev/null
	$(VENV)/bin/cmake --build build/cuda-emu --target simdex_cuda_emu simdex_emu_tests > /dev/null
	@# The self-tests provoke errors on purpose: their messages go to a log, shown on failure.
	$(EMU_DIR)/simdex_emu_tests 2> build/cuda-emu/selftest.log || { cat build/cuda-emu/selftest.log; exit 1; }
	SIMDEX_EMU_STREAM_ORDER=early $(EMU_DIR)/simdex_emu_tests 2> build/cuda-emu/selftest.log || \
	  { cat build/cuda-emu/selftest.log; exit 1; }
	SIMDEX_CUDA_EMULATOR=$(EMU_DIR) SIMDEX_EMU_STREAM_ORDER=late $(PY) -m pytest tests/test_gpu.py -q -p no:cacheprovider
	SIMDEX_CUDA_EMULATOR=$(EMU_DIR) SIMDEX_EMU_STREAM_ORDER=early $(PY) -m pytest tests/test_gpu.py -q -p no:cacheprovider
	SIMDEX_CUDA_EMULATOR=$(EMU_DIR) SIMDEX_EMU_DEVICES=0 $(PY) -m pytest tests/test_gpu_nodevice.py -q -p no:cacheprovider
	@# Smoke test of the GPU benchmark harness (tiny sizes; the timings mean nothing).
	SIMDEX_CUDA_EMULATOR=$(EMU_DIR) SIMDEX_BENCH_N=4000 SIMDEX_BENCH_Q=256 SIMDEX_BENCH_D=32 \
	  SIMDEX_BENCH_RESULTS=build/cuda-emu/bench $(PY) -m pytest bench/gpu/test_bench_gpu.py -q -p no:cacheprovider \
	  --benchmark-max-time=0.001 --benchmark-min-rounds=1 --benchmark-warmup=off

test: $(STAMP) check-native check-cuda-emu
	$(VENV)/bin/ruff check python tests bench examples
	$(VENV)/bin/mypy
	KERAS_BACKEND=tensorflow TF_CPP_MIN_LOG_LEVEL=2 $(PY) -m pytest tests -q

bench: EXTRAS := tf,plots,export,progress,data,test,bench
bench: $(VENV)/.simdex-installed-tf,plots,export,progress,data,test,bench
	test -x /tmp/tfsim-venv/bin/python || bash bench/tfsim_env.sh /tmp/tfsim-venv
	$(PY) -c 'import falconn' 2>/dev/null || bash bench/falconn_build.sh $(abspath $(PY)) || echo 'FALCONN did not build: its rows are skipped'
	cd bench && KERAS_BACKEND=tensorflow TF_CPP_MIN_LOG_LEVEL=2 ../$(PY) -m pytest . -q -s -p no:cacheprovider --benchmark-disable-gc
	$(PY) bench/lsh_report.py > bench/results/lsh.md
	$(PY) bench/report.py

$(VENV)/.simdex-installed-tf,plots,export,progress,data,test,bench: $(VENV)/bin/python $(SOURCES)
	$(PIP) install -q ".[tf,plots,export,progress,data,test,bench]"
	touch $@

stress: $(STAMP)
	SIMDEX_STRESS_SECONDS=$${SIMDEX_STRESS_SECONDS:-60} $(PY) -m pytest tests/test_stress.py -q -s -p no:cacheprovider

bench-gpu:
	bash bench/gpu/run.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check python tests bench examples
	$(VENV)/bin/ruff format --check python tests bench examples

clean:
	rm -rf build demo_out .pytest_cache
