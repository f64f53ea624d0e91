"""simdex.viz: neighbour grids from Lookup lists and the 2-D embedding projector."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("sklearn")

from simdex import plots  # noqa: E402
from simdex.evaluate import viz  # noqa: E402
from simdex.models import Lookup  # noqa: E402


def _lookups(images, labels, rows):
    return [
        [
            Lookup(r + 1, 0.1 * (r + 1), int(labels[i]), images[i], np.zeros(2, np.float32), i)
            for r, i in enumerate(row)
        ]
        for row in rows
    ]


def test_plot_lookup_neighbours(tmp_path):
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    images = x.reshape(-1, 8, 8)
    found = _lookups(images, y, [[1, 2, 3], [4, 5]])  # a short row is padded with blank cells
    fig = plots.plot_lookup_neighbours(
        images[:2], found, query_labels=y[:2], class_mapping=[f"d{i}" for i in range(10)]
    )
    ax = fig.axes
    assert ax[0].get_title() == "query: d0"
    assert ax[1].get_title().startswith(f"d{y[1]}\nd=0.1")
    want = "#1a9850" if y[1] == y[0] else "#d73027"
    assert ax[1].title.get_color() == want
    fig.savefig(tmp_path / "grid.png")
    assert (tmp_path / "grid.png").stat().st_size > 1000
    # flat vectors with image_shape, or any array with a display function
    flat = _lookups(x, y, [[7, 8]])
    plots.plot_lookup_neighbours(x[:1], flat, image_shape=(8, 8))
    drawn = []
    plots.plot_lookup_neighbours(
        ["q"], _lookups(["a", "b"], [0, 1], [[0, 1]]), display_fn=lambda ax, it: drawn.append(it)
    )
    assert drawn == ["q", "a", "b"]
    fig = viz.viz_neigbors_imgs(images[0], y[0], found[0], fig_size=(8, 2))
    assert tuple(fig.get_size_inches()) == (8, 2)
    with pytest.raises(ValueError, match="data=images"):
        plots.plot_lookup_neighbours(images[:1], [[Lookup(1, 0.0, 0, None, np.zeros(2), 0)]])
    with pytest.raises(ValueError, match="lookup lists"):
        plots.plot_lookup_neighbours(images[:2], found[:1])
    with pytest.raises(ValueError, match="display_fn"):
        plots.plot_lookup_neighbours(x[:1], flat)


def test_projector_static_and_html(tmp_path):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 30)
    emb = np.eye(3)[y] * 5 + rng.normal(scale=0.3, size=(90, 3))
    emb = np.hstack([emb, rng.normal(scale=0.1, size=(90, 5))])
    xy, used = viz.project_embeddings(emb, method="pca")
    assert xy.shape == (90, 2) and used == "pca"
    # well separated classes stay separated in 2-D: each point's nearest neighbour shares its class
    d = ((xy[:, None] - xy[None]) ** 2).sum(-1) + np.eye(90) * 1e9
    assert np.mean(y[d.argmin(1)] == y) > 0.95
    xy, used = viz.project_embeddings(emb[::3], method="tsne")  # 30 points keep t-SNE quick
    assert xy.shape == (30, 2) and used == "tsne"
    fig = viz.projector(emb, y, class_mapping={0: "a", 1: "b", 2: "c"}, method="pca")
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["a", "b", "c"]
    fig.savefig(tmp_path / "projector.png")
    assert (tmp_path / "projector.png").stat().st_size > 1000
    try:
        import plotly  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install plotly"):
            viz.projector(emb, y, method="pca", html_path=tmp_path / "p.html")
    else:
        viz.projector(
            emb, y, method="pca", html_path=tmp_path / "p.html", tooltips=[f"item {i}" for i in range(90)]
        )
        page = (tmp_path / "p.html").read_text()
        assert "item 17" in page and "plotly" in page.lower() and '<script src="http' not in page
    with pytest.raises(ValueError, match="method"):
        viz.project_embeddings(emb, method="mds")
    with pytest.raises(ValueError, match="labels"):
        viz.projector(emb, y[:5], method="pca")
    with pytest.raises(ValueError, match="NaN"):
        viz.project_embeddings(np.full((4, 3), np.nan))
