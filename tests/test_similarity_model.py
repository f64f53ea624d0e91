"""SimilarityModel: training bar on digits, index/lookup, save/load, calibration, errors."""

from __future__ import annotations

import os

import numpy as np
import pytest

keras = pytest.importorskip("keras")
pytest.importorskip("sklearn")

import simdex  # noqa: E402
from simdex import losses  # noqa: E402
from simdex.samplers import MultiShotMemorySampler  # noqa: E402


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    return train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)


def make_model(seed=0, **kwargs):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((64,))
    hidden = keras.layers.Dense(128, activation="relu")(inputs)
    return simdex.SimilarityModel(inputs, simdex.MetricEmbedding(32)(hidden), **kwargs)


def train(model, loss, xtr, ytr, steps=100, epochs=3):
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss)
    sampler = MultiShotMemorySampler(
        xtr, ytr, classes_per_batch=10, examples_per_class_per_batch=4, steps_per_epoch=steps, seed=0
    )
    return model.fit(sampler, epochs=epochs, verbose=0)


def knn_accuracy(model, xtr, ytr, xte, yte):
    model.reset_index()
    model.index(xtr, ytr, verbose=0)
    found = model.lookup(xte, k=1)
    return float(np.mean([r[0].label == t for r, t in zip(found, yte)]))


@pytest.fixture(scope="module")
def trained(digits):
    xtr, xte, ytr, yte = digits
    model = make_model()
    train(model, losses.MultiSimilarityLoss(), xtr, ytr)
    model.index(xtr, ytr, data=list(range(len(xtr))), verbose=0)
    return model


@pytest.mark.parametrize(
    "loss", [losses.TripletLoss, losses.MultiSimilarityLoss, losses.CircleLoss], ids=lambda c: c.__name__
)
def test_training_reaches_90_percent_knn_accuracy(digits, loss):
    xtr, xte, ytr, yte = digits
    model = make_model()
    before = knn_accuracy(model, xtr, ytr, xte, yte)
    history = train(model, loss(), xtr, ytr)
    assert history.history["loss"][-1] < history.history["loss"][0]
    acc = knn_accuracy(model, xtr, ytr, xte, yte)
    assert acc >= 0.9, (loss.__name__, before, acc)


@pytest.mark.parametrize("loss_cls", [losses.ArcFaceLoss, losses.CosFaceLoss], ids=lambda c: c.__name__)
def test_margin_loss_centres_train_under_fit(digits, loss_cls):
    xtr, xte, ytr, yte = digits
    model = make_model()
    loss = loss_cls(10, 32, seed=0)
    before = loss.centers.get_weights()[0].copy()
    n_model_vars = len(model.trainable_variables)
    train(model, loss, xtr, ytr, steps=60, epochs=2)
    assert len(model.trainable_variables) == n_model_vars + 1
    assert np.abs(loss.centers.get_weights()[0] - before).max() > 1e-3  # the optimiser moved them
    assert knn_accuracy(model, xtr, ytr, xte, yte) >= 0.9
    # the centres are loss state, not model state: saving weights stays compatible
    assert len(model.get_weights()) == n_model_vars


def test_index_and_lookup_records(trained, digits):
    xtr, xte, ytr, yte = digits
    model = trained
    assert model.index_size() == len(xtr)
    found = model.lookup(xte[:7], k=4)
    assert len(found) == 7 and all(len(r) == 4 for r in found)
    emb_q = model.embed(xte[:7])
    emb_db = model.embed(xtr)
    # brute-force oracle on the model's own embeddings
    dist = (
        1.0
        - (emb_q / np.linalg.norm(emb_q, axis=1, keepdims=True))
        @ (emb_db / np.linalg.norm(emb_db, axis=1, keepdims=True)).T
    )
    for qi, row in enumerate(found):
        assert [r.rank for r in row] == [1, 2, 3, 4]
        d = [r.distance for r in row]
        assert d == sorted(d)
        np.testing.assert_allclose(d, np.sort(dist[qi])[:4], atol=1e-5)
        for r in row:
            assert r.label == ytr[r.data]  # data holds the training row
            assert r.id == r.data  # first index() call on a fresh ExactIndex: ids are positions
            np.testing.assert_allclose(r.embedding, emb_db[r.data], atol=1e-6)
            assert r.embedding.shape == (32,)
    single = model.single_lookup(xte[3], k=4)
    assert [(r.id, r.label) for r in single] == [(r.id, r.label) for r in found[3]]
    np.testing.assert_allclose([r.distance for r in single], [r.distance for r in found[3]], atol=1e-6)


def test_index_returns_ids_and_stores_labels_data(digits):
    xtr, _, ytr, _ = digits
    model = make_model(index=simdex.ExactIndex(32))
    ids = model.index(xtr[:5], ytr[:5], data=["a", "b", "c", "d", "e"], verbose=0)
    ids2 = model.index(xtr[5:8], verbose=0)  # no labels, no data
    assert ids.dtype == np.int64 and ids.tolist() == [0, 1, 2, 3, 4] and ids2.tolist() == [5, 6, 7]
    found = model.lookup(xtr[[2, 6]], k=1)
    assert (found[0][0].id, found[0][0].label, found[0][0].data) == (2, ytr[2], "c")
    assert (found[1][0].id, found[1][0].label, found[1][0].data) == (6, None, None)
    assert len(model.lookup(xtr[:1], k=20)[0]) == 8  # fewer items than k
    info = model.index_summary(print_fn=None)
    assert (
        info["size"] == 8 and info["num_labels"] == 5 and info["dim"] == 32 and info["distance"] == "cosine"
    )
    model.reset_index()
    assert model.index_size() == 0
    assert model.lookup(xtr[:2], k=3) == [[], []]


def test_lookup_before_indexing_is_empty(digits):
    model = make_model()
    assert model.index_size() == 0
    assert model.lookup(digits[0][:2], k=2) == [[], []]
    assert model.index_summary(print_fn=None)["size"] == 0


@pytest.mark.parametrize("distance", ["l2", "ip", "sql2"])
def test_other_distances(digits, distance):
    xtr, xte, ytr, _ = digits
    model = make_model(distance=distance)
    model.index(xtr[:50], ytr[:50], verbose=0)
    assert model.search_index.metric == distance
    emb_q, emb_db = model.embed(xte[:3]), model.embed(xtr[:50])
    ref = simdex.knn(emb_q, emb_db, k=3, metric=distance)[0]
    got = [[r.distance for r in row] for row in model.lookup(xte[:3], k=3)]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_lsh_index_option(digits, tmp_path):
    try:
        import simdex.lsh  # noqa: F401
    except ImportError:
        pytest.skip("simdex.LSHIndex is not available in this build")
    xtr, xte, ytr, yte = digits
    model = make_model(index="lsh")
    model.index(xtr, ytr, verbose=0)
    assert type(model.search_index).__name__ == "LSHIndex"
    found = model.lookup(xte[:5], k=3)
    assert len(found) == 5
    model.save(tmp_path / "lsh.simdex")
    loaded = simdex.load_model(tmp_path / "lsh.simdex")
    assert type(loaded.search_index).__name__ == "LSHIndex"
    again = loaded.lookup(xte[:5], k=3)
    assert [[(r.id, r.label) for r in row] for row in again] == [
        [(r.id, r.label) for r in row] for row in found
    ]


def test_save_load_round_trip(trained, digits, tmp_path):
    xtr, xte, ytr, yte = digits
    model = trained
    model.calibrate(xte[:200], yte[:200], thresholds_targets={"precision": 0.9}, verbose=0)
    path = tmp_path / "model.simdex"
    model.save(path)
    loaded = simdex.load_model(path)
    assert isinstance(loaded, simdex.SimilarityModel)
    assert loaded.distance == model.distance and loaded.index_size() == model.index_size()
    for a_row, b_row in zip(model.lookup(xte[:20], k=5), loaded.lookup(xte[:20], k=5)):
        assert [(r.id, r.label, r.data, r.rank) for r in a_row] == [
            (r.id, r.label, r.data, r.rank) for r in b_row
        ]
        np.testing.assert_array_equal([r.distance for r in a_row], [r.distance for r in b_row])
        np.testing.assert_array_equal(
            np.stack([r.embedding for r in a_row]), np.stack([r.embedding for r in b_row])
        )
    np.testing.assert_array_equal(model.embed(xte[:10]), loaded.embed(xte[:10]))
    assert loaded.calibration.cutpoints == model.calibration.cutpoints
    np.testing.assert_array_equal(loaded.match(xte[:50]), model.match(xte[:50]))
    # the loaded model trains again
    train(loaded, losses.TripletLoss(), xtr, ytr, steps=2, epochs=1)


def test_save_load_array_data_and_unindexed_model(digits, tmp_path):
    xtr, xte, ytr, _ = digits
    model = make_model(distance="l2")
    path = tmp_path / "empty.simdex"
    model.save(path)
    loaded = simdex.load_model(path)
    assert loaded.index_size() == 0 and loaded.distance == "l2"
    images = (xtr[:30] * 16).astype(np.uint16).reshape(30, 8, 8)
    model.index(xtr[:30], ytr[:30], data=images, verbose=0)
    model.save(path)
    loaded = simdex.load_model(path)
    r = loaded.lookup(xtr[4:5], k=1)[0][0]
    assert r.data.dtype == np.uint16
    np.testing.assert_array_equal(r.data, images[4])
    assert loaded.search_index.metric == "l2"
    loaded.reset_index()  # an emptied index saves and loads too
    loaded.save(path)
    again = simdex.load_model(path)
    assert again.index_size() == 0 and again.lookup(xtr[:1], k=1) == [[]]
    again.index(xtr[:3], ytr[:3], verbose=0)
    assert again.lookup(xtr[1:2], k=1)[0][0].label == ytr[1]


def test_failed_save_keeps_previous_file(trained, digits, tmp_path):
    xtr, _, ytr, _ = digits
    path = tmp_path / "m.simdex"
    trained.save(path)
    before = path.read_bytes()
    model = make_model()
    model.index(xtr[:3], ytr[:3], data=[object(), object(), object()], verbose=0)
    with pytest.raises(TypeError, match="data"):
        model.save(path)
    assert path.read_bytes() == before
    assert [p for p in os.listdir(tmp_path) if p != "m.simdex"] == []  # no temporary leftovers
    with pytest.raises(FileExistsError):
        trained.save(path, overwrite=False)


def test_corrupt_or_foreign_file(trained, tmp_path):
    path = tmp_path / "m.simdex"
    trained.save(path)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    bad = tmp_path / "bad.simdex"
    bad.write_bytes(bytes(raw))
    with pytest.raises(simdex.CorruptFileError):
        simdex.load_model(bad)
    idx_path = tmp_path / "index.simdex"
    index = simdex.ExactIndex(4)
    index.add(np.ones((1, 4)))
    index.save(idx_path)
    with pytest.raises(simdex.CorruptFileError, match="not a SimilarityModel"):
        simdex.load_model(idx_path)
    with pytest.raises(FileNotFoundError):
        simdex.load_model(tmp_path / "missing.simdex")


def test_config_round_trip():
    model = make_model(distance="l2", index="lsh")
    config = model.get_config()
    assert config["distance"] == "l2" and config["index"] == "lsh"
    clone = simdex.SimilarityModel.from_config(config)
    assert isinstance(clone, simdex.SimilarityModel) and clone.distance == "l2"
    assert clone.get_config()["index"] == "lsh"
    layer = simdex.MetricEmbedding(16, activation="tanh")
    assert simdex.MetricEmbedding.from_config(layer.get_config()).get_config() == layer.get_config()


def test_metric_embedding_outputs_unit_rows():
    layer = simdex.MetricEmbedding(5)
    out = keras.ops.convert_to_numpy(layer(np.random.default_rng(0).normal(size=(4, 3)).astype("float32")))
    assert out.shape == (4, 5)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="units"):
        simdex.MetricEmbedding(0)


def test_bad_inputs(trained, digits):
    xtr, xte, ytr, yte = digits
    model = trained
    with pytest.raises(ValueError, match="shape"):
        model.lookup(xte[:, :10], k=1)
    with pytest.raises(ValueError, match="shape"):
        model.single_lookup(xte[:2], k=1)
    with pytest.raises(ValueError, match="k must be"):
        model.lookup(xte[:2], k=0)
    with pytest.raises(ValueError, match="k must be"):
        model.single_lookup(xte[0], k=-1)
    with pytest.raises(ValueError, match="labels"):
        model.index(xtr[:5], ytr[:4], verbose=0)
    with pytest.raises(ValueError, match="data"):
        model.index(xtr[:5], ytr[:5], data=[1, 2], verbose=0)
    with pytest.raises(TypeError, match="integer"):
        model.index(xtr[:5], ytr[:5] + 0.5, verbose=0)
    with pytest.raises(TypeError):
        model.index(np.array([["a"] * 64]), verbose=0)
    with pytest.raises(ValueError, match="NaN"):
        model.lookup(np.full((1, 64), np.nan, dtype="float32"))
    with pytest.raises(ValueError, match="batch_size"):
        model.lookup(xte[:2], batch_size=0)
    with pytest.raises(ValueError, match="empty"):
        model.lookup(xte[:0])
    with pytest.raises(ValueError, match="index"):
        make_model(index="hnsw")
    with pytest.raises(TypeError, match="index"):
        make_model(index=3)
    with pytest.raises(ValueError, match="metric"):
        make_model(distance="cosine", index=simdex.ExactIndex(32, metric="l2"))
    with pytest.raises(ValueError, match="dim|\\d+-d"):
        m = make_model(index=simdex.ExactIndex(16))
        m.index(xtr[:2], verbose=0)
    assert model.index_size() == len(xtr)  # failed calls added nothing


def test_calibrate_match_and_evaluate(trained, digits):
    from simdex.calibration import calibrate
    from simdex.metrics import evaluate_classification, evaluate_retrieval

    xtr, xte, ytr, yte = digits
    model = trained
    # independent neighbours: brute force over the model's embeddings
    emb_db, emb_q = model.embed(xtr), model.embed(xte)
    D, nn = simdex.knn(emb_q, emb_db, k=5)
    nl = ytr[nn]
    result = model.calibrate(xte, yte, thresholds_targets={"precision": 0.95}, verbose=0)
    expected = calibrate(D, nl, yte, thresholds_targets={"precision": 0.95})
    assert result.cutpoints == expected.cutpoints
    assert model.calibration is result
    pred = model.match(xte)
    exp_pred = np.where(D[:, 0] <= expected.cutpoints["optimal"]["distance"], nl[:, 0], -1)
    np.testing.assert_array_equal(pred, exp_pred)
    np.testing.assert_array_equal(model.match(xte, cutpoint=-1.0), -np.ones(len(xte), dtype=int))
    with pytest.raises(ValueError, match="cutpoint"):
        model.match(xte, cutpoint="0.5 recall")
    got = model.evaluate_retrieval(xte, yte, k=5)
    counts = np.bincount(ytr, minlength=10)
    ref = evaluate_retrieval(yte, nl, k=5, num_relevant=counts[yte])
    assert got == ref
    assert got["recall@1"] >= 0.9
    cls = model.evaluate_classification(xte, yte, k=1)
    ref_cls = evaluate_classification(yte, nl[:, :1], D[:, :1], k=1)
    assert set(cls) == set(ref_cls)
    for key in cls:
        np.testing.assert_allclose(cls[key], ref_cls[key], rtol=1e-6)


def test_calibration_needs_index_and_calibrate_first(digits):
    xtr, xte, ytr, yte = digits
    model = make_model()
    with pytest.raises(ValueError, match="empty"):
        model.calibrate(xte, yte, verbose=0)
    with pytest.raises(ValueError, match="not calibrated"):
        model.match(xte)
    model.index(xtr[:20], ytr[:20], verbose=0)
    with pytest.raises(ValueError, match="labels"):
        model.evaluate_retrieval(xte[:5], yte[:4])


# ----------------------------------------------------------------------------- compiled forward
class _CountCalls(keras.layers.Layer):
    """Identity layer counting how often its Python ``call`` runs.

    Eager calls run it every time; a ``tf.function`` runs it only when it traces.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.calls = 0

    def call(self, x):
        self.calls += 1
        return x


def _counting_model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((64,))
    counter = _CountCalls()
    hidden = keras.layers.Dense(16, activation="tanh")(counter(inputs))
    return simdex.SimilarityModel(inputs, simdex.MetricEmbedding(8)(hidden)), counter


def _eager(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="compiled forward is TensorFlow-only")
def test_compiled_forward_matches_eager_and_traces_once(digits):
    xtr, xte, ytr, _ = digits
    model, counter = _counting_model()
    before = counter.calls
    got = [model.embed(xte[:n], batch_size=bs) for n, bs in ((1, 1), (3, 2), (7, 256), (50, 16))]
    model.index(xtr[:40], ytr[:40], verbose=0)
    model.lookup(xte[:5], k=2, batch_size=4)
    assert counter.calls - before == 1  # one trace for every batch size above
    model.single_lookup(xte[0], k=2)
    model.single_lookup(xte[1], k=2)
    assert counter.calls - before == 2  # single_lookup's one-row function traces once
    for n, emb in zip((1, 3, 7, 50), got):
        assert emb.dtype == np.float32 and emb.shape == (n, 8)
        np.testing.assert_allclose(emb, _eager(model, xte[:n]), atol=1e-6)
    eager_calls = counter.calls
    _eager(model, xte[:2])
    assert counter.calls == eager_calls + 1  # the counter does see eager calls
    # weights are read at call time: new weights need no retrace and show up at once
    model.set_weights([w * 0.5 + 0.1 for w in model.get_weights()])
    traced = counter.calls
    np.testing.assert_allclose(model.embed(xte[:9]), _eager(model, xte[:9]), atol=1e-6)
    assert counter.calls == traced + 1  # only the eager reference call above ran Python
    train(model, losses.TripletLoss(), xtr, ytr, steps=3, epochs=1)
    np.testing.assert_allclose(model.embed(xte[:9]), _eager(model, xte[:9]), atol=1e-6)
    # lookups use the compiled embeddings: distances match an oracle on eager embeddings
    model.reset_index()
    model.index(xtr[:60], ytr[:60], verbose=0)
    ref_d = simdex.knn(_eager(model, xte[:4]), _eager(model, xtr[:60]), k=3)[0]
    got_d = [[r.distance for r in row] for row in model.lookup(xte[:4], k=3)]
    np.testing.assert_allclose(got_d, ref_d, atol=1e-5)
    # ... and so does single_lookup's one-row function, after the training above
    single_d = [[r.distance for r in model.single_lookup(x, k=3)] for x in xte[:4]]
    np.testing.assert_allclose(single_d, ref_d, atol=1e-5)


def test_single_lookup_falls_back_when_xla_cannot_compile(digits, monkeypatch):
    """A model XLA rejects still gets a one-row graph function with the same results."""
    import tensorflow as tf

    from simdex import embeddings

    xtr, xte, ytr, _ = digits
    model, _ = _counting_model(seed=3)
    model.index(xtr[:50], ytr[:50], verbose=0)
    real_function = tf.function

    def no_xla(fn=None, **kwargs):
        if kwargs.get("jit_compile"):
            raise tf.errors.UnimplementedError(None, None, "XLA cannot compile this op")
        return real_function(fn, **kwargs)

    monkeypatch.setattr(tf, "function", no_xla)
    single = model.single_lookup(xte[2], k=3)
    assert embeddings.compiled_single_forward(model)[1] is False
    batch = model.lookup(xte[2:3], k=3)[0]
    assert [r.id for r in single] == [r.id for r in batch]
    np.testing.assert_allclose([r.distance for r in single], [r.distance for r in batch], atol=1e-6)


def test_models_without_float32_input_run_eagerly():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((3,), dtype="int32")
    x = keras.layers.Flatten()(keras.layers.Embedding(10, 4)(inputs))
    model = simdex.SimilarityModel(inputs, simdex.MetricEmbedding(5)(x))
    tokens = np.array([[1, 2, 3], [3, 2, 1], [1, 2, 3], [9, 9, 9]], dtype=np.int32)
    emb = model.embed(tokens, batch_size=3)
    assert not model._uses_compiled_forward()
    np.testing.assert_allclose(emb, _eager(model, tokens), atol=1e-6)
    model.index(tokens[:2], [7, 8], verbose=0)
    assert [r.label for r in model.single_lookup(tokens[2], k=2)] == [7, 8]


def test_lookup_records_are_light_and_immutable(digits):
    import dataclasses

    xtr, _, ytr, _ = digits
    model = make_model()
    labels = ytr[:6].copy()
    labels[2] = -1  # -1 means "no label"
    model.index(xtr[:6], labels, data=[10, 11, 12, 13, 14, 15], verbose=0)
    rows = model.lookup(xtr[[2, 4]], k=9)
    assert [len(r) for r in rows] == [6, 6]  # empty slots (id -1) are skipped
    first = rows[0][0]
    assert (first.rank, first.id, first.label, first.data) == (1, 2, None, 12)
    assert rows[1][0].label == ytr[4] and type(rows[1][0].label) is int
    assert type(first.distance) is float and type(first.id) is int
    assert [r.rank for r in rows[1]] == [1, 2, 3, 4, 5, 6]
    assert sorted(r.id for r in rows[1]) == [0, 1, 2, 3, 4, 5]
    emb = model.embed(xtr[:6])
    for r in rows[1]:
        np.testing.assert_allclose(r.embedding, emb[r.id], atol=1e-6)
        assert r.label == (None if r.id == 2 else ytr[r.id]) and r.data == 10 + r.id
    assert not hasattr(first, "__dict__")  # __slots__: no per-record dict
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.rank = 3
