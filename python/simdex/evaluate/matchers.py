"""Matchers: turn a query's k nearest neighbours into one predicted label.

A matcher looks at the first ``k`` neighbours of every query and returns one
label and one distance per query. The distance is what calibration compares
with a threshold: the query is *matched* (its label is predicted) when that
distance is ``<=`` the threshold, and gets "no match" otherwise.

Two matchers are built in, named as in TensorFlow Similarity so code can move
between the two libraries:

* ``"match_nearest"``: the label and distance of the nearest neighbour.
* ``"match_majority_vote"``: the most voted label among the first ``k``
  neighbours; votes can be weighted by inverse distance
  (``MatchMajorityVote(weighted=True)``, also available by name as
  ``"match_weighted_majority_vote"``).

Neighbour label ``-1`` marks a missing neighbour (an index with fewer than
``k`` items returns id ``-1`` and distance ``inf``); it never gets a vote and a
query with no neighbour at all is predicted ``-1`` at distance ``inf``.

Example:
    >>> import numpy as np
    >>> from simdex import matchers
    >>> labels = np.array([[3, 5, 5]])
    >>> dists = np.array([[0.1, 0.2, 0.3]])
    >>> matchers.get("match_nearest").predict(labels, dists)
    (array([3]), array([0.1]))
    >>> matchers.get("match_majority_vote").predict(labels, dists)[0]
    array([5])
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from simdex._validate import MISSING_LABEL  # the label of an empty neighbour slot

__all__ = [
    "Matcher",
    "MatchNearest",
    "MatchMajorityVote",
    "get",
    "MISSING_LABEL",
]


def _check_pair(neighbour_labels: np.ndarray, distances: np.ndarray) -> None:
    if neighbour_labels.ndim != 2 or distances.ndim != 2:
        raise ValueError(
            "neighbour_labels and distances must be 2-D (num_queries, k); got shapes "
            f"{neighbour_labels.shape} and {distances.shape}"
        )
    if neighbour_labels.shape != distances.shape:
        raise ValueError(
            f"neighbour_labels shape {neighbour_labels.shape} != distances shape {distances.shape}"
        )
    if neighbour_labels.shape[1] == 0:
        raise ValueError("need at least one neighbour per query (k >= 1); got 0 columns")


class Matcher:
    """Base class: derive one label and one distance per query from its neighbours.

    Subclasses set :attr:`name` and implement :meth:`predict`. They should be
    cheap, vectorised over queries, and deterministic (ties broken by neighbour
    rank). :meth:`get_config` must return a JSON-friendly dict that
    :func:`get` accepts, so calibration results can be saved and reloaded.
    """

    #: Canonical name used by :func:`get` and stored in saved results.
    name: str = "matcher"

    def predict(self, neighbour_labels: np.ndarray, distances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Predict a label and a distance for each query.

        Args:
            neighbour_labels: ``(n, k)`` int64 labels of the neighbours, nearest
                first; ``-1`` marks a missing neighbour.
            distances: ``(n, k)`` float64 distances, ascending along each row;
                ``inf`` for missing neighbours.

        Returns:
            ``(labels, distances)``: ``(n,)`` int64 predicted labels (``-1`` when
            a query has no neighbour) and ``(n,)`` float64 distances to compare
            with a threshold (``inf`` when there is no neighbour).
        """
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        """JSON-friendly description, accepted back by :func:`get`."""
        return {"name": self.name}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "name")
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Matcher) and self.get_config() == other.get_config()

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.get_config().items())))


class MatchNearest(Matcher):
    """Predict the nearest neighbour's label, at the nearest neighbour's distance.

    Only the first column is used, whatever ``k`` is. Same as TensorFlow
    Similarity's ``match_nearest``.
    """

    name = "match_nearest"

    def predict(self, neighbour_labels: np.ndarray, distances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        _check_pair(neighbour_labels, distances)
        labels = np.asarray(neighbour_labels[:, 0], dtype=np.int64).copy()
        dist = np.asarray(distances[:, 0], dtype=np.float64).copy()
        missing = labels == MISSING_LABEL
        dist[missing] = np.inf
        return labels, dist


class MatchMajorityVote(Matcher):
    """Predict the label with the most votes among the first ``k`` neighbours.

    Each present neighbour votes for its label with weight 1, or with weight
    ``1 / (distance + eps)`` when ``weighted`` is true. A tie between labels goes
    to the label that appears first in the row (the one with the nearest
    neighbour), which is also what TensorFlow Similarity's
    ``tf.unique_with_counts`` + ``argmax`` does for the unweighted vote.

    The returned distance depends on ``distance_agg``:

    * ``"mean"`` (default, as TensorFlow Similarity): mean distance of all the
      present neighbours in the row, whichever label they carry.
    * ``"winner"``: distance of the nearest neighbour that carries the winning
      label (so a threshold bounds how far the evidence for that label is).

    Args:
        weighted: Weight votes by inverse distance.
        distance_agg: ``"mean"`` or ``"winner"``.
        eps: Added to distances before inverting, so a zero distance gets a
            large finite weight.

    Raises:
        ValueError: unknown ``distance_agg`` or non-positive ``eps``.
    """

    name = "match_majority_vote"
    _AGGS = ("mean", "winner")

    def __init__(self, weighted: bool = False, distance_agg: str = "mean", eps: float = 1e-6):
        if distance_agg not in self._AGGS:
            raise ValueError(f"distance_agg must be one of {self._AGGS}; got {distance_agg!r}")
        eps = float(eps)
        if not (np.isfinite(eps) and eps > 0):
            raise ValueError(f"eps must be a finite positive number; got {eps}")
        self.weighted = bool(weighted)
        self.distance_agg = distance_agg
        self.eps = eps

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "weighted": self.weighted,
            "distance_agg": self.distance_agg,
            "eps": self.eps,
        }

    def predict(self, neighbour_labels: np.ndarray, distances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        _check_pair(neighbour_labels, distances)
        labels = np.asarray(neighbour_labels, dtype=np.int64)
        dist = np.asarray(distances, dtype=np.float64)
        n, k = labels.shape
        present = labels != MISSING_LABEL
        if self.weighted:
            weights = np.where(present, 1.0 / (np.where(present, dist, 0.0) + self.eps), 0.0)
        else:
            weights = present.astype(np.float64)
        # votes[:, j] = total weight of the label held by column j. O(n k^2) work
        # but only O(n k) memory: one pass per column.
        votes = np.empty((n, k), dtype=np.float64)
        for j in range(k):
            votes[:, j] = np.sum(weights * (labels == labels[:, j : j + 1]), axis=1)
        votes[~present] = -1.0
        # argmax returns the first maximum: ties go to the label seen first.
        winner_col = np.argmax(votes, axis=1)
        rows = np.arange(n)
        pred = labels[rows, winner_col].copy()
        none = ~present.any(axis=1)
        pred[none] = MISSING_LABEL
        if self.distance_agg == "winner":
            # The first column holding the winning label is its nearest occurrence.
            pred_dist = dist[rows, winner_col].copy()
        else:
            count = present.sum(axis=1)
            total = np.sum(np.where(present, dist, 0.0), axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                pred_dist = total / count
        pred_dist[none] = np.inf
        return pred, pred_dist


_REGISTRY: dict[str, Any] = {
    "match_nearest": MatchNearest,
    "nearest": MatchNearest,
    "match_majority_vote": MatchMajorityVote,
    "majority_vote": MatchMajorityVote,
    "match_weighted_majority_vote": lambda **kw: MatchMajorityVote(weighted=True, **kw),
    "weighted_majority_vote": lambda **kw: MatchMajorityVote(weighted=True, **kw),
}


def get(matcher: str | Mapping[str, Any] | Matcher) -> Matcher:
    """Look up a matcher by name, config dict or instance.

    Args:
        matcher: A :class:`Matcher` (returned as is); a name (``"match_nearest"``,
            ``"match_majority_vote"``, ``"match_weighted_majority_vote"``, or the
            same without the ``match_`` prefix); or a config dict as returned by
            :meth:`Matcher.get_config` (``{"name": ..., **kwargs}``).

    Returns:
        A :class:`Matcher` instance.

    Raises:
        ValueError: unknown name or bad config values.
        TypeError: ``matcher`` is none of the accepted types, or the config has
            unexpected keys.
    """
    if isinstance(matcher, Matcher):
        return matcher
    if isinstance(matcher, str):
        name, kwargs = matcher, {}
    elif isinstance(matcher, Mapping):
        if "name" not in matcher:
            raise ValueError(f"matcher config needs a 'name' key; got keys {sorted(matcher)}")
        kwargs = {k: v for k, v in matcher.items() if k != "name"}
        name = matcher["name"]
        if not isinstance(name, str):
            raise TypeError(f"matcher config 'name' must be a str; got {type(name).__name__}")
    else:
        raise TypeError(
            "matcher must be a name, a config dict or a simdex.matchers.Matcher; "
            f"got {type(matcher).__name__}"
        )
    key = name.strip().lower()
    factory = _REGISTRY.get(key)
    if factory is None:
        known = sorted(k for k in _REGISTRY if k.startswith("match_"))
        raise ValueError(f"unknown matcher {name!r}; known matchers: {known}")
    if factory is MatchNearest and kwargs:
        raise TypeError(f"match_nearest takes no options; got {sorted(kwargs)}")
    return factory(**kwargs)
