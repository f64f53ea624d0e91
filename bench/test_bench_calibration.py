"""Benchmark: vectorised calibration vs a naive per-threshold loop.

Run:
    PYTHONPATH=python .venv/bin/python -m pytest bench/test_bench_calibration.py -q

Both implementations get the same synthetic queries (one neighbour each; right
matches closer on average than wrong ones) in the same process. The naive peer
does what a straightforward implementation does: for every distinct distance,
mask all queries and count TP/FP/TN/FN, O(n * m). Its curves are checked
against ``simdex.calibrate``'s, so a wrong fast answer fails the benchmark.
Numbers are written to ``bench/results/calibration.json``.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytest_benchmark")

from simdex.calibration import calibrate  # noqa: E402
from simdex.index.io import atomic_writer  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "calibration.json"
FAST_SIZES = (1_000, 10_000, 100_000, 1_000_000)
NAIVE_SIZES = (1_000, 10_000, 100_000)
_records: dict[str, dict[str, float | int | str]] = {}


def _data(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    q = rng.integers(0, 100, size=n)
    right = rng.random(n) < 0.7
    d = np.where(right, rng.gamma(2.0, 0.1, size=n), rng.gamma(4.0, 0.1, size=n))
    nl = np.where(right, q, (q + 1) % 100)
    return d[:, None], nl[:, None], q


def naive_calibrate(d, nl, q):
    """Per-threshold loop: F1/precision/recall at each distinct distance, then the optimum."""
    right = nl[:, 0] == q
    dist = d[:, 0]
    thresholds = np.unique(dist[np.isfinite(dist)])
    f1 = np.empty(thresholds.size)
    precision = np.empty(thresholds.size)
    recall = np.empty(thresholds.size)
    for i, t in enumerate(thresholds):
        within = dist <= t
        tp = np.count_nonzero(right & within)
        fp = np.count_nonzero(~right & within)
        fn = np.count_nonzero(right & ~within)
        precision[i] = tp / (tp + fp) if tp + fp else 1.0
        recall[i] = tp / (tp + fn) if tp + fn else 0.0
        f1[i] = 2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else 0.0
    best = int(np.flatnonzero(f1 == f1.max())[-1])
    return thresholds, f1, precision, recall, best


@pytest.fixture(scope="module", autouse=True)
def _write_results():
    yield
    if not _records:
        return
    for n in NAIVE_SIZES:
        fast, naive = _records.get(f"simdex_n{n}"), _records.get(f"naive_n{n}")
        if fast and naive:
            # min over rounds: the least disturbed run on a shared machine
            naive["speedup_of_simdex"] = round(float(naive["min_s"]) / float(fast["min_s"]), 1)
    payload = {
        "benchmark": "calibration (k=1, match_nearest, f1 + precision/recall/binary_accuracy)",
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "cpus": os.cpu_count(),
        },
        "results": _records,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with atomic_writer(RESULTS) as f:
        f.write(json.dumps(payload, indent=2, sort_keys=True).encode())


def _record(key: str, benchmark, n: int, num_thresholds: int) -> None:
    stats = getattr(benchmark, "stats", None)
    if stats is None:  # --benchmark-disable
        return
    s = stats.stats
    _records[key] = {
        "queries": n,
        "thresholds": num_thresholds,
        "mean_s": s.mean,
        "min_s": s.min,
        "rounds": s.rounds,
    }


@pytest.mark.parametrize("n", FAST_SIZES)
def test_bench_simdex_calibrate(benchmark, n):
    d, nl, q = _data(n)
    benchmark.group = "calibration"
    res = benchmark.pedantic(calibrate, args=(d, nl, q), rounds=5, iterations=1, warmup_rounds=1)
    assert res.thresholds["distance"].size > 0.99 * n  # continuous distances: ~n thresholds
    _record(f"simdex_n{n}", benchmark, n, res.thresholds["distance"].size)


@pytest.mark.parametrize("n", NAIVE_SIZES)
def test_bench_naive_per_threshold_loop(benchmark, n):
    d, nl, q = _data(n)
    benchmark.group = "calibration"
    rounds = 5 if n <= 1_000 else 2 if n <= 10_000 else 1
    t, f1, precision, recall, best = benchmark.pedantic(
        naive_calibrate, args=(d, nl, q), rounds=rounds, iterations=1
    )
    res = calibrate(d, nl, q, rounding=None)
    np.testing.assert_array_equal(res.thresholds["distance"], t)
    np.testing.assert_array_equal(res.thresholds["f1"], f1)
    np.testing.assert_array_equal(res.thresholds["precision"], precision)
    np.testing.assert_array_equal(res.thresholds["recall"], recall)
    assert res.cutpoints["optimal"]["distance"] == t[best]
    _record(f"naive_n{n}", benchmark, n, t.size)
