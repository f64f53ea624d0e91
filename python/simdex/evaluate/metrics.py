"""Evaluation metrics for similarity search: classification at a distance threshold and retrieval.

Pure NumPy. Two families:

**Classification at a threshold** (:func:`evaluate_classification`,
:func:`classification_metrics`, :func:`confusion_counts`). A matcher (see
:mod:`simdex.matchers`) gives every query one predicted label and one distance.
At a distance threshold ``t``, following TensorFlow Similarity:

* the prediction is *right* when the predicted label equals the query label
  (a missing neighbour, label ``-1``, is never right; a query label of ``-1``
  therefore means "this query's class is not in the index" and is right only
  when it gets no match);
* a right prediction counts **TP** if its distance ``<= t`` else **FN**;
* a wrong prediction counts **FP** if its distance ``<= t`` else **TN**.

So "positive" means "the query is matched (its distance is within the
threshold)". With ``n = TP + FP + TN + FN`` queries the metrics are:

=================== ======================= ======== =========================
name                formula                 when 0/0 direction
=================== ======================= ======== =========================
``precision``       TP / (TP + FP)          1        max (falls with distance)
``recall``          TP / (TP + FN)          0        max (rises with distance)
``f1``              2 TP / (2 TP + FP + FN) 0        max
``binary_accuracy`` TP / n                  n/a      max (rises with distance)
``accuracy``        (TP + TN) / n           n/a      max
``fpr``             FP / (FP + TN)          0        min (rises with distance)
``fnr``             FN / (TP + FN)          0        min (falls with distance)
``specificity``     TN / (TN + FP)          0        max (falls with distance)
``npv``             TN / (TN + FN)          0        max
``match_rate``      (TP + FP) / n           n/a      max (rises with distance)
=================== ======================= ======== =========================

``binary_accuracy`` is TensorFlow Similarity's definition (TP over *all*
queries: precision scaled by query coverage). TensorFlow Similarity's
``accuracy`` is the same formula; here ``accuracy`` is the usual confusion
matrix accuracy ``(TP + TN) / n``, which also rewards correctly refusing a
wrong match. ``precision`` is 1 whenever no query is matched (TensorFlow
Similarity does this only for the first threshold). Every metric is a single
division of integer counts, so equal values compare exactly equal, which makes
tie-breaking in calibration deterministic. The counts ``tp``, ``fp``, ``tn``,
``fn`` can be requested as metrics too (as float64).

**Retrieval** (:func:`evaluate_retrieval`) scores the ranked neighbour labels
of each query with binary relevance (a neighbour is relevant when it has the
query's label; missing neighbours, label ``-1``, never are). Definitions follow
PyTorch Metric Learning's ``AccuracyCalculator`` where it has the metric; see
:func:`evaluate_retrieval` for each formula and the differences.

Why one module of ~620 lines: it is the catalogue of metric definitions
(``CLASSIFICATION_METRICS``) with the two evaluators that read it, and
``simdex.metrics`` is the name users import them from.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from simdex._validate import MISSING_LABEL, as_labels, check_int
from simdex.evaluate import matchers as _matchers

__all__ = [
    "CLASSIFICATION_METRICS",
    "DEFAULT_CLASSIFICATION_METRICS",
    "classification_metric_info",
    "confusion_counts",
    "default_thresholds",
    "classification_metrics",
    "evaluate_classification",
    "evaluate_retrieval",
    "confusion_matrix",
    "MapAtK",
    "MRRAtK",
    "NDCGAtK",
    "PrecisionAtK",
    "RPrecision",
    "RecallAtK",
    "RetrievalMetric",
]

# TF Similarity's retrieval-metric objects (RecallAtK(k=5)...) name metrics evaluate_retrieval computes.
from simdex.evaluate.retrieval_metrics import (  # noqa: E402
    MapAtK,
    MRRAtK,
    NDCGAtK,
    PrecisionAtK,
    RecallAtK,
    RetrievalMetric,
    RPrecision,
    metric_names,
)

# --------------------------------------------------------------------------- input checks


def as_distances(x: Any, name: str = "distances") -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise TypeError(f"{name} must be a float array; got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (num_queries, k); got shape {arr.shape}")
    if np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN")
    return arr


def check_k_columns(k: Any, num_columns: int, what: str = "k") -> int:
    k = check_int(k, what, 1)
    if k > num_columns:
        raise ValueError(f"{what}={k} but only {num_columns} neighbours per query were given")
    return k


def prepare_labels(
    query_labels: Any, neighbour_labels: Any, distances: Any | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    q = as_labels(query_labels, "query_labels", ndim=1)
    nl = as_labels(neighbour_labels, "neighbour_labels", ndim=2)
    if q.shape[0] == 0:
        raise ValueError("no queries: query_labels is empty")
    if nl.shape[0] != q.shape[0]:
        raise ValueError(f"neighbour_labels has {nl.shape[0]} rows but there are {q.shape[0]} query labels")
    if nl.shape[1] == 0:
        raise ValueError("neighbour_labels has no columns: need at least one neighbour per query")
    d = None
    if distances is not None:
        d = as_distances(distances)
        if d.shape != nl.shape:
            raise ValueError(f"distances shape {d.shape} != neighbour_labels shape {nl.shape}")
        unsorted = np.flatnonzero(np.any(d[:, 1:] < d[:, :-1], axis=1))
        if unsorted.size:
            raise ValueError(
                f"distances must be ascending along each row (nearest first); row {unsorted[0]} "
                f"is not: {d[unsorted[0]].tolist()[:8]}"
            )
    return q, nl, d


# --------------------------------------------------------------------------- classification


def _ratio(num: np.ndarray, den: np.ndarray, zero_div: float) -> np.ndarray:
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, zero_div, dtype=np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out


@dataclass(frozen=True)
class _ClsMetric:
    fn: Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]
    direction: str  # "max" or "min": which way is better
    worsens_with_distance: bool  # True: a target cutpoint is the LAST threshold meeting it
    is_ratio: bool = True  # False for raw counts: not usable for calibration


def _n(tp, fp, tn, fn):  # noqa: ANN001, ANN202 - tiny private helper
    return tp + fp + tn + fn


CLASSIFICATION_METRICS: dict[str, _ClsMetric] = {
    "precision": _ClsMetric(lambda tp, fp, tn, fn: _ratio(tp, tp + fp, 1.0), "max", True),
    "recall": _ClsMetric(lambda tp, fp, tn, fn: _ratio(tp, tp + fn, 0.0), "max", False),
    "f1": _ClsMetric(lambda tp, fp, tn, fn: _ratio(2 * tp, 2 * tp + fp + fn, 0.0), "max", False),
    "binary_accuracy": _ClsMetric(lambda tp, fp, tn, fn: _ratio(tp, _n(tp, fp, tn, fn), 0.0), "max", False),
    "accuracy": _ClsMetric(lambda tp, fp, tn, fn: _ratio(tp + tn, _n(tp, fp, tn, fn), 0.0), "max", False),
    "fpr": _ClsMetric(lambda tp, fp, tn, fn: _ratio(fp, fp + tn, 0.0), "min", True),
    "fnr": _ClsMetric(lambda tp, fp, tn, fn: _ratio(fn, tp + fn, 0.0), "min", False),
    "specificity": _ClsMetric(lambda tp, fp, tn, fn: _ratio(tn, tn + fp, 0.0), "max", True),
    "npv": _ClsMetric(lambda tp, fp, tn, fn: _ratio(tn, tn + fn, 0.0), "max", False),
    "match_rate": _ClsMetric(lambda tp, fp, tn, fn: _ratio(tp + fp, _n(tp, fp, tn, fn), 0.0), "max", False),
    "tp": _ClsMetric(lambda tp, fp, tn, fn: np.asarray(tp, np.float64), "max", False, False),
    "fp": _ClsMetric(lambda tp, fp, tn, fn: np.asarray(fp, np.float64), "min", True, False),
    "tn": _ClsMetric(lambda tp, fp, tn, fn: np.asarray(tn, np.float64), "max", True, False),
    "fn": _ClsMetric(lambda tp, fp, tn, fn: np.asarray(fn, np.float64), "min", False, False),
}

_CLS_ALIASES = {
    "f1_score": "f1",
    "f1score": "f1",
    "tpr": "recall",
    "sensitivity": "recall",
    "true_positive_rate": "recall",
    "false_positive_rate": "fpr",
    "false_negative_rate": "fnr",
    "tnr": "specificity",
    "true_negative_rate": "specificity",
    "negative_predictive_value": "npv",
    "acc": "accuracy",
    "coverage": "match_rate",
}

#: Metrics computed by :func:`evaluate_classification` when ``metrics`` is None.
DEFAULT_CLASSIFICATION_METRICS: tuple[str, ...] = (
    "precision",
    "recall",
    "f1",
    "binary_accuracy",
    "accuracy",
    "fpr",
    "npv",
)


def _canonical_cls_name(name: Any) -> str:
    if not isinstance(name, str):
        raise TypeError(f"metric names must be str; got {type(name).__name__}")
    key = name.strip().lower()
    key = _CLS_ALIASES.get(key, key)
    if key not in CLASSIFICATION_METRICS:
        raise ValueError(f"unknown classification metric {name!r}; known: {sorted(CLASSIFICATION_METRICS)}")
    return key


def classification_metric_info(name: str) -> dict[str, Any]:
    """Describe a classification metric.

    Args:
        name: Metric name or alias (``"f1_score"``, ``"tpr"``, ...).

    Returns:
        ``{"name": canonical name, "direction": "max" | "min",
        "worsens_with_distance": bool, "is_ratio": bool}``.

    Raises:
        ValueError: unknown metric.
    """
    key = _canonical_cls_name(name)
    m = CLASSIFICATION_METRICS[key]
    return {
        "name": key,
        "direction": m.direction,
        "worsens_with_distance": m.worsens_with_distance,
        "is_ratio": m.is_ratio,
    }


def confusion_counts(correct: Any, matched_distances: Any, thresholds: Any) -> dict[str, np.ndarray]:
    """TP/FP/TN/FN at every threshold, by sorting once (O((n + m) log n)).

    Args:
        correct: ``(n,)`` bool, whether each query's predicted label is right.
        matched_distances: ``(n,)`` float distances of the predictions
            (``inf`` = never matched). NaN is rejected.
        thresholds: ``(m,)`` float thresholds, any order.

    Returns:
        ``{"tp", "fp", "tn", "fn"}`` -> ``(m,)`` int64 counts.

    Raises:
        ValueError: shape mismatch or NaN.
    """
    correct = np.asarray(correct, dtype=bool)
    d = np.asarray(matched_distances, dtype=np.float64)
    t = np.asarray(thresholds, dtype=np.float64)
    if correct.ndim != 1 or d.shape != correct.shape:
        raise ValueError(
            f"correct and matched_distances must be 1-D of equal length; got {correct.shape} and {d.shape}"
        )
    if t.ndim != 1:
        raise ValueError(f"thresholds must be 1-D; got shape {t.shape}")
    if np.isnan(d).any() or np.isnan(t).any():
        raise ValueError("matched_distances and thresholds must not contain NaN")
    d_right = np.sort(d[correct])
    d_wrong = np.sort(d[~correct])
    tp = np.searchsorted(d_right, t, side="right").astype(np.int64)
    fp = np.searchsorted(d_wrong, t, side="right").astype(np.int64)
    return {"tp": tp, "fp": fp, "tn": d_wrong.size - fp, "fn": d_right.size - tp}


def classification_metrics(
    tp: Any, fp: Any, tn: Any, fn: Any, metrics: Sequence[str] | None = None
) -> dict[str, np.ndarray]:
    """Compute classification metrics from confusion counts.

    Args:
        tp, fp, tn, fn: Counts, scalars or ``(m,)`` arrays of equal shape.
        metrics: Names (see the module docstring); default
            :data:`DEFAULT_CLASSIFICATION_METRICS`.

    Returns:
        Canonical metric name -> float64 array (0-D for scalar counts).

    Raises:
        ValueError: unknown metric or negative counts.
    """
    arrs = [np.asarray(v, dtype=np.int64) for v in (tp, fp, tn, fn)]
    if any((a < 0).any() for a in arrs):
        raise ValueError("confusion counts must be non-negative")
    names = DEFAULT_CLASSIFICATION_METRICS if metrics is None else metrics
    if isinstance(names, str):
        names = (names,)
    out: dict[str, np.ndarray] = {}
    for name in names:
        key = _canonical_cls_name(name)
        out[key] = CLASSIFICATION_METRICS[key].fn(*arrs)
    return out


def _match(
    query_labels: np.ndarray,
    neighbour_labels: np.ndarray,
    distances: np.ndarray,
    k: int,
    matcher: Any,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run the matcher on the first k columns: (pred_labels, pred_dist, correct)."""
    m = _matchers.get(matcher)
    pred, pdist = m.predict(neighbour_labels[:, :k], distances[:, :k])
    pred = np.asarray(pred, dtype=np.int64)
    pdist = np.asarray(pdist, dtype=np.float64)
    if pred.shape != query_labels.shape or pdist.shape != query_labels.shape:
        raise ValueError(
            f"matcher {m!r} returned shapes {pred.shape}, {pdist.shape}; expected {query_labels.shape}"
        )
    if np.isnan(pdist).any():
        raise ValueError(f"matcher {m!r} returned NaN distances")
    correct = (pred == query_labels) & (pred != MISSING_LABEL)
    return pred, pdist, correct


def evaluate_classification(
    query_labels: Any,
    neighbour_labels: Any,
    distances: Any,
    *,
    thresholds: Any = None,
    k: int = 1,
    matcher: str | Mapping[str, Any] | _matchers.Matcher = "match_nearest",
    metrics: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """Classification metrics of a matcher at a set of distance thresholds.

    Args:
        query_labels: ``(n,)`` int true labels of the queries (``-1``: class
            not in the index, so the only right answer is "no match").
        neighbour_labels: ``(n, k')`` int labels of each query's neighbours,
            nearest first; ``-1`` = missing neighbour.
        distances: ``(n, k')`` float distances, ascending along rows (``inf``
            for missing neighbours).
        thresholds: ``(m,)`` distance thresholds, or a scalar. Default: the
            distinct finite values of ``distances[:, :k]`` in ascending order
            (TensorFlow Similarity's choice).
        k: How many leading neighbours the matcher sees (``1 <= k <= k'``).
        matcher: Name, config or :class:`simdex.matchers.Matcher`.
        metrics: Metric names (module docstring); default
            :data:`DEFAULT_CLASSIFICATION_METRICS`.

    Returns:
        ``{"distance": (m,) thresholds (sorted ascending when defaulted, else
        as given), <metric>: (m,) float64}`` for each requested metric.

    Raises:
        ValueError: empty input, shape mismatch, NaN, bad ``k``, unknown metric,
            or no finite distance to use as a threshold.
        TypeError: non-integer labels.
    """
    q, nl, d = prepare_labels(query_labels, neighbour_labels, distances)
    assert d is not None
    k = check_k_columns(k, nl.shape[1])
    _, pdist, correct = _match(q, nl, d, k, matcher)
    if thresholds is None:
        t = default_thresholds(d[:, :k])
    else:
        t = np.atleast_1d(np.asarray(thresholds, dtype=np.float64))
        if t.ndim != 1 or t.size == 0:
            raise ValueError(f"thresholds must be a non-empty 1-D array; got shape {t.shape}")
        if np.isnan(t).any():
            raise ValueError("thresholds contain NaN")
    counts = confusion_counts(correct, pdist, t)
    out: dict[str, np.ndarray] = {"distance": t}
    out.update(classification_metrics(**counts, metrics=metrics))
    return out


def default_thresholds(distances: np.ndarray) -> np.ndarray:
    """Distinct finite distances in ascending order (the calibration candidates).

    Args:
        distances: Float array of any shape.

    Returns:
        ``(m,)`` float64 sorted unique finite values.

    Raises:
        ValueError: no finite distance at all.
    """
    flat = np.asarray(distances, dtype=np.float64).ravel()
    flat = flat[np.isfinite(flat)]
    if flat.size == 0:
        raise ValueError("no finite distance to use as a threshold (every neighbour is missing)")
    return np.unique(flat)


# --------------------------------------------------------------------------- retrieval

_AT_K = re.compile(r"^(recall|precision|ndcg|map|mrr)@(\d+|k)$")
_RET_ALIASES = {
    "precision_at_1": "precision@1",
    "mean_average_precision_at_r": "map@r",
    "mean_average_precision": "mean_average_precision",
    "r_precision": "r_precision",
    "map@r": "map@r",
    "recall@k": "recall@k",
    "mrr": "mrr@k",
    "mean_reciprocal_rank": "mrr@k",
}


def _parse_retrieval_name(name: Any, k: int) -> tuple[str, int | None]:
    """Return (kind, cutoff) with kind in recall/precision/ndcg/map/map@r/r_precision."""
    if not isinstance(name, str):
        raise TypeError(f"metric names must be str; got {type(name).__name__}")
    key = name.strip().lower().replace("_at_", "@")
    key = _RET_ALIASES.get(name.strip().lower(), key)
    if key in ("map@r", "r_precision", "mean_average_precision"):
        return key, None
    m = _AT_K.match(key)
    if m is None:
        raise ValueError(
            f"unknown retrieval metric {name!r}; use recall@K, precision@K, ndcg@K, map@K, mrr@K "
            "(K an int or 'k'), map@r or r_precision"
        )
    cutoff = k if m.group(2) == "k" else int(m.group(2))
    return m.group(1), cutoff


def _per_class_mean(values: np.ndarray, labels: np.ndarray, avg_of_avgs: bool) -> float:
    if not avg_of_avgs:
        return float(np.mean(values))
    uniq, inv = np.unique(labels, return_inverse=True)
    sums = np.bincount(inv, weights=values, minlength=uniq.size)
    cnts = np.bincount(inv, minlength=uniq.size)
    return float(np.mean(sums / cnts))


def evaluate_retrieval(
    query_labels: Any,
    neighbour_labels: Any,
    *,
    k: int | None = None,
    metrics: Sequence[str] | None = None,
    num_relevant: Any = None,
    avg_of_avgs: bool = False,
) -> dict[str, float]:
    """Retrieval quality of ranked neighbour labels.

    ``rel[i, j]`` is 1 when neighbour ``j`` (0-based rank) of query ``i`` has
    the query's label and is not missing. ``R_i`` is ``num_relevant[i]``, the
    number of items in the index with the query's label (excluding the query
    itself when the queries are in the index: that is the caller's count to
    give). Per query, with ranks ``j = 1..K``:

    * ``recall@K``: 1 if any of the first K neighbours is relevant, else 0
      ("hit rate": the Recall@K of the metric-learning literature and of
      TensorFlow Similarity's ``RecallAtK``; *not* the IR recall
      ``sum(rel) / R``, and PyTorch Metric Learning has no such metric).
    * ``precision@K``: ``sum(rel[:K]) / K`` (PyTorch Metric Learning's
      ``precision_at_k``; ``precision@1`` is its ``precision_at_1``). Missing
      neighbours count as not relevant, the divisor stays K.
    * ``r_precision``: ``sum(rel[:r]) / r`` with ``r = min(R, K)``
      (PyTorch Metric Learning's ``r_precision``).
    * ``map@r``: ``(1 / R) * sum_{j <= r} rel[j] * P@j`` with ``r = min(R, K)``
      and ``P@j = sum(rel[:j]) / j`` (PyTorch Metric Learning 2.9's
      ``mean_average_precision_at_r``, which divides by ``R`` even when
      ``K < R``; name alias ``"mean_average_precision_at_r"``).
    * ``mean_average_precision``: ``sum_{j <= k} rel[j] * P@j / R``, average
      precision over all ``k`` neighbours divided by the number of relevant
      items in the index (PyTorch Metric Learning 2.9's
      ``mean_average_precision``, which does not cap ``R`` at ``k``: with
      ``k < R`` the value is at most ``k / R``). Needs ``num_relevant``.
    * ``map@K``: ``sum_{j <= K} rel[j] * P@j / max(1, sum(rel[:K]))``: average
      precision over the relevant items *retrieved* in the first K (it ignores
      relevant items that were not retrieved; PyTorch Metric Learning before
      2.0 divided so).
    * ``mrr@K``: ``1 / rank`` of the first relevant neighbour among the first
      K, 0 when there is none (mean reciprocal rank; names ``"mrr"`` and
      ``"mean_reciprocal_rank"`` mean ``mrr@k``).
    * ``ndcg@K``: ``DCG / IDCG`` with ``DCG = sum_{j <= K} rel[j] / log2(j + 1)``
      and IDCG the DCG of ``min(K, R)`` relevant items at the top (when
      ``num_relevant`` is not given, R is the number of relevant items
      retrieved in the first K, i.e. NDCG then measures ordering only); 0 when
      IDCG is 0. Not in PyTorch Metric Learning.

    Values are averaged over queries (or per class, then over classes, when
    ``avg_of_avgs``, as PyTorch Metric Learning's option of that name).

    Differences from PyTorch Metric Learning: like it, when ``num_relevant``
    is given, queries with ``R = 0`` ("lone" queries) are left out of every
    metric; where it would then return 0 for all-lone input, this raises
    ``ValueError``. As there, R-precision looks at ``r = min(R, K)``
    neighbours and MAP@R divides by ``R``: both are only exact when
    ``K >= max(R)``; pass enough neighbours. ``k`` here plays the role
    of its ``k`` (how many neighbours are looked at).

    Args:
        query_labels: ``(n,)`` int labels.
        neighbour_labels: ``(n, k')`` int labels of the ranked neighbours;
            ``-1`` = missing.
        k: Number of leading neighbours to use (default all ``k'``). Also the
            value of ``K`` in names written with a literal ``k`` (``"recall@k"``).
        metrics: Names: ``"recall@K"``, ``"precision@K"``, ``"ndcg@K"``,
            ``"map@K"`` with K an int ``<= k`` or the letter ``k``; ``"map@r"``,
            ``"r_precision"``; and the PyTorch Metric Learning names
            ``"precision_at_1"``, ``"mean_average_precision_at_r"``,
            ``"mean_average_precision"``, ``"mean_reciprocal_rank"`` (``"mrr"``).
            Default: ``recall@1``, ``recall@k``,
            ``precision@1``, ``precision@k``, ``ndcg@k`` (with k's value), plus
            ``map@r`` and ``r_precision`` when ``num_relevant`` is given.
        num_relevant: ``(n,)`` int >= 0, number of relevant items in the index
            per query. Required for ``map@r`` and ``r_precision``.
        avg_of_avgs: Average per class first.

    Returns:
        Metric name -> float. Default metrics use canonical names
        (``"recall@5"``); requested metrics keep the name as written.

    Raises:
        ValueError: empty input, shape mismatch, bad ``k``/``K``, unknown metric,
            ``map@r``/``r_precision`` without ``num_relevant``, or every query lone.
        TypeError: non-integer labels.
    """
    q, nl, _ = prepare_labels(query_labels, neighbour_labels, None)
    k = nl.shape[1] if k is None else check_k_columns(k, nl.shape[1])
    nl = nl[:, :k]
    if metrics is not None and not isinstance(metrics, str):
        metrics = metric_names(metrics)  # RecallAtK(5) objects -> "recall@5"
    R = None
    if num_relevant is not None:
        R = as_labels(num_relevant, "num_relevant", ndim=1)
        if R.shape != q.shape:
            raise ValueError(f"num_relevant has shape {R.shape}; expected {q.shape}")
        if (R < 0).any():
            raise ValueError("num_relevant must be >= 0")
    if metrics is None:
        names: list[str] = ["recall@1", f"recall@{k}", "precision@1", f"precision@{k}", f"ndcg@{k}"]
        if R is not None:
            names += ["map@r", "r_precision"]
        names = list(dict.fromkeys(names))
    else:
        if isinstance(metrics, str):
            metrics = (metrics,)
        names = list(metrics)
        if not names:
            raise ValueError("metrics is empty")
    parsed = [(_parse_retrieval_name(nm, k), nm) for nm in names]
    for (kind, cutoff), nm in parsed:
        if cutoff is not None and not 1 <= cutoff <= k:
            raise ValueError(f"metric {nm!r} needs {cutoff} neighbours but k={k}")
        if kind in ("map@r", "r_precision", "mean_average_precision") and R is None:
            raise ValueError(f"metric {nm!r} needs num_relevant (relevant items per query)")

    rel = (nl == q[:, None]) & (nl != MISSING_LABEL)
    labels = q
    if R is not None:
        keep = R > 0
        if not keep.any():
            raise ValueError("no query has a relevant item in the index (num_relevant is 0 for all queries)")
        rel, labels, R = rel[keep], q[keep], R[keep]
    relf = rel.astype(np.float64)
    hits = np.cumsum(relf, axis=1)  # hits[:, j-1] = relevant items in the first j
    ranks = np.arange(1, k + 1, dtype=np.float64)
    prec_at = hits / ranks  # P@j
    discount = 1.0 / np.log2(ranks + 1.0)
    cum_discount = np.concatenate([[0.0], np.cumsum(discount)])

    out: dict[str, float] = {}
    for (kind, cutoff), nm in parsed:
        # _parse_retrieval_name gives a cutoff to every kind but map@r and r_precision.
        if cutoff is not None and kind == "recall":
            per = (hits[:, cutoff - 1] > 0).astype(np.float64)
        elif cutoff is not None and kind == "precision":
            per = hits[:, cutoff - 1] / cutoff
        elif cutoff is not None and kind == "map":
            summed = np.sum(prec_at[:, :cutoff] * relf[:, :cutoff], axis=1)
            per = summed / np.maximum(hits[:, cutoff - 1], 1.0)
        elif cutoff is not None and kind == "mrr":
            first = np.argmax(rel[:, :cutoff], axis=1)
            per = np.where(hits[:, cutoff - 1] > 0, 1.0 / (first + 1.0), 0.0)
        elif cutoff is not None and kind == "ndcg":
            dcg = relf[:, :cutoff] @ discount[:cutoff]
            ideal_n = hits[:, cutoff - 1] if R is None else np.minimum(R, cutoff)
            idcg = cum_discount[ideal_n.astype(np.int64)]
            per = _ratio(dcg, idcg, 0.0)
        elif kind == "mean_average_precision":  # PML 2.9: divided by R, all k columns
            assert R is not None
            per = np.sum(prec_at * relf, axis=1) / R
        else:  # map@r, r_precision
            assert R is not None
            r = np.minimum(R, k)
            mask = ranks[None, :] <= r[:, None]
            if kind == "r_precision":
                per = np.sum(relf * mask, axis=1) / r
            else:
                per = np.sum(prec_at * relf * mask, axis=1) / R  # PML 2.9 divides by R, not r
        out[nm] = _per_class_mean(per, labels, avg_of_avgs)
    return out


# --------------------------------------------------------------------------- confusion matrix


def confusion_matrix(
    query_labels: Any,
    predicted_labels: Any,
    *,
    labels: Sequence[int] | None = None,
    no_match_label: int = -1,
) -> tuple[np.ndarray, np.ndarray]:
    """Counts of (predicted, true) label pairs with an extra "no match" row.

    Args:
        query_labels: ``(n,)`` int true labels. A true label equal to
            ``no_match_label`` marks a query whose class is not in the index.
        predicted_labels: ``(n,)`` int predicted labels, ``no_match_label`` for
            queries that got no match (as returned by :func:`simdex.calibration.match`).
        labels: Class labels (columns), in order (default: sorted union of the
            true and predicted labels).
        no_match_label: Marker of "no match" in ``predicted_labels``.

    Returns:
        ``(matrix, labels)``. ``labels`` is the int64 array of true-class labels
        (the columns). The rows are the same labels without ``no_match_label``,
        then one "no match" row: ``matrix[i, j]`` counts queries of true class
        ``labels[j]`` predicted as row ``i``. So ``matrix`` is
        ``(len(labels) + 1, len(labels))`` int64, or one row less when
        ``no_match_label`` is among ``labels`` (a query of an unknown class gets
        a column, and no row since nothing is ever predicted as "unknown").

    Raises:
        ValueError: shape mismatch, empty input, or a label outside ``labels``.
    """
    t = as_labels(query_labels, "query_labels", ndim=1)
    p = as_labels(predicted_labels, "predicted_labels", ndim=1)
    if t.shape != p.shape:
        raise ValueError(f"query_labels {t.shape} and predicted_labels {p.shape} differ in shape")
    if t.size == 0:
        raise ValueError("no queries: query_labels is empty")
    if labels is None:
        lab = np.unique(np.concatenate([t, p[p != no_match_label]]))
    else:
        lab = as_labels(labels, "labels", ndim=1)
        if np.unique(lab).size != lab.size:
            raise ValueError("labels contains duplicates")
    col_index = {int(v): i for i, v in enumerate(lab.tolist())}
    row_labels = [int(v) for v in lab.tolist() if v != no_match_label]
    row_index = {v: i for i, v in enumerate(row_labels)}
    unknown = set(t.tolist()) - col_index.keys()
    unknown |= set(p[p != no_match_label].tolist()) - col_index.keys()
    if unknown:
        raise ValueError(f"labels {sorted(unknown)[:10]} are not in `labels`")
    nrows = len(row_labels)
    cols = np.array([col_index[v] for v in t.tolist()], dtype=np.int64)
    rows = np.array([nrows if v == no_match_label else row_index[v] for v in p.tolist()], dtype=np.int64)
    mat = np.zeros((nrows + 1, lab.size), dtype=np.int64)
    np.add.at(mat, (rows, cols), 1)
    return mat, lab
