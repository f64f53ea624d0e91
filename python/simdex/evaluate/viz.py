"""Visual checks of a similarity model: neighbour grids from lookups, and a 2-D embedding projector.

* :func:`plot_lookup_neighbours` draws each query next to the neighbours that
  :meth:`simdex.SimilarityModel.lookup` returned (their ``data``: images, or
  anything a ``display_fn`` can draw); :func:`viz_neigbors_imgs` is TF
  Similarity's one-query spelling.
* :func:`project_embeddings` maps embeddings to 2-D (UMAP when ``umap-learn``
  is installed, else PCA or t-SNE from scikit-learn); :func:`projector` draws
  the static scatter plot (save it as PNG) and, with ``html_path``, writes an
  interactive HTML page with plotly (``pip install plotly``).

Figures are built without pyplot (as in :mod:`simdex.plots`): save them with
``fig.savefig(...)`` or display them in a notebook.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = [
    "plot_lookup_neighbours",
    "project_embeddings",
    "projector",
    "viz_neigbors_imgs",
]

_GOOD = "#1a9850"
_BAD = "#d73027"
_METHODS = ("auto", "umap", "pca", "tsne")


def _new_figure(figsize: tuple[float, float]) -> Figure:
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - exercised only without matplotlib
        raise ImportError('simdex.viz needs matplotlib: pip install "simdex[plots]"') from exc
    return Figure(figsize=figsize, layout="constrained")


def _name(label: Any, class_mapping: Mapping[Any, str] | Sequence[str] | None) -> str:
    if label is None:
        return "?"
    if class_mapping is None:
        return str(label)
    if isinstance(class_mapping, Mapping):
        return str(class_mapping.get(label, label))
    try:
        return str(class_mapping[int(label)])
    except (IndexError, TypeError, ValueError):
        return str(label)


def _draw_image(ax: Any, item: Any, cmap: str, image_shape: Sequence[int] | None) -> None:
    arr = np.asarray(item)
    if image_shape is not None:
        arr = arr.reshape(tuple(image_shape))
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (3, 4))):
        raise ValueError(
            f"cannot draw an item of shape {arr.shape} as an image: pass image_shape=(H, W) or a display_fn"
        )
    ax.imshow(arr, cmap=cmap if arr.ndim == 2 else None)


def plot_lookup_neighbours(
    queries: Any,
    lookups: Sequence[Sequence[Any]],
    *,
    query_labels: Any = None,
    class_mapping: Mapping[Any, str] | Sequence[str] | None = None,
    display_fn: Callable[[Any, Any], None] | None = None,
    image_shape: Sequence[int] | None = None,
    cmap: str = "gray",
    cell_size: float = 1.4,
) -> Figure:
    """Grid of queries, each followed by its neighbours from :meth:`~simdex.SimilarityModel.lookup`.

    One row per query. Each neighbour shows its ``data`` (indexed with
    ``model.index(x, y, data=...)``), titled with its label and distance;
    titles are green when the label equals the query's label, red otherwise.

    Args:
        queries: ``(q, ...)`` query items (images, or what ``display_fn`` draws).
        lookups: ``q`` lists of :class:`simdex.Lookup` (``model.lookup(queries, k)``).
        query_labels: Optional ``(q,)`` labels of the queries.
        class_mapping: Label -> display name (dict or list).
        display_fn: ``display_fn(ax, item)`` draws one item on a matplotlib Axes
            (default: ``imshow`` of an image ``(H, W)``, ``(H, W, 1|3|4)``, or a
            flat vector with ``image_shape``).
        image_shape: Shape to reshape flat vectors to, e.g. ``(8, 8)``.
        cmap: Colormap for single-channel images.
        cell_size: Inches per cell.

    Returns:
        The Figure.

    Raises:
        ValueError: ``queries`` and ``lookups`` differ in length; a neighbour
            without ``data``; an item that is not an image and no ``display_fn``.
    """
    qx = list(queries) if not isinstance(queries, np.ndarray) else queries
    if len(qx) != len(lookups):
        raise ValueError(f"{len(qx)} queries but {len(lookups)} lookup lists")
    if len(qx) == 0:
        raise ValueError("no queries to draw")
    ql = None if query_labels is None else np.asarray(query_labels).ravel()
    if ql is not None and ql.shape[0] != len(qx):
        raise ValueError(f"query_labels has {ql.shape[0]} labels for {len(qx)} queries")
    k = max((len(row) for row in lookups), default=0)
    for row in lookups:
        for rec in row:
            if getattr(rec, "data", None) is None:
                raise ValueError(
                    "a neighbour has no data to draw: index the items with model.index(x, y, data=images)"
                )

    def draw(ax: Any, item: Any) -> None:
        if display_fn is not None:
            display_fn(ax, item)
        else:
            _draw_image(ax, item, cmap, image_shape)

    fig = _new_figure((cell_size * (k + 1), cell_size * 1.3 * len(qx)))
    axes = fig.subplots(len(qx), k + 1, squeeze=False)
    for i in range(len(qx)):
        draw(axes[i, 0], qx[i])
        head = "query" if ql is None else f"query: {_name(ql[i], class_mapping)}"
        axes[i, 0].set_title(head, fontsize="small", fontweight="bold")
        for j in range(k):
            ax = axes[i, j + 1]
            if j >= len(lookups[i]):
                ax.set_axis_off()
                continue
            rec = lookups[i][j]
            draw(ax, rec.data)
            color = "black"
            if ql is not None and rec.label is not None:
                color = _GOOD if rec.label == ql[i] else _BAD
            ax.set_title(
                f"{_name(rec.label, class_mapping)}\nd={rec.distance:.3g}", fontsize="small", color=color
            )
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    return fig


def viz_neigbors_imgs(
    example: Any,
    example_class: Any,
    neighbors: Sequence[Any],
    class_mapping: Mapping[Any, str] | Sequence[str] | None = None,
    fig_size: tuple[float, float] | None = None,
    cmap: str = "viridis",
    show: bool = False,
) -> Figure:
    """TF Similarity's name (and spelling): one query image and its neighbours' images.

    Args:
        example: The query image.
        example_class: Its label.
        neighbors: Its list of :class:`simdex.Lookup` (``model.lookup(x[None], k)[0]``).
        class_mapping: Label -> display name.
        fig_size: Figure size (default from the number of neighbours).
        cmap: Colormap for single-channel images.
        show: Accepted for TF Similarity compatibility; the figure is returned
            (display it in a notebook or save it), never shown through pyplot.

    Returns:
        The Figure.
    """
    fig = plot_lookup_neighbours(
        [example], [list(neighbors)], query_labels=[example_class], class_mapping=class_mapping, cmap=cmap
    )
    if fig_size is not None:
        fig.set_size_inches(*fig_size)
    return fig


def project_embeddings(embeddings: Any, method: str = "auto", seed: int = 0) -> tuple[np.ndarray, str]:
    """2-D coordinates of ``embeddings`` for plotting.

    Args:
        embeddings: ``(n, d)`` float embeddings, ``n >= 2``.
        method: ``"umap"`` (needs ``umap-learn``), ``"pca"``, ``"tsne"`` (both
            from scikit-learn), or ``"auto"``: UMAP when installed, else t-SNE
            for up to 5,000 points, else PCA.
        seed: Random seed of UMAP / t-SNE.

    Returns:
        ``((n, 2) float32 coordinates, the method used)``.

    Raises:
        ImportError: the requested method's package is missing (with the install command).
        ValueError: bad shape, NaN, unknown method.
    """
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"embeddings must be (n, d) with n >= 2, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("embeddings contain NaN or infinity")
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    if method in ("auto", "umap"):
        try:
            import umap
        except ImportError as e:
            if method == "umap":
                raise ImportError("method='umap' needs umap-learn: pip install umap-learn") from e
            method = "tsne" if x.shape[0] <= 5000 else "pca"
        else:
            reducer = umap.UMAP(n_components=2, random_state=seed, n_neighbors=min(15, x.shape[0] - 1))
            return np.asarray(reducer.fit_transform(x), dtype=np.float32), "umap"
    try:
        from sklearn.decomposition import PCA
        from sklearn.manifold import TSNE
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(f"method={method!r} needs scikit-learn: pip install scikit-learn") from e
    if x.shape[1] <= 2:
        out = np.zeros((x.shape[0], 2))
        out[:, : x.shape[1]] = x
        return out.astype(np.float32), "identity"
    if method == "pca":
        return PCA(n_components=2, random_state=seed).fit_transform(x).astype(np.float32), "pca"
    perplexity = float(min(30.0, max(2.0, (x.shape[0] - 1) / 3.0)))
    tsne = TSNE(n_components=2, init="pca", random_state=seed, perplexity=perplexity)
    return tsne.fit_transform(x).astype(np.float32), "tsne"


def projector(
    embeddings: Any,
    labels: Any = None,
    class_mapping: Mapping[Any, str] | Sequence[str] | None = None,
    *,
    method: str = "auto",
    html_path: str | os.PathLike[str] | None = None,
    tooltips: Sequence[str] | None = None,
    point_size: float = 8.0,
    title: str | None = None,
    figsize: tuple[float, float] = (7.0, 6.0),
    seed: int = 0,
) -> Figure:
    """Scatter plot of the embeddings in 2-D, coloured by label (TF Similarity's ``projector``).

    Args:
        embeddings: ``(n, d)`` embeddings (e.g. ``model.predict(x)``).
        labels: Optional ``(n,)`` labels (colours and legend).
        class_mapping: Label -> display name.
        method: See :func:`project_embeddings`.
        html_path: Also write an interactive HTML page there (needs plotly:
            ``pip install plotly``); hovering shows the label and ``tooltips``.
        tooltips: Optional ``n`` strings shown on hover in the HTML page.
        point_size: Marker size.
        title: Title (default names the method).
        figsize: Size of the static figure in inches.
        seed: Random seed of the projection.

    Returns:
        The static Figure (``fig.savefig("projector.png")``).

    Raises:
        ImportError: ``html_path`` given and plotly missing (with the install command).
        ValueError: labels or tooltips of the wrong length; see :func:`project_embeddings`.
    """
    xy, used = project_embeddings(embeddings, method=method, seed=seed)
    n = xy.shape[0]
    lab = None if labels is None else np.asarray(labels).ravel()
    if lab is not None and lab.shape[0] != n:
        raise ValueError(f"labels has {lab.shape[0]} entries for {n} embeddings")
    if tooltips is not None and len(tooltips) != n:
        raise ValueError(f"tooltips has {len(tooltips)} entries for {n} embeddings")
    if html_path is not None:
        try:
            import plotly.graph_objects as go
        except ImportError as e:
            raise ImportError("projector(html_path=...) needs plotly: pip install plotly") from e
    head = title if title is not None else f"embeddings ({used})"
    fig = _new_figure(figsize)
    ax = fig.add_subplot()
    groups = [None] if lab is None else list(dict.fromkeys(lab.tolist()))
    for g in groups:
        sel = np.ones(n, bool) if g is None else lab == g
        ax.scatter(xy[sel, 0], xy[sel, 1], s=point_size, label=None if g is None else _name(g, class_mapping))
    if lab is not None and len(groups) <= 30:
        ax.legend(fontsize="small", markerscale=2, loc="best")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(head)
    if html_path is not None:
        page = go.Figure()
        for g in groups:
            sel = np.flatnonzero(np.ones(n, bool) if g is None else lab == g)
            text = [tooltips[int(i)] for i in sel] if tooltips is not None else None
            page.add_trace(
                go.Scattergl(
                    x=xy[sel, 0],
                    y=xy[sel, 1],
                    mode="markers",
                    marker={"size": point_size},
                    name="points" if g is None else _name(g, class_mapping),
                    text=text,
                    hovertemplate=None if text is None else "%{text}<extra>%{fullData.name}</extra>",
                )
            )
        page.update_layout(title=head, xaxis={"visible": False}, yaxis={"visible": False})
        # The plotly library is embedded in the page: it opens offline, with nothing fetched.
        page.write_html(os.fspath(html_path), include_plotlyjs=True, full_html=True)
    return fig
