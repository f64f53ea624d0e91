#!/usr/bin/env bash
# Build FALCONN 1.3.1 (the LSH peer used by bench/test_bench_lsh.py) and install it into a Python.
#
# FALCONN 1.3.1 is a 2017 sdist that bundles pybind11 2.x; that copy does not compile against
# Python 3.11. Here the sdist is unpacked in a temporary directory, its bundled pybind11 headers
# are replaced by the ones of the `pybind11` pip package (>= 2.10), the C++ standard is raised
# from -std=c++11 to -std=c++14 (needed by current pybind11), and the result is pip-installed.
# Nothing here touches the simdex package; FALCONN is a benchmark-only peer.
#
# Usage: bench/falconn_build.sh [PYTHON]     (default /work/main/.venv/bin/python)
# Needs: a C++14 compiler, the Python development headers, PyPI reachable through pip.
# The extension is built with FALCONN's own -O3 -march=native, so it suits the build machine only.
set -euo pipefail

PY="${1:-/work/main/.venv/bin/python}"
VERSION=1.3.1
"$PY" -c 'import sys; assert sys.version_info >= (3, 8), sys.version' >/dev/null

WORK="$(mktemp -d -t falconn-build.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"

echo "[falconn] downloading the FALCONN $VERSION sdist"
"$PY" -m pip download --quiet --no-binary :all: --no-deps "falconn==$VERSION" -d "$WORK/dl"
SDIST="$(ls "$WORK"/dl/*.tar.gz)"
tar xzf "$SDIST" -C "$WORK"
SRC="$WORK/FALCONN-$VERSION"
test -f "$SRC/setup.py" || { echo "[falconn] unexpected sdist layout: $(ls "$WORK")" >&2; exit 1; }

# pybind11 headers: from the target Python if it has the package, else a private copy in $WORK.
if PYB_INC="$("$PY" -c 'import pybind11; print(pybind11.get_include())' 2>/dev/null)"; then
    :
else
    echo "[falconn] pybind11 not in $PY; fetching it into the build directory only"
    "$PY" -m pip install --quiet --target "$WORK/pyb" "pybind11>=2.10"
    PYB_INC="$(PYTHONPATH="$WORK/pyb" "$PY" -c 'import pybind11; print(pybind11.get_include())')"
fi
PYB_VER="$(PYTHONPATH="${WORK}/pyb" "$PY" -c 'import pybind11; print(pybind11.__version__)')"
test -f "$PYB_INC/pybind11/pybind11.h" || { echo "[falconn] no pybind11 headers in $PYB_INC" >&2; exit 1; }
echo "[falconn] using pybind11 $PYB_VER headers from $PYB_INC"

# Swap the bundled pybind11 for the new headers (same path setup.py already points at).
rm -rf "$SRC/external/pybind11"
mkdir -p "$SRC/external/pybind11"
cp -r "$PYB_INC" "$SRC/external/pybind11/include"

# -std=c++11 -> -std=c++14; fail loudly if the flag is not where we expect it.
grep -q "'-std=c++11'" "$SRC/setup.py" || { echo "[falconn] setup.py has no -std=c++11 flag to patch" >&2; exit 1; }
sed -i "s/'-std=c++11'/'-std=c++14'/" "$SRC/setup.py"

echo "[falconn] compiling and installing into $PY (one C++ file; a minute or two)"
"$PY" -m pip install --quiet --no-deps --no-build-isolation --force-reinstall "$SRC"

cd /
"$PY" - <<'EOF'
import numpy as np

import falconn

p = falconn.get_default_parameters(1000, 16, falconn.DistanceFunction.NegativeInnerProduct, True)
x = np.random.default_rng(0).standard_normal((1000, 16)).astype(np.float32)
x /= np.linalg.norm(x, axis=1, keepdims=True)
index = falconn.LSHIndex(p)
index.setup(x)
q = index.construct_query_object(num_probes=p.l * 4)
assert q.find_nearest_neighbor(x[7]) == 7, "self-query did not return itself"
print(f"[falconn] ok: import falconn from {falconn.__file__}")
EOF
