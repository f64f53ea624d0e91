"""simdex.samplers.MultiShotMemorySampler."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from simdex.samplers import MultiShotMemorySampler  # noqa: E402


def data(n_per_class=(5, 5, 5, 5, 1)):
    y = np.concatenate([np.full(n, c) for c, n in enumerate(n_per_class)])
    x = np.stack([np.full(3, i, dtype=np.float32) for i in range(len(y))])  # row i holds the value i
    return x, y


def test_batches_are_balanced_and_consistent():
    x, y = data()
    s = MultiShotMemorySampler(
        x, y, classes_per_batch=3, examples_per_class_per_batch=4, steps_per_epoch=7, seed=1
    )
    assert len(s) == 7 and s.batch_size == 12
    for i in range(len(s)):
        xb, yb = s[i]
        assert xb.shape == (12, 3) and yb.shape == (12,)
        classes, counts = np.unique(yb, return_counts=True)
        assert len(classes) == 3 and np.all(counts == 4)
        rows = xb[:, 0].astype(int)
        np.testing.assert_array_equal(y[rows], yb)  # each x row comes with its own label
        for c in classes:
            if np.sum(y == c) >= 4:  # enough examples: no repeats within the class
                assert len(set(rows[yb == c])) == 4


def test_small_class_is_sampled_with_replacement():
    x, y = data()
    s = MultiShotMemorySampler(x, y, classes_per_batch=5, examples_per_class_per_batch=3, steps_per_epoch=2)
    xb, yb = s[0]
    rows = xb[yb == 4, 0].astype(int)
    np.testing.assert_array_equal(rows, [20, 20, 20])


def test_deterministic_per_seed_and_epoch():
    x, y = data()
    a = MultiShotMemorySampler(x, y, 2, 2, steps_per_epoch=3, seed=5)
    b = MultiShotMemorySampler(x, y, 2, 2, steps_per_epoch=3, seed=5)
    c = MultiShotMemorySampler(x, y, 2, 2, steps_per_epoch=3, seed=6)
    np.testing.assert_array_equal(a[1][0], b[1][0])
    assert any(not np.array_equal(a[i][0], c[i][0]) for i in range(3))
    first = [a[i][0].copy() for i in range(3)]
    a.on_epoch_end()
    assert any(not np.array_equal(first[i], a[i][0]) for i in range(3))


def test_class_list_and_get_slice():
    x, y = data()
    s = MultiShotMemorySampler(x, y, classes_per_batch=2, class_list=[1, 3], steps_per_epoch=4)
    for i in range(4):
        assert set(s[i][1].tolist()) == {1, 3}
    assert s.num_examples == 10
    xs, ys = s.get_slice(0, 3)
    np.testing.assert_array_equal(ys, [1, 1, 1])
    np.testing.assert_array_equal(xs[:, 0], [5, 6, 7])
    xs, ys = s.get_slice(8, 100)  # cut short at the end
    np.testing.assert_array_equal(xs[:, 0], [18, 19])
    assert len(s.get_slice(0)[1]) == 10
    with pytest.raises(ValueError, match="begin"):
        s.get_slice(10, 1)
    with pytest.raises(ValueError, match="size"):
        s.get_slice(0, 0)


def test_augmenter():
    x, y = data()
    s = MultiShotMemorySampler(x, y, 2, 2, steps_per_epoch=1, augmenter=lambda xb, yb: (xb * 0 - 1, yb))
    assert np.all(s[0][0] == -1)


def test_errors():
    x, y = data()
    with pytest.raises(ValueError, match="not present"):
        MultiShotMemorySampler(x, y, 1, class_list=[0, 9])
    with pytest.raises(ValueError, match="exceeds"):
        MultiShotMemorySampler(x, y, 6)
    with pytest.raises(ValueError, match="same length"):
        MultiShotMemorySampler(x[:-1], y, 2)
    with pytest.raises(ValueError, match=">= 1"):
        MultiShotMemorySampler(x, y, 0)
    with pytest.raises(TypeError, match="integer"):
        MultiShotMemorySampler(x, y + 0.5, 2)
    with pytest.raises(TypeError, match="callable"):
        MultiShotMemorySampler(x, y, 2, augmenter=3)
    s = MultiShotMemorySampler(x, y, 2, steps_per_epoch=2)
    with pytest.raises(IndexError):
        s[2]


def test_fit_accepts_sampler():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 10)
    x = (rng.normal(size=(40, 6)) + y[:, None]).astype("float32")
    from simdex import losses
    from simdex.layers import MetricEmbedding

    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    model = keras.Model(inputs, MetricEmbedding(4)(inputs))
    model.compile(optimizer="adam", loss=losses.TripletLoss())
    s = MultiShotMemorySampler(x, y, classes_per_batch=4, examples_per_class_per_batch=3, steps_per_epoch=3)
    history = model.fit(s, epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2
    assert np.all(np.isfinite(history.history["loss"]))
