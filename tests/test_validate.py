"""simdex._validate: the one implementation of each input check, and who uses it."""

from __future__ import annotations

import numpy as np
import pytest

from simdex import _validate as V


@pytest.mark.parametrize(
    ("value", "low", "high", "exc", "match"),
    [
        (True, 1, None, TypeError, "x must be an integer, got bool"),
        (2.0, 1, None, TypeError, "got float"),
        ("3", 1, None, TypeError, "got str"),
        (0, 1, None, ValueError, "x must be >= 1, got 0"),
        (65, 1, 64, ValueError, r"x must be in \[1, 64\], got 65"),
        (-1, None, 5, None, None),
        (np.int32(7), 1, 64, None, None),
    ],
)
def test_check_int(value, low, high, exc, match):
    if exc is None:
        assert V.check_int(value, "x", low, high) == int(value)
        assert type(V.check_int(value, "x", low, high)) is int
    else:
        with pytest.raises(exc, match=match):
            V.check_int(value, "x", low, high)


def test_optional_ints_and_numbers():
    assert V.check_num_threads(None) == 0 and V.check_num_threads(3) == 3
    with pytest.raises(ValueError, match="num_threads must be >= 1 or None, got 0"):
        V.check_num_threads(0)
    assert V.check_positive_number(0, "margin", allow_zero=True) == 0.0
    with pytest.raises(ValueError, match="> 0 and finite"):
        V.check_positive_number(float("inf"), "scale")


def test_metrics_and_devices():
    assert V.canonical_metric("Euclidean") == "l2"
    assert [V.canonical_metric(m) for m in V.METRICS] == list(V.METRICS)
    with pytest.raises(ValueError, match="unknown distance 'manhattan'"):
        V.canonical_metric("manhattan", "distance")
    with pytest.raises(ValueError, match="unknown device"):
        V.check_device("gpu")


def test_matrices_ids_and_labels():
    out, was_1d = V.as_matrix([1, 2, 3], "q", dim=3)
    assert out.dtype == np.float32 and out.shape == (1, 3) and was_1d
    with pytest.raises(ValueError, match=r"q contains NaN at row 1, column 0"):
        V.as_matrix(np.array([[1.0, 2.0], [np.nan, 0.0]]), "q")
    with pytest.raises(ValueError, match="dimension 2, expected 3"):
        V.check_shape((4, 2), "q", 3)
    with pytest.raises(ValueError, match="ids must be >= 0"):
        V.as_ids([0, -1], 2)
    assert V.as_labels(np.array([[1.0], [2.0]]), column_ok=True).tolist() == [1, 2]
    with pytest.raises(TypeError, match="integer labels"):
        V.as_labels(np.array([0.5]))
    with pytest.raises(ValueError, match="x has 3 examples but y has 2 labels"):
        V.as_labels([1, 2], n=3)
    assert V.MISSING_LABEL == -1


def test_every_layer_uses_the_same_message():
    """The same mistake reads the same from the exact index, LSH, the GPU glue and a metric."""
    import simdex
    from simdex.evaluate import metrics

    messages = set()
    for call in (
        lambda: simdex.ExactIndex(0),
        lambda: simdex.LSHIndex(0),
        lambda: simdex.RandomProjection(0),
    ):
        with pytest.raises(ValueError) as info:
            call()
        messages.add(str(info.value))
    assert messages == {"dim must be >= 1, got 0"}
    with pytest.raises(TypeError, match="k must be an integer, got float"):
        metrics.evaluate_retrieval([1], [[1, 2]], k=1.0)
    with pytest.raises(TypeError, match="k must be an integer, got float"):
        simdex.knn(np.ones((1, 2)), np.ones((3, 2)), k=1.0)
