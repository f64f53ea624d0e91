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


# ----------------------------------------------------------------------------- TF Similarity's set
def test_unknown_keyword_names_our_class():
    x, y = data()
    with pytest.raises(
        TypeError, match=r"MultiShotMemorySampler\(\) got unexpected keyword arguments \['bogus'\]"
    ):
        MultiShotMemorySampler(x, y, classes_per_batch=2, bogus=1)
    from simdex.samplers import SingleShotMemorySampler

    with pytest.raises(TypeError, match="SingleShotMemorySampler"):
        SingleShotMemorySampler(x, examples_per_batch=2, examples_per_class=3)


def test_total_examples_per_class_and_generate_batch():
    x, y = data((6, 6, 6))
    s = MultiShotMemorySampler(x, y, 3, 2, total_examples_per_class=2, steps_per_epoch=5, seed=3)
    assert s.num_examples == 6
    allowed = {0, 1, 6, 7, 12, 13}  # the first two rows of each class
    for i in range(5):
        xb, yb = s.generate_batch(i)
        np.testing.assert_array_equal(xb, s[i][0])
        assert set(xb[:, 0].astype(int).tolist()) <= allowed
    assert s.generate_batch(50)[0].shape == (6, 3)  # any batch id, reproducible
    with pytest.raises(ValueError, match="batch_id"):
        s.generate_batch(-1)
    with pytest.raises(ValueError, match="total_examples_per_class"):
        MultiShotMemorySampler(x, y, 2, total_examples_per_class=0)


def test_warmup_and_tfsim_augmenter(capsys):
    x, y = data()
    seen = []

    def augmenter(xb, yb, examples_per_class, is_warmup):
        seen.append((examples_per_class, is_warmup))
        return xb + 1000.0, yb

    s = MultiShotMemorySampler(x, y, 2, 3, augmenter=augmenter, warmup=1, steps_per_epoch=2, verbose=1)
    assert "2 classes x 3 examples per class" in capsys.readouterr().out
    assert s[0][0].min() >= 1000.0
    s.on_epoch_end()
    s[0]
    assert seen == [(3, True), (3, False)]
    with pytest.raises(TypeError, match="warmup"):
        MultiShotMemorySampler(x, y, 2, warmup=1.5)


def test_single_shot_sampler():
    from simdex.samplers import SingleShotMemorySampler

    x = np.arange(40, dtype=np.float32).reshape(20, 2)
    rng = np.random.default_rng(0)
    s = SingleShotMemorySampler(
        x,
        lambda xb: xb + rng.normal(size=xb.shape),
        examples_per_batch=5,
        num_augmentations_per_example=3,
        steps_per_epoch=4,
    )
    assert len(s) == 4 and s.batch_size == 15
    xb, yb = s[2]
    assert xb.shape == (15, 2) and yb.shape == (15,)
    classes, counts = np.unique(yb, return_counts=True)
    assert classes.size == 5 and np.all(counts == 3)
    for c in classes:  # every view is a noisy copy of its example
        assert np.all(np.abs(xb[yb == c] - x[c]) < 6)
    assert not np.array_equal(xb[:5], xb[5:10])  # views differ
    plain = SingleShotMemorySampler(x, examples_per_batch=4, steps_per_epoch=1)
    xb, yb = plain[0]
    np.testing.assert_array_equal(xb[:4], xb[4:])
    with pytest.raises(ValueError, match="examples_per_batch"):
        SingleShotMemorySampler(x, examples_per_batch=21)


def test_tf_dataset_sampler_from_dataset_and_tfrecords(tmp_path):
    tf = pytest.importorskip("tensorflow")
    from simdex.samplers import TFDatasetMultiShotMemorySampler

    x, y = data((4, 4, 4))
    ds = tf.data.Dataset.from_tensor_slices({"image": x, "label": y})
    s = TFDatasetMultiShotMemorySampler(
        ds, classes_per_batch=2, examples_per_class_per_batch=2, steps_per_epoch=3
    )
    xb, yb = s[0]
    np.testing.assert_array_equal(y[xb[:, 0].astype(int)], yb)
    pairs = tf.data.Dataset.from_tensor_slices((x, y))
    assert TFDatasetMultiShotMemorySampler(pairs, classes_per_batch=3).num_examples == 12

    path = str(tmp_path / "d.tfrecord")
    with tf.io.TFRecordWriter(path) as w:
        for xi, yi in zip(x, y):
            feat = {
                "image": tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[tf.io.serialize_tensor(xi).numpy()])
                ),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(yi)])),
            }
            w.write(tf.train.Example(features=tf.train.Features(feature=feat)).SerializeToString())
    desc = {"image": tf.io.FixedLenFeature([], tf.string), "label": tf.io.FixedLenFeature([], tf.int64)}
    s = TFDatasetMultiShotMemorySampler(
        path, classes_per_batch=2, feature_description=desc, total_examples_per_class=3
    )
    assert s.num_examples == 9
    np.testing.assert_array_equal(s.x, x)
    with pytest.raises(ValueError, match="download"):
        TFDatasetMultiShotMemorySampler("cifar10", classes_per_batch=2)
    with pytest.raises(ValueError, match="download"):
        TFDatasetMultiShotMemorySampler(None, dataset_name="cifar10", classes_per_batch=2)
    with pytest.raises(ValueError, match="feature_description"):
        TFDatasetMultiShotMemorySampler(path, classes_per_batch=2)
