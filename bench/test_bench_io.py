"""Index files: memory-mapped load vs today's full load; filtered vs unfiltered search.

Load (``io`` suite). Each mode runs in a fresh process on a file already in the page
cache, so the figures are the library's cost, not the disk's: ``load_s`` is the
``load_index`` call, ``peak_rss_mib`` the process's peak RSS after loading and one
search (which, for the map, touches every page), ``rss_over_file`` its ratio to the
file size. Peer: faiss ``read_index`` of the same vectors in an IndexFlatIP, with
and without ``IO_FLAG_MMAP``, when faiss is installed. Bar (issue 14): mmap load at
least 10x faster than the full load, peak RSS under 1.2x the file.

Filters (``filter`` suite). A 10% allow-list (random ids) vs no filter on the same
index and queries, exact and LSH: the filter is applied in the native scan, so a
selective filter should cost no more than an unfiltered search. Recall is reported
for LSH against the exact filtered answer. Bar: filtered at 10% no slower.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import simdex
from datasets import gaussian

N = int(os.environ.get("SIMDEX_BENCH_N", 1_000_000))
D = 128
THREADS = int(os.environ.get("SIMDEX_BENCH_THREADS", 2))

_LOAD = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np, simdex

    def hwm_kib():  # peak RSS of this process image (ru_maxrss would include the parent's)
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))

    path, mode = sys.argv[1], sys.argv[2]
    base = hwm_kib()
    t0 = time.perf_counter()
    if mode.startswith("faiss"):
        import faiss
        index = faiss.read_index(path, faiss.IO_FLAG_MMAP if mode == "faiss_mmap" else 0)
        dt = time.perf_counter() - t0
        index.search(np.ones((1, index.d), np.float32), 10)
    else:
        index = simdex.load_index(path, mmap=(mode == "simdex_mmap"))
        dt = time.perf_counter() - t0
        index.search(np.ones(index.dim, np.float32), 10)
    peak = hwm_kib()
    print(json.dumps({"load_s": dt, "peak_rss_kib": peak, "base_rss_kib": base}))
    """
)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    x = gaussian(N, D, seed=1)
    index = simdex.ExactIndex(D)
    index.add(x)
    path = tmp_path_factory.mktemp("io") / "exact.simdex"
    index.save(path)
    paths = {"simdex": str(path)}
    try:
        import faiss

        fx = faiss.IndexFlatIP(D)
        fx.add(x)
        paths["faiss"] = str(path.with_suffix(".faiss"))
        faiss.write_index(fx, paths["faiss"])
    except ImportError:
        pass
    del index, x
    for p in paths.values():  # into the page cache
        with open(p, "rb") as f:
            while f.read(1 << 24):
                pass
    return paths


def _load(path: str, mode: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS)}
    out = subprocess.run(
        [sys.executable, "-c", _LOAD, path, mode], capture_output=True, text=True, env=env, timeout=600
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_load_mmap_vs_full(saved, record):
    size = os.path.getsize(saved["simdex"])
    rows = {}
    modes = ["simdex_full", "simdex_mmap"] + (["faiss_full", "faiss_mmap"] if "faiss" in saved else [])
    for mode in modes:
        path = saved["faiss" if mode.startswith("faiss") else "simdex"]
        best = min((_load(path, mode) for _ in range(3)), key=lambda r: r["load_s"])
        rows[mode] = best
        record(
            "io",
            mode=mode,
            n=N,
            d=D,
            file_mib=round(os.path.getsize(path) / 2**20, 1),
            load_s=round(best["load_s"], 4),
            peak_rss_mib=round(best["peak_rss_kib"] / 1024, 1),
            rss_over_file=round(best["peak_rss_kib"] * 1024 / os.path.getsize(path), 3),
            interpreter_rss_mib=round(best["base_rss_kib"] / 1024, 1),
        )
    speedup = rows["simdex_full"]["load_s"] / rows["simdex_mmap"]["load_s"]
    record("io", mode="mmap speedup over full load", load_s=round(speedup, 1))
    assert speedup >= 10, f"mmap load only {speedup:.1f}x faster"
    assert rows["simdex_mmap"]["peak_rss_kib"] * 1024 < 1.2 * size


def _best(fn, rounds=5):
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


@pytest.mark.parametrize("kind", ["exact", "lsh"])
@pytest.mark.parametrize("nq", [1, 100])
def test_filtered_search_10pct(kind, nq, record):
    n = min(N, 1_000_000 if kind == "exact" else 400_000)
    x = gaussian(n, D, seed=3)
    q = gaussian(nq, D, seed=4)
    ids = np.random.default_rng(5).permutation(n)
    allowed = np.sort(ids[: n // 10])
    if kind == "exact":
        index = simdex.ExactIndex(D)
    else:
        index = simdex.LSHIndex(D, num_tables=16, hash_bits=12, num_probes=16)
    index.add(x)
    index.search(q[:1], 10)  # warm
    t_plain, _ = _best(lambda: index.search(q, 10, num_threads=THREADS))
    t_filt, (D_f, I_f) = _best(lambda: index.search(q, 10, filter=allowed, num_threads=THREADS))
    row = dict(
        index=kind,
        n=n,
        queries=nq,
        selectivity=0.1,
        unfiltered_s=round(t_plain, 5),
        filtered_s=round(t_filt, 5),
        filtered_over_unfiltered=round(t_filt / t_plain, 3),
    )
    if kind == "lsh":
        exact = simdex.ExactIndex(D)
        exact.add(x)
        _, truth = exact.search(q, 10, filter=allowed)
        row["recall_at_10"] = round(
            float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(I_f, truth)])), 3
        )
    record("filter", **row)
    assert t_filt <= 1.05 * t_plain, row
