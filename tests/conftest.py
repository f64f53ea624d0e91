"""What the tests share: the metric names, a float64 distance oracle, k-NN by that oracle, data.

Test modules import these directly: ``from conftest import METRICS, oracle_distances``.
"""

from __future__ import annotations

import numpy as np

METRICS = ("cosine", "ip", "l2", "sql2")


def oracle_distances(q: np.ndarray, x: np.ndarray, metric: str) -> np.ndarray:
    """All (q, n) distances in float64, with simdex's conventions (a zero vector is at cosine distance 1)."""
    q = np.atleast_2d(np.asarray(q, np.float64))
    x = np.atleast_2d(np.asarray(x, np.float64))
    if metric == "cosine":
        qn = np.linalg.norm(q, axis=1, keepdims=True)
        xn = np.linalg.norm(x, axis=1, keepdims=True)
        qn[qn == 0] = 1.0
        xn[xn == 0] = 1.0
        return 1.0 - (q / qn) @ (x / xn).T
    if metric == "ip":
        return -(q @ x.T)
    sq = np.maximum((q**2).sum(1)[:, None] + (x**2).sum(1)[None, :] - 2.0 * (q @ x.T), 0.0)
    return np.sqrt(sq) if metric == "l2" else sq


def oracle_knn(
    q: np.ndarray, x: np.ndarray, k: int, metric: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(distances, ids, all distances)``: the k nearest rows of ``x`` by the oracle, ties by smaller id."""
    dist = oracle_distances(q, x, metric)
    rows = np.broadcast_to(np.arange(dist.shape[1]), dist.shape)
    order = np.lexsort((rows, dist), axis=1)[:, :k]
    return np.take_along_axis(dist, order, 1), order, dist


def random_vectors(n: int, d: int, seed: int) -> np.ndarray:
    """(n, d) float32 standard normal vectors."""
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
