"""The spellings "euclidean", "sqeuclidean", "inner_product" work everywhere (issue 14)."""

from __future__ import annotations

import numpy as np
import pytest

import simdex

SPELLINGS = {"euclidean": "l2", "sqeuclidean": "sql2", "inner_product": "ip", "cosine": "cosine"}


@pytest.mark.parametrize("spelling", sorted(SPELLINGS))
def test_index_and_knn(spelling):
    x = np.random.default_rng(0).standard_normal((20, 5)).astype(np.float32)
    canonical = SPELLINGS[spelling]
    assert simdex.ExactIndex(5, metric=spelling).metric == canonical
    assert simdex.LSHIndex(5, metric=spelling).metric == canonical
    D1, I1 = simdex.knn(x[:3], x, k=4, metric=spelling)
    D2, I2 = simdex.knn(x[:3], x, k=4, metric=canonical)
    np.testing.assert_array_equal(I1, I2)
    np.testing.assert_array_equal(D1, D2)


@pytest.mark.parametrize("spelling", sorted(SPELLINGS))
def test_losses_and_model(spelling):
    pytest.importorskip("keras")
    import keras

    from simdex import losses
    from simdex.models import SimilarityModel

    canonical = SPELLINGS[spelling]
    assert losses.TripletLoss(distance=spelling).distance == canonical
    assert losses.MultiSimilarityLoss(distance=spelling).distance == canonical
    e = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    np.testing.assert_allclose(
        np.asarray(losses.pairwise_distances(e, spelling)),
        np.asarray(losses.pairwise_distances(e, canonical)),
    )
    inputs = keras.Input((4,))
    model = SimilarityModel(inputs, keras.layers.Dense(3)(inputs), distance=spelling)
    assert model.distance == canonical
