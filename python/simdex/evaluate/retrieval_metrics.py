"""Retrieval-metric objects with TF Similarity's names (``RecallAtK``, ``PrecisionAtK``...).

They only name a metric that :func:`simdex.metrics.evaluate_retrieval`
computes; pass them (or plain names such as ``"recall@5"``) to
:meth:`simdex.SimilarityModel.evaluate_retrieval` or to
:class:`simdex.callbacks.EvalCallback`::

    model.evaluate_retrieval(x, y, retrieval_metrics=[RecallAtK(k=1), MapAtK(k=5)])
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

__all__ = [
    "MRRAtK",
    "MapAtK",
    "NDCGAtK",
    "PrecisionAtK",
    "RPrecision",
    "RecallAtK",
    "RetrievalMetric",
    "cutoff",
    "metric_names",
]


class RetrievalMetric:
    """A named retrieval metric at cutoff ``k`` (see :func:`simdex.metrics.evaluate_retrieval`)."""

    kind = ""

    def __init__(self, k: int = 5, name: str | None = None) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"{type(self).__name__}: k must be an int >= 1, got {k!r}")
        self.k = k
        self.name = name or f"{self.kind}@{k}"

    @property
    def metric(self) -> str:
        """The name :func:`simdex.metrics.evaluate_retrieval` understands."""
        return f"{self.kind}@{self.k}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(k={self.k})"


class RecallAtK(RetrievalMetric):
    """1 when any of the first k neighbours has the query's label (hit rate)."""

    kind = "recall"


class PrecisionAtK(RetrievalMetric):
    """Fraction of the first k neighbours with the query's label."""

    kind = "precision"


class MapAtK(RetrievalMetric):
    """Mean average precision over the first k neighbours (PyTorch Metric Learning's divisor)."""

    kind = "map"


class NDCGAtK(RetrievalMetric):
    """Normalised discounted cumulative gain at k."""

    kind = "ndcg"


class MRRAtK(RetrievalMetric):
    """Reciprocal rank of the first relevant neighbour among the first k."""

    kind = "mrr"


class RPrecision(RetrievalMetric):
    """R-precision (needs k >= the largest class in the index to be exact)."""

    kind = "r_precision"

    @property
    def metric(self) -> str:
        return "r_precision"


_CUT = re.compile(r"@(\d+)$")


def metric_names(metrics: Sequence[Any] | str | RetrievalMetric) -> list[str]:
    """Metric names from strings and :class:`RetrievalMetric` objects.

    Raises:
        TypeError: an item that is neither.
    """
    if isinstance(metrics, (str, RetrievalMetric)):
        metrics = [metrics]
    names = []
    for m in metrics:
        if isinstance(m, RetrievalMetric):
            names.append(m.metric)
        elif isinstance(m, str):
            names.append(m)
        else:
            raise TypeError(f"retrieval metrics are names or RetrievalMetric objects, got {type(m).__name__}")
    return names


def cutoff(name: str) -> int:
    """Neighbours a metric name needs (``"recall@5"`` -> 5; names without a number -> 0)."""
    found = _CUT.search(name.strip().lower().replace("_at_", "@"))
    return int(found.group(1)) if found else 0
