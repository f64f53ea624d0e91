"""Tests for simdex.plots: every figure renders to a non-empty PNG without a display."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from simdex import plots  # noqa: E402
from simdex.calibration import calibrate, match  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _save(fig, path):
    fig.savefig(path, dpi=60)
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 2000  # a blank canvas would still be a PNG; this one has content
    return data


@pytest.fixture(scope="module")
def calib():
    rng = np.random.default_rng(0)
    n = 400
    q = rng.integers(0, 5, size=n)
    right = rng.random(n) < 0.7
    d = np.where(right, rng.random(n) * 0.6, 0.3 + rng.random(n) * 0.7)[:, None]
    nl = np.where(right, q, (q + 1) % 5)[:, None]
    res = calibrate(
        d,
        nl,
        q,
        thresholds_targets={"precision": 0.95, "recall": 0.9},
        extra_metrics=("precision", "recall", "fpr", "tp"),
    )
    return d, nl, q, res


def test_plot_calibration(tmp_path, calib):
    *_, res = calib
    fig = plots.plot_calibration(res)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[:4] == ["f1", "precision", "recall", "fpr"]  # raw counts are not drawn
    assert any(lab.startswith("optimal") for lab in labels)
    _save(fig, tmp_path / "calibration.png")
    fig = plots.plot_calibration(res, metrics=["f1_score"], show_cutpoints=False, title="x")
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["f1"]
    with pytest.raises(ValueError, match="not computed"):
        plots.plot_calibration(res, metrics=["npv"])
    with pytest.raises(TypeError):
        plots.plot_calibration(res.to_dict())


def test_plot_precision_recall(tmp_path, calib):
    *_, res = calib
    _save(plots.plot_precision_recall(res), tmp_path / "pr.png")
    _save(plots.plot_precision_recall(precision=[1, 0.9, 0.8], recall=[0.1, 0.5, 0.9]), tmp_path / "pr2.png")
    with pytest.raises(ValueError, match="both precision and recall"):
        plots.plot_precision_recall(precision=[1.0])
    with pytest.raises(ValueError, match="equal"):
        plots.plot_precision_recall(precision=[1.0], recall=[0.1, 0.2])
    no_pr = calibrate(*calib[:3], extra_metrics=None)
    with pytest.raises(ValueError, match="precision/recall"):
        plots.plot_precision_recall(no_pr)


def test_plot_confusion_matrix(tmp_path, calib):
    d, nl, q, res = calib
    pred = match(d, nl, res)
    fig = plots.plot_confusion_matrix(y_true=q, y_pred=pred, class_names={0: "zero"})
    ax = fig.axes[0]
    ticks = [t.get_text() for t in ax.get_yticklabels()]
    assert ticks[0] == "zero" and ticks[-1] == "no match"
    _save(fig, tmp_path / "cm.png")
    _save(plots.plot_confusion_matrix(y_true=q, y_pred=pred, normalize=True), tmp_path / "cm_norm.png")
    with pytest.raises(ValueError, match="class_names"):
        plots.plot_confusion_matrix(y_true=q, y_pred=pred, class_names=["a"])
    # unknown-class queries (true label -1) get an "unknown" column and no row
    fig = plots.plot_confusion_matrix(y_true=[0, -1, -1, 1], y_pred=[0, -1, 1, 1])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["unknown", "0", "1"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0", "1", "no match"]
    _save(fig, tmp_path / "cm_unknown.png")


def _cells(fig):
    """The numbers written in the cells, row by row (rows: predicted + "no match")."""
    ax = fig.axes[0]
    ncols = len(ax.get_xticklabels())
    vals = [int(t.get_text()) for t in ax.texts]
    return [vals[i : i + ncols] for i in range(0, len(vals), ncols)]


def test_confusion_matrix_keywords_names_and_no_match_row(tmp_path):
    with pytest.raises(TypeError, match="keywords"):
        plots.plot_confusion_matrix([0, 1], [0, 1])
    with pytest.raises(TypeError, match="y_pred"):
        plots.plot_confusion_matrix(y_true=[0, 1])
    # 3 queries without a match: the last row says so, per true class
    y_true = [0, 0, 1, 1, 2, 2]
    y_pred = [0, -1, 1, -1, -1, 2]
    fig = plots.plot_confusion_matrix(y_true=y_true, y_pred=y_pred)
    assert _cells(fig) == [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]]
    # string class names as labels, with None / -1 as "no match"
    fig = plots.plot_confusion_matrix(y_true=["cat", "cat", "dog", "dog"], y_pred=["cat", None, "cat", "dog"])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["cat", "dog"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["cat", "dog", "no match"]
    assert _cells(fig) == [[1, 1], [0, 1], [1, 0]]
    # TF Similarity's `labels` = display names for integer labels
    fig = plots.plot_confusion_matrix(y_true=[0, 1, 2], y_pred=[0, 2, -1], labels=["a", "b", "c"])
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["a", "b", "c"]
    _save(fig, tmp_path / "cm_names.png")


def test_plot_neighbours(tmp_path):
    from sklearn.datasets import load_digits

    digits = load_digits()
    x, y = digits.data, digits.target
    queries = x[:3]
    nbr_idx = np.array([[10, 20, 30, 40], [11, 21, 31, 41], [12, 22, 32, 42]])
    fig = plots.plot_neighbours(
        queries,
        x[nbr_idx],
        query_labels=y[:3],
        neighbour_labels=y[nbr_idx],
        distances=np.tile([0.1, 0.2, 0.3, 0.4], (3, 1)),
        image_shape=(8, 8),
    )
    assert len(fig.axes) == 3 * 5
    # title colour says whether a neighbour's label equals the query's
    ax = fig.axes[1]
    want = "#1a9850" if y[10] == y[0] else "#d73027"
    assert ax.title.get_color() == want
    _save(fig, tmp_path / "neighbours.png")
    # RGB images and no annotations
    rgb = np.random.default_rng(0).random((2, 6, 6, 3))
    _save(plots.plot_neighbours(rgb, np.stack([rgb, rgb], axis=1), cell_size=1.0), tmp_path / "rgb.png")


def test_plot_neighbours_errors():
    img = np.zeros((2, 8, 8))
    with pytest.raises(ValueError, match="neighbours for 1"):
        plots.plot_neighbours(img, np.zeros((1, 3, 8, 8)))
    with pytest.raises(ValueError, match="differ"):
        plots.plot_neighbours(img, np.zeros((2, 3, 4, 4)))
    with pytest.raises(ValueError, match="image_shape"):
        plots.plot_neighbours(np.zeros((2, 64)), np.zeros((2, 3, 64)))
    with pytest.raises(ValueError, match="cannot reshape"):
        plots.plot_neighbours(np.zeros((2, 64)), np.zeros((2, 3, 64)), image_shape=(7, 7))
    with pytest.raises(ValueError, match="neighbour_labels"):
        plots.plot_neighbours(img, np.zeros((2, 3, 8, 8)), neighbour_labels=np.zeros((2, 2)))
