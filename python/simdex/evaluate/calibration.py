"""Distance-threshold calibration and thresholded matching.

A similarity model answers "which class is this?" by looking up the query's
nearest neighbours and, if they are close enough, returning their label.
:func:`calibrate` picks "close enough": it sweeps every candidate distance
threshold, computes classification metrics at each (see :mod:`simdex.metrics`
for the TP/FP/TN/FN semantics), and reports the best threshold plus thresholds
that meet user targets. :func:`match` then applies a threshold.

Semantics follow TensorFlow Similarity's ``calibrate`` so users can switch:

* candidate thresholds are the distinct (finite) neighbour distances of the
  first ``k`` columns, in ascending order;
* the **optimal** cutpoint is the *last* threshold where the calibration
  metric is at its best (ties go to the larger distance);
* a **target** cutpoint (``thresholds_targets={"precision": 0.99}``) is the
  *first* threshold where the metric reaches the target, except for metrics
  that get worse as the threshold grows (``precision``, ``fpr``,
  ``specificity``), where it is the *last* one: the largest distance that
  still meets the target. Targets that no threshold meets are left out of
  ``cutpoints``.

Differences from TensorFlow Similarity (deliberate):

* ``rounding`` is applied: metric values reported in ``cutpoints`` are
  rounded to that many decimals (TensorFlow Similarity accepts the argument
  and ignores it). Distances are never rounded (that would move the
  threshold), nor are the ``thresholds`` arrays; the optimum and targets are
  found on the unrounded values.
* A target on a metric to be minimised (``fpr``, ``fnr``) is met when the
  metric is ``<=`` the target (TensorFlow Similarity tests ``>=`` for every
  metric).
* ``thresholds`` holds every distinct threshold, not only those where the
  calibration metric changes.
* Input where every match is right (a perfect model) is calibrated like any
  other: every threshold has precision 1, and the optimal cutpoint is the
  largest distance (all queries matched). Input where every match is wrong
  raises ``ValueError``: no threshold accepts a right match, so none can be
  learned.

The work is one sort of the matched distances plus a binary search per
threshold (``O((n + m) log n)`` for ``n`` queries and ``m`` thresholds):
100k queries calibrate in a few tens of milliseconds.

Example:
    >>> import numpy as np
    >>> from simdex.calibration import calibrate, match
    >>> d = np.array([[0.1], [0.2], [0.3], [0.4]])
    >>> nl = np.array([[1], [2], [9], [4]])
    >>> q = np.array([1, 2, 3, 4])
    >>> res = calibrate(d, nl, q)
    >>> res.cutpoints["optimal"]["distance"], res.cutpoints["optimal"]["f1"]
    (0.4, 0.86)
    >>> match(d, nl, 0.25).tolist()
    [1, 2, -1, -1]

Why a little over 450 lines: one algorithm (threshold search) with its result class
and its serialisation.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from simdex._validate import MISSING_LABEL, as_labels, check_int
from simdex.evaluate import matchers as _matchers
from simdex.evaluate import metrics as _metrics

__all__ = ["CalibrationResult", "calibrate", "match"]

_FORMAT = "simdex.CalibrationResult"
_FORMAT_VERSION = 1
_CHUNK = 1 << 16  # queries per matcher call (progress granularity)


@dataclass
class CalibrationResult:
    """Result of :func:`calibrate`.

    Attributes:
        cutpoints: Name -> ``{"distance": d, <metric>: value, ...}``. Always has
            ``"optimal"``; plus one entry per target that some threshold meets,
            keyed ``f"{target:g} {metric}"`` (e.g. ``"0.99 precision"``,
            ``"0.05 fpr"``). Metric values are rounded to ``rounding`` decimals;
            ``distance`` is exact. Every cutpoint holds every computed metric.
        thresholds: ``"distance"`` -> ``(m,)`` float64 ascending candidate
            thresholds, and each computed metric -> ``(m,)`` float64 values at
            those thresholds (unrounded).
        calibration_metric: Canonical name of the optimised metric.
        matcher: Config of the matcher used (:func:`simdex.matchers.get` accepts it).
        k: Number of neighbours the matcher looked at.
        targets: The requested targets, canonical metric name -> value.
        num_queries: Number of calibration queries.
    """

    cutpoints: dict[str, dict[str, float]]
    thresholds: dict[str, np.ndarray]
    calibration_metric: str = "f1"
    matcher: dict[str, Any] = field(default_factory=lambda: {"name": "match_nearest"})
    k: int = 1
    targets: dict[str, float] = field(default_factory=dict)
    num_queries: int = 0

    @property
    def optimal(self) -> dict[str, float]:
        """The ``"optimal"`` cutpoint."""
        return self.cutpoints["optimal"]

    @property
    def distance(self) -> float:
        """Distance threshold of the optimal cutpoint."""
        return float(self.cutpoints["optimal"]["distance"])

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (lists and floats only), for saving with a model."""
        return {
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "calibration_metric": self.calibration_metric,
            "matcher": dict(self.matcher),
            "k": int(self.k),
            "targets": {k: float(v) for k, v in self.targets.items()},
            "num_queries": int(self.num_queries),
            "cutpoints": {name: {m: float(v) for m, v in cp.items()} for name, cp in self.cutpoints.items()},
            "thresholds": {m: np.asarray(v, dtype=np.float64).tolist() for m, v in self.thresholds.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CalibrationResult:
        """Rebuild a result from :meth:`to_dict` output.

        Raises:
            TypeError: ``data`` is not a mapping.
            ValueError: wrong format tag, newer version, missing keys, or arrays
                of different lengths.
        """
        if not isinstance(data, Mapping):
            raise TypeError(f"expected a dict; got {type(data).__name__}")
        if data.get("format", _FORMAT) != _FORMAT:
            raise ValueError(f"not a calibration result: format is {data.get('format')!r}")
        version = data.get("version", _FORMAT_VERSION)
        if not isinstance(version, int) or version > _FORMAT_VERSION:
            raise ValueError(
                f"calibration result version {version!r} is newer than supported "
                f"({_FORMAT_VERSION}); upgrade simdex"
            )
        missing = {"cutpoints", "thresholds"} - set(data)
        if missing:
            raise ValueError(f"calibration result is missing keys {sorted(missing)}")
        try:
            thresholds = {str(m): np.asarray(v, dtype=np.float64) for m, v in data["thresholds"].items()}
            cutpoints = {
                str(n): {str(m): float(v) for m, v in cp.items()} for n, cp in data["cutpoints"].items()
            }
        except (AttributeError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed calibration result: {exc}") from exc
        if "distance" not in thresholds:
            raise ValueError("calibration result thresholds lack 'distance'")
        lengths = {v.shape for v in thresholds.values()}
        if len(lengths) != 1 or thresholds["distance"].ndim != 1:
            raise ValueError(f"calibration threshold arrays differ in shape: {sorted(lengths)}")
        if "optimal" not in cutpoints or "distance" not in cutpoints["optimal"]:
            raise ValueError("calibration result lacks the optimal cutpoint distance")
        matcher = data.get("matcher", {"name": "match_nearest"})
        if isinstance(matcher, str):
            matcher = {"name": matcher}
        _matchers.get(matcher)  # validates
        return cls(
            cutpoints=cutpoints,
            thresholds=thresholds,
            calibration_metric=str(data.get("calibration_metric", "f1")),
            matcher=dict(matcher),
            k=int(data.get("k", 1)),
            targets={str(k): float(v) for k, v in dict(data.get("targets", {})).items()},
            num_queries=int(data.get("num_queries", 0)),
        )

    def __repr__(self) -> str:
        opt = self.cutpoints.get("optimal", {})
        return (
            f"CalibrationResult(calibration_metric={self.calibration_metric!r}, "
            f"num_thresholds={len(self.thresholds.get('distance', ()))}, "
            f"optimal={opt}, cutpoints={sorted(self.cutpoints)})"
        )

    def summary(self) -> str:
        """Plain-text table of the cutpoints, one row each."""
        names = list(self.cutpoints)
        cols: list[str] = []
        for cp in self.cutpoints.values():
            for m in cp:
                if m not in cols:
                    cols.append(m)
        header = ["cutpoint", *cols]
        rows = [[n] + [f"{self.cutpoints[n].get(c, float('nan')):.6g}" for c in cols] for n in names]
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
        lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in rows]
        return "\n".join(lines)


def _progress(total: int, verbose: int, desc: str) -> Any:
    """A tqdm bar when verbose and tqdm is installed; otherwise None."""
    if not verbose:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # progress is optional: fall back silently
        return None
    return tqdm(total=total, desc=desc, leave=False)


def _metric_names(
    calibration_metric: str, extra_metrics: Sequence[str] | str | None, targets: Mapping[str, float]
) -> tuple[str, list[str]]:
    cal = _metrics.classification_metric_info(calibration_metric)
    if not cal["is_ratio"]:
        raise ValueError(f"cannot calibrate on a raw count ({calibration_metric!r}); use a rate")
    names = [cal["name"]]
    if extra_metrics is None:
        extra: Sequence[str] = ()
    elif isinstance(extra_metrics, str):
        extra = (extra_metrics,)
    else:
        extra = extra_metrics
    for m in [*extra, *targets]:
        names.append(_metrics.classification_metric_info(m)["name"])
    return cal["name"], list(dict.fromkeys(names))


def _check_targets(thresholds_targets: Mapping[str, float] | None) -> dict[str, float]:
    if thresholds_targets is None:
        return {}
    if not isinstance(thresholds_targets, Mapping):
        raise TypeError(
            "thresholds_targets must be a dict of metric name -> target value; got "
            f"{type(thresholds_targets).__name__}"
        )
    out: dict[str, float] = {}
    for name, value in thresholds_targets.items():
        info = _metrics.classification_metric_info(name)
        if not info["is_ratio"]:
            raise ValueError(f"targets must be on rates, not raw counts; got {name!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise TypeError(f"target for {name!r} must be a number; got {type(value).__name__}")
        if not math.isfinite(float(value)):
            raise ValueError(f"target for {name!r} must be finite; got {value}")
        if info["name"] in out:
            raise ValueError(f"two targets for metric {info['name']!r}")
        out[info["name"]] = float(value)
    return out


def _target_index(values: np.ndarray, target: float, metric: str) -> int | None:
    info = _metrics.classification_metric_info(metric)
    meets = values >= target if info["direction"] == "max" else values <= target
    idx = np.flatnonzero(meets)
    if idx.size == 0:
        return None
    return int(idx[-1] if info["worsens_with_distance"] else idx[0])


def calibrate(
    distances: Any,
    neighbour_labels: Any,
    query_labels: Any,
    *,
    thresholds_targets: Mapping[str, float] | None = None,
    calibration_metric: str = "f1",
    k: int = 1,
    matcher: str | Mapping[str, Any] | _matchers.Matcher = "match_nearest",
    extra_metrics: Sequence[str] | None = ("precision", "recall", "binary_accuracy"),
    rounding: int | None = 2,
    verbose: int = 0,
) -> CalibrationResult:
    """Find the distance thresholds that optimise or meet classification metrics.

    Args:
        distances: ``(n, k')`` float neighbour distances, ascending along each
            row; ``inf`` for missing neighbours. NaN is rejected.
        neighbour_labels: ``(n, k')`` int labels of the neighbours; ``-1`` marks
            a missing neighbour (never a right match).
        query_labels: ``(n,)`` int true labels; ``-1`` means the query's class is
            not in the index (only "no match" is right for it).
        thresholds_targets: Metric name -> target value, e.g.
            ``{"precision": 0.99, "recall": 0.8, "fpr": 0.01}``. See the module
            docstring for how each target cutpoint is chosen.
        calibration_metric: Metric to optimise (default ``"f1"``); any rate from
            :mod:`simdex.metrics` (``fpr``/``fnr`` are minimised).
        k: Number of leading neighbours the matcher sees (``1 <= k <= k'``).
        matcher: ``"match_nearest"``, ``"match_majority_vote"``, a config dict
            or a :class:`simdex.matchers.Matcher`.
        extra_metrics: More metrics to compute and report in every cutpoint.
        rounding: Decimals for the metric values in ``cutpoints`` (``None``: no
            rounding). Distances are never rounded.
        verbose: ``> 0`` shows a tqdm progress bar (if tqdm is installed) and
            prints the cutpoint table.

    Returns:
        A :class:`CalibrationResult`.

    Raises:
        ValueError: empty input, shape mismatch, NaN, bad ``k``/``rounding``,
            unknown metric, no finite distance, or every match wrong.
        TypeError: non-integer labels, bad argument types.
    """
    q, nl, d = _metrics.prepare_labels(query_labels, neighbour_labels, distances)
    assert d is not None
    k = _metrics.check_k_columns(k, nl.shape[1])
    if rounding is not None:
        rounding = check_int(rounding, "rounding", 0)
    targets = _check_targets(thresholds_targets)
    cal_name, names = _metric_names(calibration_metric, extra_metrics, targets)
    m = _matchers.get(matcher)
    n = q.shape[0]

    bar = _progress((n + _CHUNK - 1) // _CHUNK + len(names) + 1, verbose, "calibrating")
    try:
        pred = np.empty(n, dtype=np.int64)
        pdist = np.empty(n, dtype=np.float64)
        for start in range(0, n, _CHUNK):
            stop = min(n, start + _CHUNK)
            p, pd = m.predict(nl[start:stop, :k], d[start:stop, :k])
            pred[start:stop] = p
            pdist[start:stop] = pd
            if bar is not None:
                bar.update(1)
        if np.isnan(pdist).any():
            raise ValueError(f"matcher {m!r} returned NaN distances")
        correct = (pred == q) & (pred != MISSING_LABEL)
        num_right = int(correct.sum())
        if num_right == 0:
            raise ValueError(
                f"cannot calibrate: all {n} matches are wrong; no distance threshold accepts a "
                "right match (check the index labels against the query labels)"
            )
        t = _metrics.default_thresholds(d[:, :k])
        counts = _metrics.confusion_counts(correct, pdist, t)
        if bar is not None:
            bar.update(1)
        thresholds: dict[str, np.ndarray] = {"distance": t}
        for name in names:
            thresholds.update(_metrics.classification_metrics(**counts, metrics=(name,)))
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()

    def cutpoint(i: int) -> dict[str, float]:
        cp = {"distance": float(t[i])}
        for name in names:
            v = float(thresholds[name][i])
            cp[name] = round(v, int(rounding)) if rounding is not None else v
        return cp

    values = thresholds[cal_name]
    best = values.max() if _metrics.CLASSIFICATION_METRICS[cal_name].direction == "max" else values.min()
    best_idx = int(np.flatnonzero(values == best)[-1])  # last: ties go to the larger distance
    cutpoints: dict[str, dict[str, float]] = {"optimal": cutpoint(best_idx)}
    for name, target in targets.items():
        idx = _target_index(thresholds[name], target, name)
        if idx is not None:
            cutpoints[f"{target:g} {name}"] = cutpoint(idx)

    result = CalibrationResult(
        cutpoints=cutpoints,
        thresholds=thresholds,
        calibration_metric=cal_name,
        matcher=m.get_config(),
        k=k,
        targets=targets,
        num_queries=n,
    )
    if verbose:
        unmet = [f"{v:g} {name}" for name, v in targets.items() if f"{v:g} {name}" not in cutpoints]
        print(result.summary(), file=sys.stdout)
        if unmet:
            print(f"targets not met by any threshold: {', '.join(unmet)}", file=sys.stdout)
    return result


def _threshold_value(threshold: Any) -> float:
    if isinstance(threshold, CalibrationResult):
        threshold = threshold.cutpoints["optimal"]
    if isinstance(threshold, Mapping):
        if "distance" not in threshold:
            raise ValueError(
                f"threshold dict needs a 'distance' key (a cutpoint); got keys {sorted(threshold)}"
            )
        threshold = threshold["distance"]
    if isinstance(threshold, (bool, np.bool_)) or not isinstance(
        threshold, (int, float, np.integer, np.floating)
    ):
        raise TypeError(
            "threshold must be a number, a cutpoint dict or a CalibrationResult; got "
            f"{type(threshold).__name__}"
        )
    value = float(threshold)
    if math.isnan(value):
        raise ValueError("threshold is NaN")
    return value


def match(
    distances: Any,
    neighbour_labels: Any,
    threshold: float | Mapping[str, float] | CalibrationResult,
    *,
    k: int = 1,
    matcher: str | Mapping[str, Any] | _matchers.Matcher = "match_nearest",
    no_match_label: int = -1,
) -> np.ndarray:
    """Predict labels, or "no match" where the matched distance exceeds the threshold.

    Args:
        distances: ``(n, k')`` float neighbour distances, ascending per row.
        neighbour_labels: ``(n, k')`` int neighbour labels; ``-1`` = missing.
        threshold: A distance; a cutpoint dict (its ``"distance"`` is used, e.g.
            ``result.cutpoints["0.99 precision"]``); or a
            :class:`CalibrationResult` (its optimal cutpoint). ``k`` and
            ``matcher`` always come from the arguments, not from the result.
        k: Number of leading neighbours the matcher sees.
        matcher: Name, config or :class:`simdex.matchers.Matcher`.
        no_match_label: Label returned for queries that get no match (also for
            queries without any neighbour).

    Returns:
        ``(n,)`` int64 predicted labels. A query is matched when its matcher
        distance is ``<=`` the threshold.

    Raises:
        ValueError: shape mismatch, NaN, bad ``k``.
        TypeError: bad threshold type or non-integer labels.
    """
    t = _threshold_value(threshold)
    nl = as_labels(neighbour_labels, "neighbour_labels", ndim=2)
    d = _metrics.as_distances(distances)
    if d.shape != nl.shape:
        raise ValueError(f"distances shape {d.shape} != neighbour_labels shape {nl.shape}")
    no_match_label = check_int(no_match_label, "no_match_label")
    if nl.shape[0] == 0:
        return np.empty(0, dtype=np.int64)
    k = _metrics.check_k_columns(k, nl.shape[1])
    pred, pdist = _matchers.get(matcher).predict(nl[:, :k], d[:, :k])
    pred = np.asarray(pred, dtype=np.int64)
    ok = (np.asarray(pdist) <= t) & (pred != MISSING_LABEL)
    return np.where(ok, pred, np.int64(no_match_label))
