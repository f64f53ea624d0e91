"""Embedding-quality metrics in PyTorch Metric Learning's shape: NMI, AMI and ``AccuracyCalculator``.

:func:`cluster_scores` clusters embeddings with k-means (one cluster per
class) and scores the clusters against the labels with scikit-learn's
normalised and adjusted mutual information. :class:`AccuracyCalculator` is a
facade with PyTorch Metric Learning's constructor and ``get_accuracy``
signature, so code written for it ports by changing the import; the retrieval
metrics come from :func:`simdex.metrics.evaluate_retrieval` on exact
neighbours from :func:`simdex.knn`.

Example:
    >>> calc = AccuracyCalculator(include=("precision_at_1", "r_precision"))  # doctest: +SKIP
    >>> calc.get_accuracy(query, query_labels, reference, reference_labels)  # doctest: +SKIP
    {'precision_at_1': 0.93, 'r_precision': 0.81}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from simdex._validate import MISSING_LABEL, as_labels, canonical_metric
from simdex.evaluate import metrics as _metrics

__all__ = ["AccuracyCalculator", "cluster_scores"]

_SKLEARN_HINT = 'NMI/AMI need scikit-learn: pip install "simdex[data]" (or pip install scikit-learn)'

# PyTorch Metric Learning's metric names -> the names evaluate_retrieval takes.
_KNN_METRICS = {
    "precision_at_1": "precision@1",
    "r_precision": "r_precision",
    "mean_average_precision_at_r": "map@r",
    "mean_average_precision": "mean_average_precision",
    "mean_reciprocal_rank": "mrr@k",
}
_CLUSTER_METRICS = ("NMI", "AMI")
METRICS = tuple(sorted((*_KNN_METRICS, *_CLUSTER_METRICS)))


def _as_embeddings(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array (n, d), got shape {arr.shape}")
    arr = arr.astype(np.float32, copy=False)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinity")
    return arr


def _as_labels(y: Any, n: int, name: str) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    arr = as_labels(arr, name, ndim=1)
    if arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} labels for {n} embeddings")
    return arr


def cluster_scores(
    embeddings: Any, labels: Any, *, num_clusters: int | None = None, seed: int = 0
) -> dict[str, float]:
    """NMI and AMI of a k-means clustering of ``embeddings`` against ``labels``.

    Args:
        embeddings: ``(n, d)`` float embeddings.
        labels: ``(n,)`` int labels.
        num_clusters: Clusters to make (default: the number of distinct labels,
            as PyTorch Metric Learning does).
        seed: Seed of k-means (scikit-learn's ``KMeans``, ``n_init=10``).

    Returns:
        ``{"NMI": float, "AMI": float}``. PyTorch Metric Learning clusters with
        faiss, so figures agree with it up to the clustering found, not exactly.

    Raises:
        ImportError: scikit-learn is missing (with an install hint).
        ValueError: bad shapes, NaN, fewer examples than clusters.
    """
    try:
        from sklearn.cluster import KMeans
        from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(_SKLEARN_HINT) from e
    x = _as_embeddings(embeddings, "embeddings")
    y = _as_labels(labels, x.shape[0], "labels")
    k = int(np.unique(y).size) if num_clusters is None else int(num_clusters)
    if not 1 <= k <= x.shape[0]:
        raise ValueError(f"num_clusters must be in [1, {x.shape[0]}], got {k}")
    pred = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(x.astype(np.float64))
    return {
        "NMI": float(normalized_mutual_info_score(y, pred)),
        "AMI": float(adjusted_mutual_info_score(y, pred)),
    }


class AccuracyCalculator:
    """PyTorch Metric Learning's ``AccuracyCalculator``, computed by simdex.

    Args:
        include: Metric names to compute (default: all of :data:`METRICS`:
            ``"AMI"``, ``"NMI"``, ``"mean_average_precision"``,
            ``"mean_average_precision_at_r"``, ``"mean_reciprocal_rank"``,
            ``"precision_at_1"``, ``"r_precision"``).
        exclude: Metric names to leave out.
        avg_of_avgs: Average per class first, then over classes.
        k: Neighbours to retrieve: ``None`` or ``"all"`` (every reference item,
            PyTorch Metric Learning's default), ``"max_bin_count"`` (the size of
            the largest query class in the reference: enough for MAP@R and
            R-precision to be exact) or an int.
        distance: Metric of the neighbour search (``"l2"``, PyTorch Metric
            Learning's default, or ``"cosine"``, ``"sql2"``, ``"ip"``).
        seed: Seed of k-means for NMI/AMI.

    Raises:
        ValueError: an unknown metric name or ``k``.
    """

    def __init__(
        self,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        avg_of_avgs: bool = False,
        k: int | str | None = None,
        distance: str = "l2",
        seed: int = 0,
    ) -> None:
        for what, names in (("include", include), ("exclude", exclude)):
            if isinstance(names, str) or not isinstance(names, (tuple, list)):
                raise TypeError(f"{what} must be a tuple or list of metric names, got {type(names).__name__}")
            unknown = sorted(set(names) - set(METRICS))
            if unknown:
                raise ValueError(f"unknown metrics in {what}: {unknown}; choose from {list(METRICS)}")
        if not (k is None or k in ("max_bin_count", "all")):
            if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
                raise ValueError(f"k must be None, 'max_bin_count', 'all' or an int >= 1, got {k!r}")
        self.include = tuple(include)
        self.exclude = tuple(exclude)
        self.avg_of_avgs = bool(avg_of_avgs)
        self.k = k
        self.distance = canonical_metric(distance)
        self.seed = int(seed)

    def get_curr_metrics(self, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> list[str]:
        """The metric names a call with these ``include``/``exclude`` computes."""
        chosen = list(include or self.include or METRICS)
        unknown = sorted(set(chosen) - set(METRICS))
        if unknown:
            raise ValueError(f"unknown metrics: {unknown}; choose from {list(METRICS)}")
        drop = set(self.exclude) | set(exclude)
        return [m for m in chosen if m not in drop]

    def get_accuracy(
        self,
        query: Any,
        query_labels: Any,
        reference: Any = None,
        reference_labels: Any = None,
        ref_includes_query: bool = False,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
    ) -> dict[str, float]:
        """Metrics of ``query`` embeddings retrieved against ``reference``.

        Args:
            query: ``(q, d)`` embeddings.
            query_labels: ``(q,)`` int labels.
            reference: ``(r, d)`` embeddings (default: ``query``, with
                ``ref_includes_query`` set).
            reference_labels: ``(r,)`` int labels (with ``reference``).
            ref_includes_query: Every query is also in ``reference`` (row ``i``
                of ``query`` is a row of ``reference``): its own match is
                dropped from its neighbours and from its class count.
            include, exclude: Override the constructor's choice for this call.

        Returns:
            Metric name -> float. Queries whose class has no reference item
            ("lone" queries) are left out of the retrieval metrics, as in
            PyTorch Metric Learning.
        """
        from simdex.index.exact import knn

        names = self.get_curr_metrics(include, exclude)
        q = _as_embeddings(query, "query")
        ql = _as_labels(query_labels, q.shape[0], "query_labels")
        if reference is None:
            if reference_labels is not None:
                raise ValueError("reference_labels given without reference")
            r, rl, ref_includes_query = q, ql, True
        else:
            if reference_labels is None:
                raise ValueError("reference given without reference_labels")
            r = _as_embeddings(reference, "reference")
            rl = _as_labels(reference_labels, r.shape[0], "reference_labels")
            if r.shape[1] != q.shape[1]:
                raise ValueError(f"query has {q.shape[1]}-d embeddings but reference has {r.shape[1]}-d")
        out: dict[str, float] = {}
        knn_names = [m for m in names if m in _KNN_METRICS]
        if knn_names:
            classes, counts = np.unique(rl, return_counts=True)
            count_of = dict(zip(classes.tolist(), counts.tolist()))
            num_relevant = np.array([count_of.get(v, 0) for v in ql.tolist()], dtype=np.int64)
            if ref_includes_query:
                num_relevant = np.maximum(num_relevant - 1, 0)
            available = r.shape[0] - (1 if ref_includes_query else 0)
            if self.k is None or self.k == "all":
                k = available
            elif self.k == "max_bin_count":  # the largest query class in the reference
                k = int(max(num_relevant.max(), 1))
            else:
                k = int(self.k)
            k = max(1, min(k, available))
            if ref_includes_query:
                _, ids = knn(q, r, k=k + 1, metric=self.distance)
                if r is q:  # drop each query's own row (wherever ties put it), else the last column
                    own = ids == np.arange(q.shape[0])[:, None]
                    drop = np.where(own.any(axis=1), np.argmax(own, axis=1), k)
                else:  # the query's copy in the reference is its nearest item (distance 0)
                    drop = np.zeros(q.shape[0], dtype=np.int64)
                keep = np.ones(ids.shape, dtype=bool)
                keep[np.arange(ids.shape[0]), drop] = False
                ids = ids[keep].reshape(ids.shape[0], k)
            else:
                _, ids = knn(q, r, k=k, metric=self.distance)
            nl = np.where(ids >= 0, rl[np.clip(ids, 0, None)], MISSING_LABEL)
            if not (num_relevant > 0).any():
                out.update({m: 0.0 for m in knn_names})  # PML returns 0 when every query is lone
            else:
                got = _metrics.evaluate_retrieval(
                    ql,
                    nl,
                    k=k,
                    metrics=[_KNN_METRICS[m] for m in knn_names],
                    num_relevant=num_relevant,
                    avg_of_avgs=self.avg_of_avgs,
                )
                out.update({m: got[_KNN_METRICS[m]] for m in knn_names})
        if any(m in _CLUSTER_METRICS for m in names):
            scores = cluster_scores(q, ql, seed=self.seed)
            out.update({m: scores[m] for m in names if m in _CLUSTER_METRICS})
        return {m: out[m] for m in names}

    def __repr__(self) -> str:
        return (
            f"AccuracyCalculator(include={self.include}, exclude={self.exclude}, "
            f"avg_of_avgs={self.avg_of_avgs}, k={self.k!r}, distance={self.distance!r})"
        )
