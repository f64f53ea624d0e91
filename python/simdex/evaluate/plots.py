"""Plots for calibration and evaluation (optional: needs matplotlib).

Every function builds and returns a :class:`matplotlib.figure.Figure` without
touching pyplot's global state, so nothing needs a display: save it with
``fig.savefig("x.png")`` (rendered by the Agg backend) or show it in a
notebook. matplotlib is imported on first use; without it the functions raise
``ImportError`` with the install hint ``pip install "simdex[plots]"``.

Example:
    >>> from simdex import calibrate, plots            # doctest: +SKIP
    >>> res = calibrate(D, neighbour_labels, y)         # doctest: +SKIP
    >>> plots.plot_calibration(res).savefig("cal.png")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from simdex.evaluate import metrics as _metrics

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from simdex.evaluate.calibration import CalibrationResult

__all__ = [
    "plot_calibration",
    "plot_precision_recall",
    "plot_confusion_matrix",
    "plot_neighbours",
    "plot_lookup_neighbours",
    "confusion_matrix",
    "project_embeddings",
    "projector",
    "viz_neigbors_imgs",
]

_GOOD = "#1a9850"
_BAD = "#d73027"


def _figure(figsize: tuple[float, float]) -> Figure:
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - exercised only without matplotlib
        raise ImportError('simdex.plots needs matplotlib: pip install "simdex[plots]"') from exc
    return Figure(figsize=figsize, layout="constrained")


def _check_result(result: Any) -> CalibrationResult:
    from simdex.evaluate.calibration import CalibrationResult

    if not isinstance(result, CalibrationResult):
        raise TypeError(f"expected a simdex.CalibrationResult; got {type(result).__name__}")
    return result


def plot_calibration(
    result: CalibrationResult,
    metrics: Sequence[str] | None = None,
    *,
    show_cutpoints: bool = True,
    title: str | None = None,
    figsize: tuple[float, float] = (7.0, 4.0),
) -> Figure:
    """Metric-vs-distance curves of a calibration, with its cutpoints marked.

    Args:
        result: Output of :func:`simdex.calibrate`.
        metrics: Metric names to draw (default: every rate in
            ``result.thresholds``).
        show_cutpoints: Draw a dashed vertical line at each cutpoint.
        title: Axes title (default names the calibration metric).
        figsize: Figure size in inches.

    Returns:
        The Figure.

    Raises:
        TypeError: ``result`` is not a CalibrationResult.
        ValueError: a requested metric was not computed in ``result``.
    """
    result = _check_result(result)
    dist = np.asarray(result.thresholds["distance"])
    if metrics is None:
        names = [
            m
            for m in result.thresholds
            if m != "distance"
            and _metrics.CLASSIFICATION_METRICS.get(m, None) is not None
            and _metrics.CLASSIFICATION_METRICS[m].is_ratio
        ]
    else:
        names = []
        for m in metrics:
            key = _metrics.classification_metric_info(m)["name"]
            if key not in result.thresholds:
                raise ValueError(
                    f"metric {m!r} was not computed in this calibration; have "
                    f"{sorted(k for k in result.thresholds if k != 'distance')}"
                )
            names.append(key)
    fig = _figure(figsize)
    ax = fig.add_subplot()
    for name in names:
        ax.step(dist, result.thresholds[name], where="post", label=name, linewidth=1.5)
    if show_cutpoints:
        for i, (cname, cp) in enumerate(result.cutpoints.items()):
            color = "black" if cname == "optimal" else f"C{(len(names) + i) % 10}"
            ax.axvline(
                cp["distance"],
                color=color,
                linestyle="--",
                linewidth=1,
                label=f"{cname} (d={cp['distance']:.4g})",
            )
    ax.set_xlabel("distance threshold")
    ax.set_ylabel("metric value")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(True, alpha=0.3)
    ax.set_title(
        title
        if title is not None
        else f"calibration ({result.calibration_metric}, {result.num_queries} queries)"
    )
    ax.legend(loc="best", fontsize="small")
    return fig


def plot_precision_recall(
    result: CalibrationResult | None = None,
    *,
    precision: Any = None,
    recall: Any = None,
    title: str | None = None,
    figsize: tuple[float, float] = (5.0, 5.0),
) -> Figure:
    """Precision-recall curve, from a calibration or from arrays.

    Args:
        result: A CalibrationResult whose thresholds include ``precision`` and
            ``recall`` (the default ``extra_metrics`` do); its optimal cutpoint
            is marked. Or leave it None and pass ``precision`` and ``recall``.
        precision: ``(m,)`` precision values (when ``result`` is None).
        recall: ``(m,)`` recall values, same length.
        title: Axes title.
        figsize: Figure size in inches.

    Returns:
        The Figure.

    Raises:
        ValueError: missing/mismatched arrays, or a result without precision
            and recall.
        TypeError: ``result`` of the wrong type.
    """
    marker = None
    if result is not None:
        result = _check_result(result)
        if "precision" not in result.thresholds or "recall" not in result.thresholds:
            raise ValueError(
                "calibration result has no precision/recall curves; calibrate with "
                "extra_metrics including 'precision' and 'recall'"
            )
        p = np.asarray(result.thresholds["precision"], dtype=np.float64)
        r = np.asarray(result.thresholds["recall"], dtype=np.float64)
        opt = result.cutpoints["optimal"]
        i = int(np.searchsorted(result.thresholds["distance"], opt["distance"]))
        marker = (r[i], p[i], f"optimal (d={opt['distance']:.4g})")
    else:
        if precision is None or recall is None:
            raise ValueError("pass a CalibrationResult, or both precision and recall")
        p = np.asarray(precision, dtype=np.float64).ravel()
        r = np.asarray(recall, dtype=np.float64).ravel()
        if p.shape != r.shape or p.size == 0:
            raise ValueError(f"precision {p.shape} and recall {r.shape} must be equal, non-empty")
    fig = _figure(figsize)
    ax = fig.add_subplot()
    ax.plot(r, p, linewidth=1.5, label="precision-recall")
    if marker is not None:
        ax.scatter([marker[0]], [marker[1]], color=_BAD, zorder=3, label=marker[2])
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(True, alpha=0.3)
    ax.set_title(title if title is not None else "precision-recall")
    ax.legend(loc="lower left", fontsize="small")
    return fig


def _encode_labels(
    y_true: Any, y_pred: Any, no_match_label: Any
) -> tuple[np.ndarray, np.ndarray, list[Any] | None]:
    """Integer codes of string (or mixed) labels; ``None`` vocabulary when already integers.

    A prediction equal to ``no_match_label`` (or to -1 / None / "" for string
    labels) is "no match" and becomes -1.
    """
    t = np.asarray(y_true)
    p = np.asarray(y_pred)
    if t.dtype.kind in "iub" and p.dtype.kind in "iub":
        return t, p, None
    if t.dtype.kind == "f" and p.dtype.kind in "iuf":
        return t, p, None
    no_match = {no_match_label, -1, "-1", None, ""}
    t_list, p_list = t.tolist(), p.tolist()
    vocab = sorted(
        {v for v in t_list if v not in no_match} | {v for v in p_list if v not in no_match}, key=str
    )
    code = {v: i for i, v in enumerate(vocab)}
    t_codes = np.array([code.get(v, -1) for v in t_list], dtype=np.int64)
    p_codes = np.array([code.get(v, -1) for v in p_list], dtype=np.int64)
    return t_codes, p_codes, vocab


def plot_confusion_matrix(
    *args: Any,
    y_true: Any = None,
    y_pred: Any = None,
    labels: Sequence[Any] | None = None,
    class_names: Sequence[str] | Mapping[Any, str] | None = None,
    no_match_label: Any = -1,
    normalize: bool = False,
    title: str | None = None,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """Confusion matrix of thresholded matches, with a "no match" row.

    ``y_true`` and ``y_pred`` are keyword-only: TF Similarity's function takes
    ``(y_pred, y_true)`` and simdex's used to take ``(y_true, y_pred)``, so a
    positional call would silently transpose the matrix; it raises
    ``TypeError`` instead.

    Columns are true classes, rows predicted classes; the last row counts, for
    each true class, the queries that got no match (see
    :func:`simdex.metrics.confusion_matrix`). A true label equal to
    ``no_match_label`` (a class not in the index) is shown as an "unknown"
    column.

    Args:
        y_true: ``(n,)`` true labels: ints, or strings (class names).
        y_pred: ``(n,)`` predictions, e.g. from :meth:`simdex.SimilarityModel.match`;
            ``no_match_label`` (or -1 / None with string labels) for no match.
        labels: Classes to show, in order (default: all seen). TF Similarity
            passes display names here: a list of strings for integer labels is
            taken as ``class_names``.
        class_names: Display names, a list aligned with the shown classes or a
            dict label -> name.
        no_match_label: Marker of no match in ``y_pred``.
        normalize: Divide each column by its total (fraction of each true class).
        title: Axes title.
        figsize: Figure size (default grows with the number of classes).

    Returns:
        The Figure.

    Raises:
        TypeError: positional labels, or a missing ``y_true``/``y_pred``.
        ValueError: bad inputs (see :func:`simdex.metrics.confusion_matrix`) or
            ``class_names`` of the wrong length.
    """
    if args:
        raise TypeError(
            "plot_confusion_matrix takes the labels as keywords: plot_confusion_matrix(y_true=..., "
            "y_pred=...) (TF Similarity's positional order is (y_pred, y_true), simdex's was "
            "(y_true, y_pred); keywords cannot be transposed by mistake)"
        )
    if y_true is None or y_pred is None:
        raise TypeError("plot_confusion_matrix needs y_true= and y_pred=")
    t, p, vocab = _encode_labels(y_true, y_pred, no_match_label)
    if vocab is not None:  # string labels: codes 0..V-1, -1 = no match / unknown
        no_match_code = -1
        if labels is not None:
            unknown = [v for v in labels if v not in vocab]
            if unknown:
                raise ValueError(f"labels {unknown[:10]} do not occur in y_true or y_pred")
            codes: Sequence[int] | None = [vocab.index(v) for v in labels]
        else:
            codes = None
        if class_names is None:
            class_names = {i: str(v) for i, v in enumerate(vocab)}
    else:
        no_match_code = no_match_label
        codes = labels
        if labels is not None and len(labels) and all(isinstance(v, str) for v in labels):
            if class_names is not None:
                raise TypeError("labels holds names and class_names is given too; pass one")
            class_names, codes = list(labels), None
    mat, lab = _metrics.confusion_matrix(t, p, labels=codes, no_match_label=no_match_code)
    if class_names is None:
        names = ["unknown" if v == no_match_code else str(v) for v in lab.tolist()]
    elif isinstance(class_names, Mapping):
        names = [str(class_names.get(v, "unknown" if v == no_match_code else v)) for v in lab.tolist()]
    else:
        names = [str(v) for v in class_names]
        if len(names) != lab.size:
            raise ValueError(f"class_names has {len(names)} entries for {lab.size} labels")
    is_unknown = (lab == no_match_code).tolist()
    row_names = [nm for nm, u in zip(names, is_unknown) if not u] + ["no match"]
    values = mat.astype(np.float64)
    if normalize:
        totals = values.sum(axis=0, keepdims=True)
        values = np.divide(values, totals, out=np.zeros_like(values), where=totals > 0)
    nrows = len(row_names)
    size = figsize or (max(4.0, 0.55 * lab.size + 2.0), max(4.0, 0.55 * nrows + 1.5))
    fig = _figure(size)
    ax = fig.add_subplot()
    im = ax.imshow(values, cmap="Blues", aspect="auto")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(lab.size), names, rotation=45 if lab.size > 8 else 0)
    ax.set_yticks(range(nrows), row_names)
    ax.set_xlabel("true label")
    ax.set_ylabel("predicted label")
    if lab.size <= 30 and nrows <= 31:
        vmax = values.max() if values.size else 0.0
        for i in range(values.shape[0]):
            for j in range(values.shape[1]):
                txt = f"{values[i, j]:.2f}" if normalize else str(int(mat[i, j]))
                color = "white" if vmax > 0 and values[i, j] > 0.6 * vmax else "black"
                ax.text(j, i, txt, ha="center", va="center", color=color, fontsize="small")
    ax.axhline(nrows - 1.5, color="black", linewidth=1)
    ax.set_title(title if title is not None else "confusion matrix")
    return fig


def _as_images(x: np.ndarray, lead: int, image_shape: Sequence[int] | None, what: str) -> np.ndarray:
    if image_shape is not None:
        shape = tuple(int(s) for s in image_shape)
        try:
            x = x.reshape(x.shape[:lead] + shape)
        except ValueError as exc:
            raise ValueError(f"cannot reshape {what} of shape {x.shape} to images {shape}") from exc
    img_dims = x.ndim - lead
    if img_dims == 3 and x.shape[-1] == 1:
        x = x[..., 0]
        img_dims = 2
    if img_dims == 2 or (img_dims == 3 and x.shape[-1] in (3, 4)):
        return x
    raise ValueError(
        f"{what} must be images (H, W), (H, W, 1|3|4) after the leading {lead} axes, or pass "
        f"image_shape; got shape {x.shape}"
    )


def plot_neighbours(
    queries: Any,
    neighbours: Any,
    *,
    query_labels: Any = None,
    neighbour_labels: Any = None,
    distances: Any = None,
    image_shape: Sequence[int] | None = None,
    cmap: str = "gray",
    cell_size: float = 1.4,
) -> Figure:
    """Grid of query images, each followed by its nearest neighbours.

    One row per query: the query first, then its ``k`` neighbours, each titled
    with its label and distance; neighbour titles are green when the label
    equals the query label and red otherwise (when both are known).

    Args:
        queries: ``(q, H, W)``, ``(q, H, W, C)`` images, or ``(q, D)`` with
            ``image_shape``. Wrap a single query as ``x[None]``.
        neighbours: ``(q, k, ...)`` neighbour images, same image layout.
        query_labels: Optional ``(q,)`` labels.
        neighbour_labels: Optional ``(q, k)`` labels.
        distances: Optional ``(q, k)`` distances.
        image_shape: Shape to reshape flat vectors to, e.g. ``(8, 8)``.
        cmap: Colormap for single-channel images.
        cell_size: Inches per image.

    Returns:
        The Figure.

    Raises:
        ValueError: inconsistent shapes.
    """
    qx = np.asarray(queries)
    nx = np.asarray(neighbours)
    if qx.ndim < 2 or nx.ndim < 3:
        raise ValueError(
            f"queries must be (q, ...) and neighbours (q, k, ...); got {qx.shape} and {nx.shape}"
        )
    if nx.shape[0] != qx.shape[0]:
        raise ValueError(f"{qx.shape[0]} queries but neighbours for {nx.shape[0]}")
    qx = _as_images(qx, 1, image_shape, "queries")
    nx = _as_images(nx, 2, image_shape, "neighbours")
    if nx.shape[2:] != qx.shape[1:]:
        raise ValueError(f"query images {qx.shape[1:]} and neighbour images {nx.shape[2:]} differ")
    nq, k = nx.shape[:2]
    ql = None if query_labels is None else np.asarray(query_labels).ravel()
    nl = None if neighbour_labels is None else np.asarray(neighbour_labels)
    dd = None if distances is None else np.asarray(distances, dtype=np.float64)
    if ql is not None and ql.shape != (nq,):
        raise ValueError(f"query_labels must have shape ({nq},); got {ql.shape}")
    if nl is not None and nl.shape != (nq, k):
        raise ValueError(f"neighbour_labels must have shape ({nq}, {k}); got {nl.shape}")
    if dd is not None and dd.shape != (nq, k):
        raise ValueError(f"distances must have shape ({nq}, {k}); got {dd.shape}")

    fig = _figure((cell_size * (k + 1), cell_size * 1.25 * nq))
    axes = fig.subplots(nq, k + 1, squeeze=False)
    for i in range(nq):
        ax = axes[i, 0]
        ax.imshow(qx[i], cmap=cmap if qx[i].ndim == 2 else None)
        ax.set_title("query" if ql is None else f"query: {ql[i]}", fontsize="small", fontweight="bold")
        for j in range(k):
            ax = axes[i, j + 1]
            ax.imshow(nx[i, j], cmap=cmap if nx[i, j].ndim == 2 else None)
            parts = []
            color = "black"
            if nl is not None:
                parts.append(str(nl[i, j]))
                if ql is not None:
                    color = _GOOD if nl[i, j] == ql[i] else _BAD
            if dd is not None:
                parts.append(f"d={dd[i, j]:.3g}")
            if parts:
                ax.set_title("\n".join(parts), fontsize="small", color=color)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    return fig


# Neighbour grids from lookups and the embedding projector live in simdex.viz.
from simdex.evaluate.viz import plot_lookup_neighbours, project_embeddings, projector, viz_neigbors_imgs  # noqa: E402

#: TF Similarity's name (``tfsim.visualization.confusion_matrix``); keyword-only labels here.
confusion_matrix = plot_confusion_matrix
