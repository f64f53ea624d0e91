"""Smoke test of an installed simdex wheel (``make wheel``, cibuildwheel's test-command).

Run with the interpreter of a clean virtual environment holding only the wheel and its
dependencies: ``python tests/wheel_smoke.py``. Not a pytest module (the name does not
start with ``test_``): it needs neither pytest nor the source tree, and exits non-zero
on the first failed check.
"""

from __future__ import annotations

import os
import sys
import tempfile

import numpy as np


def _check(cond: bool, what: str) -> None:
    if not cond:
        raise SystemExit(f"wheel smoke test FAILED: {what}")
    print(f"ok  {what}")


def _loaded_blas() -> list[str]:
    """Paths of the OpenBLAS libraries mapped into this process (Linux)."""
    with open("/proc/self/maps") as f:
        paths = {line.split()[-1] for line in f if "openblas" in line.rsplit("/", 1)[-1]}
    return sorted(paths)


def main() -> None:
    import simdex

    pkg_dir = os.path.dirname(os.path.realpath(simdex.__file__))
    source_pkg = os.path.realpath(os.path.join(os.path.dirname(__file__), "..", "python", "simdex"))
    _check(pkg_dir != source_pkg, f"simdex imported from the installed wheel ({pkg_dir})")
    info = simdex.build_info()
    print("    build_info:", info)
    if any(f.startswith("_cuda.") and f.endswith(".so") for f in os.listdir(pkg_dir)):  # SIMDEX_CUDA=ON
        import simdex._cuda  # noqa: F401  (static cudart: imports without a driver)

        _check(isinstance(info["cuda_available"], bool), "the CUDA module imports")

    rng = np.random.default_rng(0)
    n, d, k = 2000, 24, 5
    base = rng.normal(size=(n, d)).astype(np.float32)
    queries = rng.normal(size=(7, d)).astype(np.float32)

    # Exact search against a NumPy oracle (cosine distances; ties are unlikely on
    # random data, but compare distances, and ids where the gap is clear).
    index = simdex.ExactIndex(dim=d, metric="cosine")
    ids = index.add(base)
    _check(len(index) == n and ids.shape == (n,), "ExactIndex.add")
    D, I = index.search(queries, k=k)
    unit = base / np.linalg.norm(base, axis=1, keepdims=True)
    qn = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    ref = 1.0 - qn @ unit.T
    ref_d = np.sort(ref, axis=1)[:, :k]
    _check(D.shape == (7, k) and I.dtype == np.int64, "ExactIndex.search shapes and dtypes")
    _check(bool(np.allclose(D, ref_d, atol=1e-5)), "ExactIndex.search distances equal the NumPy oracle")
    _check(bool(np.all(ref[np.arange(7)[:, None], I] <= ref_d[:, -1:] + 1e-5)), "ExactIndex.search ids")

    # LSH: the query points themselves are in the base, so each finds itself first.
    lsh = simdex.LSHIndex(dim=d, num_tables=8, hash_bits=8, num_probes=4, seed=0)
    lsh.add(base)
    D2, I2 = lsh.search(base[:20], k=k)
    _check(D2.shape == (20, k), "LSHIndex.search shapes")
    _check(bool(np.all(I2[:, 0] == np.arange(20))), "LSHIndex.search finds each stored vector first")

    # Save and load both kinds.
    with tempfile.TemporaryDirectory() as tmp:
        for name, ix, q in (("exact", index, queries), ("lsh", lsh, base[:20])):
            path = os.path.join(tmp, f"{name}.simdex")
            ix.save(path)
            back = simdex.load_index(path)
            Da, Ia = ix.search(q, k=k)
            Db, Ib = back.search(q, k=k)
            _check(
                type(back) is type(ix) and np.array_equal(Ia, Ib) and np.array_equal(Da, Db),
                f"{type(ix).__name__} save/load round trip",
            )

    # Self-contained: the BLAS in use is the copy inside the installed package.
    blas = _loaded_blas()
    libs_dir = os.path.join(os.path.dirname(pkg_dir), "simdex.libs")  # where auditwheel grafts
    inside = [p for p in blas if p.startswith((pkg_dir + os.sep, libs_dir + os.sep))]
    outside = [p for p in blas if "scipy_openblas32" in p]
    _check(bool(inside) and not outside, f"the BLAS is loaded from inside the wheel: {blas}")
    print("wheel smoke test passed:", sys.version.split()[0], info.get("machine"))


if __name__ == "__main__":
    main()
