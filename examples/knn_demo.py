"""simdex demo, part 1: exact and LSH search on 100k clustered vectors vs NumPy.

Run with ``make demo`` (or ``python examples/knn_demo.py``). Prints recall@10
against a NumPy brute-force oracle and a throughput table. Figures are from this
run on this machine; they vary with load.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import simdex


def clustered(n: int, d: int, n_clusters: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, d), dtype=np.float32)
    labels = rng.integers(0, n_clusters, n)
    return centres[labels] + 0.5 * rng.standard_normal((n, d), dtype=np.float32)


def numpy_knn(q: np.ndarray, x: np.ndarray, k: int, block: int = 500) -> np.ndarray:
    """Cosine kNN with NumPy: normalise, matmul, argpartition, sort (in query blocks)."""
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    out = np.empty((q.shape[0], k), np.int64)
    for s in range(0, q.shape[0], block):
        sims = qn[s : s + block] @ xn.T
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, part, 1), axis=1)
        out[s : s + block] = np.take_along_axis(part, order, 1)
    return out


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found.tolist(), truth.tolist())]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=2_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()

    n, nq, d, k = args.n, args.queries, args.dim, args.k
    print(f"simdex {simdex.__version__}: {n:,} clustered vectors, d={d}, {nq:,} queries, k={k}")
    info = simdex.build_info()
    print(f"  threads={info['num_threads']}  simd={info['simd']}  blas: {info['blas']}")
    data = clustered(n + nq, d, n_clusters=500, seed=0)
    x, q = data[:n], data[n:]

    rows = []
    t0 = time.perf_counter()
    truth = numpy_knn(q, x, k)
    t_np = time.perf_counter() - t0
    rows.append(("numpy matmul + argpartition", 0.0, t_np, 1.0))

    index = simdex.ExactIndex(d, metric="cosine")
    t0 = time.perf_counter()
    index.add(x)
    t_add = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, ids = index.search(q, k=k)
    t_exact = time.perf_counter() - t0
    rows.append(("simdex.ExactIndex", t_add, t_exact, recall(ids, truth)))

    if hasattr(simdex, "LSHIndex"):
        try:
            lsh = simdex.LSHIndex(d, num_tables=16, hash_bits=16, num_probes=8, seed=0)
        except TypeError:  # pragma: no cover - older signature
            lsh = None
        if lsh is not None:
            t0 = time.perf_counter()
            lsh.add(x)
            t_ladd = time.perf_counter() - t0
            t0 = time.perf_counter()
            _, lids = lsh.search(q, k=k)
            t_lsh = time.perf_counter() - t0
            rows.append(
                ("simdex.LSHIndex (16 tables x 16 bits, 8 probes)", t_ladd, t_lsh, recall(lids, truth))
            )

    print()
    print(f"{'method':<52} {'build s':>8} {'queries/s':>11} {'vs numpy':>9} {'recall@10':>10}")
    for name, t_build, t_search, rec in rows:
        print(f"{name:<52} {t_build:>8.2f} {nq / t_search:>11,.0f} {t_np / t_search:>8.1f}x {rec:>10.3f}")
    print("\nrecall@10 is measured against the NumPy oracle in this run.")


if __name__ == "__main__":
    main()
