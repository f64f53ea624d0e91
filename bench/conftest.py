"""Shared fixtures for the simdex benchmarks.

Every suite records its figures with the ``record`` fixture; at the end of the
session they are written to ``bench/results/<suite>.json`` together with the
machine, library versions and the BLAS kernels in use (threadpoolctl), and
``bench/report.py`` turns all result files into ``bench/RESULTS.md``.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections import defaultdict
from pathlib import Path

# faiss-cpu bundles an old OpenBLAS that picks a slow kernel on this class of AMD CPU
# unless told which core it runs on. OPENBLAS_CORETYPE steers every OpenBLAS in the
# process (faiss's, NumPy's and simdex's) alike; it must be set before any is loaded,
# and it is logged with the results. A value the user set is kept.
if "OPENBLAS_CORETYPE" not in os.environ:
    with open("/proc/cpuinfo") as _f:
        _flags = _f.read()
    os.environ["OPENBLAS_CORETYPE"] = "SkylakeX" if "avx512f" in _flags else "Haswell"

import pytest  # noqa: E402

RESULTS_DIR = Path(__file__).parent / "results"
_records: dict[str, list[dict]] = defaultdict(list)


def machine_info() -> dict:
    """CPU, cores, library versions and BLAS kernels, for the results header."""
    info: dict = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": len(os.sched_getaffinity(0)),
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "time_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import simdex

        info["simdex"] = simdex.build_info()
    except Exception as e:  # pragma: no cover - reported, not fatal
        info["simdex"] = repr(e)
    try:
        from threadpoolctl import threadpool_info

        info["blas"] = [
            {k: d.get(k) for k in ("prefix", "version", "architecture", "num_threads", "threading_layer")}
            for d in threadpool_info()
        ]
    except ImportError:
        pass
    return info


@pytest.fixture(scope="session")
def record(request):
    """``record(suite, **fields)`` stores one row of results for ``suite``."""

    def _record(suite: str, **fields) -> None:
        _records[suite].append(fields)
        print(f"[{suite}] " + ", ".join(f"{k}={v}" for k, v in fields.items()))

    return _record


def pytest_sessionfinish(session, exitstatus):
    if not _records:
        return
    RESULTS_DIR.mkdir(exist_ok=True)
    info = machine_info()
    for suite, rows in _records.items():
        path = RESULTS_DIR / f"{suite}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"suite": suite, "machine": info, "rows": rows}, indent=1, default=str))
        os.replace(tmp, path)
