"""TF Similarity / PyTorch Metric Learning spellings: keywords, aliases, .keras saving, angles."""

from __future__ import annotations

import math
import zipfile

import numpy as np
import pytest

keras = pytest.importorskip("keras")
pytest.importorskip("tensorflow")

import simdex  # noqa: E402
from simdex import losses  # noqa: E402
from simdex.metrics import PrecisionAtK, RecallAtK  # noqa: E402


# ----------------------------------------------------------------------------- losses
def test_arcface_margin_in_degrees_is_refused():
    with pytest.raises(ValueError, match="degrees") as e:
        losses.ArcFaceLoss(num_classes=3, embedding_dim=4, margin=28.6)
    assert "radians" in str(e.value) and "0.4992" in str(e.value)
    with pytest.raises(ValueError, match="pi"):
        losses.ArcFaceLoss(3, 4, margin=math.pi + 0.01)
    with pytest.raises(ValueError, match="radians"):
        losses.ArcFaceLoss(3, 4, margin=-0.1)
    assert losses.ArcFaceLoss(3, 4, margin=math.radians(28.6)).margin == pytest.approx(0.49916, abs=1e-5)
    assert losses.ArcFaceLoss(3, 4, margin=math.pi).margin == pytest.approx(math.pi)


def test_embedding_size_alias():
    loss = losses.ArcFaceLoss(num_classes=3, embedding_size=8)
    assert loss.embedding_dim == 8
    assert losses.CosFaceLoss(3, embedding_size=5).embedding_dim == 5
    with pytest.raises(TypeError, match="embedding_dim"):
        losses.ArcFaceLoss(num_classes=3)
    with pytest.raises(TypeError, match="both"):
        losses.ArcFaceLoss(3, 4, embedding_size=5)


def test_tfsim_and_pml_keywords():
    t = losses.TripletLoss(
        distance="euclidean", positive_mining_strategy="easy", negative_mining_strategy="hard"
    )
    assert (t.distance, t.positive_mining, t.negative_mining) == ("l2", "easy", "hard")
    assert losses.TripletLoss(distance="sqeuclidean").distance == "sql2"
    assert losses.TripletLoss(distance="inner_product").distance == "ip"
    with pytest.raises(TypeError, match="both"):
        losses.TripletLoss(positive_mining="easy", positive_mining_strategy="hard")
    with pytest.raises(ValueError, match="unknown distance"):
        losses.TripletLoss(distance="manhattan")
    assert losses.CircleLoss(m=0.4).margin == 0.4
    assert losses.MultiSimilarityLoss(base=0.6).lmda == pytest.approx(0.4)  # cosine: 1 - base
    assert losses.MultiSimilarityLoss(distance="l2", base=0.6).lmda == pytest.approx(0.6)
    assert losses.MultiSimilarityLoss(distance="ip", base=0.6).lmda == pytest.approx(-0.6)
    with pytest.raises(TypeError, match="lmda"):
        losses.MultiSimilarityLoss(lmda=0.3, base=0.6)


def test_multisimilarity_base_matches_lmda_values():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 5)).astype("float32")
    y = np.repeat(np.arange(4), 3)
    a = losses.MultiSimilarityLoss(base=0.3)(y, x)
    b = losses.MultiSimilarityLoss(lmda=0.7)(y, x)
    assert float(a) == pytest.approx(float(b), rel=1e-6)


# ----------------------------------------------------------------------------- model
@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 8)) * 3
    y = np.repeat(np.arange(4), 20)
    x = (centres[y] + rng.normal(size=(80, 8))).astype("float32")
    return x, y


def small_model(**kwargs):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8,))
    outputs = simdex.MetricEmbedding(6)(keras.layers.Dense(16, activation="relu")(inputs))
    return simdex.SimilarityModel(inputs, outputs, **kwargs)


@pytest.fixture(scope="module")
def indexed(data):
    x, y = data
    model = small_model()
    model.compile(optimizer="adam", loss=losses.MultiSimilarityLoss(), distance="cosine")
    model.index(x[::2], y[::2], data=list(range(40)), verbose=0)
    return model


def test_compile_distance(data):
    model = small_model()
    model.compile(optimizer="adam", loss=losses.TripletLoss(distance="euclidean"), distance="euclidean")
    assert model.distance == "l2"
    x, y = data
    model.index(x, y, verbose=0)
    assert model.search_index.metric == "l2"
    with pytest.raises(ValueError, match="reset_index"):
        model.compile(optimizer="adam", loss="mse", distance="cosine")
    with pytest.raises(ValueError, match="unknown metric"):
        small_model().compile(optimizer="adam", loss="mse", distance="hamming")


def test_lookup_verbose_and_index_single(indexed, data, capsys):
    x, _ = data
    found = indexed.lookup(x[:3], k=2, verbose=1)
    assert "looked up 3 queries" in capsys.readouterr().out
    assert [len(r) for r in found] == [2, 2, 2]
    model = small_model()
    i = model.index_single(x[0], 7, data="first")
    j = model.index_single(x[1])
    assert (i, j) != (None, None) and model.index_size() == 2
    rec = model.lookup(x[:1], k=1)[0][0]
    assert (rec.id, rec.label, rec.data) == (i, 7, "first")


def test_evaluate_retrieval_names(indexed, data):
    x, y = data
    out = indexed.evaluate_retrieval(
        x[1::2], y[1::2], retrieval_metrics=[RecallAtK(k=1), PrecisionAtK(k=3), "map@r"]
    )
    assert list(out) == ["recall@1", "precision@3", "map@r"]
    assert 0.0 <= out["recall@1"] <= 1.0
    direct = indexed.evaluate_retrieval(x[1::2], y[1::2], k=3, metrics=["recall@1", "precision@3"])
    assert direct["recall@1"] == out["recall@1"] and direct["precision@3"] == out["precision@3"]
    none = indexed.evaluate_retrieval(
        x[1::2], y[1::2], retrieval_metrics=[RecallAtK(k=1)], distance_threshold=-1.0
    )
    assert none["recall@1"] == 0.0  # every neighbour is beyond the threshold
    with pytest.raises(TypeError, match="not both"):
        indexed.evaluate_retrieval(x, y, metrics=["recall@1"], retrieval_metrics=["recall@1"])


def test_evaluate_classification_extra_metrics(indexed, data):
    x, y = data
    out = indexed.evaluate_classification(x[1::2], y[1::2], extra_metrics=["precision", "recall"])
    assert list(out) == ["distance", "f1", "precision", "recall"]


def test_save_index_load_index_and_data_frame(indexed, data, tmp_path):
    x, _ = data
    path = tmp_path / "index.simdex"
    indexed.save_index(path)
    other = small_model()
    other.load_index(path)
    assert other.index_size() == indexed.index_size() == 40
    a, b = indexed.lookup(x[:4], k=3), other.lookup(x[:4], k=3)
    assert [[(r.id, r.label, r.data) for r in row] for row in a] == [
        [(r.id, r.label, r.data) for r in row] for row in b
    ]
    # TF Similarity's flow: save the model, load the network with Keras, then load_index(path)
    for name in ("m.simdex", "m.keras"):
        third = small_model()
        third.load_index(_write_model(indexed, tmp_path / name))
        assert third.index_size() == 40
    indexed.save(tmp_path / "bare.keras", save_index=False, compression=True)
    assert simdex.load_model(tmp_path / "bare.keras").index_size() == 0  # saved without the index
    with pytest.raises(simdex.CorruptFileError):
        other.load_index(path.with_suffix(".json").write_text("{}") and path.with_suffix(".json"))
    pd = pytest.importorskip("pandas")
    df = indexed.to_data_frame()
    assert isinstance(df, pd.DataFrame) and len(df) == 40
    assert list(df.columns) == ["label", "data", "embedding"] and df["embedding"].iloc[0].shape == (6,)
    assert len(indexed.to_data_frame(num_items=5)) == 5


def _write_model(model, path):
    model.save(path)
    return path


def test_save_keras_archive(indexed, data, tmp_path):
    x, _ = data
    path = tmp_path / "m.keras"
    indexed.calibrate(x[1::2], data[1][1::2], verbose=0)
    indexed.save(path)
    assert zipfile.is_zipfile(path)
    plain = keras.models.load_model(path, compile=False)  # Keras itself reads the archive
    assert isinstance(plain, simdex.SimilarityModel)
    np.testing.assert_allclose(plain.predict(x[:5], verbose=0), indexed.predict(x[:5], verbose=0), atol=1e-6)
    full = simdex.load_model(path)
    assert full.index_size() == 40 and full.calibration is not None
    a, b = indexed.lookup(x[:4], k=3), full.lookup(x[:4], k=3)
    assert [[(r.id, r.data) for r in row] for row in a] == [[(r.id, r.data) for r in row] for row in b]
    np.testing.assert_array_equal(indexed.match(x[:10]), full.match(x[:10]))
    with pytest.raises(ValueError, match="HDF5"):
        indexed.save(tmp_path / "m.h5")
    # A failed save keeps the previous file.
    before = path.read_bytes()
    bad = small_model()
    bad.index(x[:2], data=[object(), object()], verbose=0)
    with pytest.raises(TypeError):
        bad.save(path)
    assert path.read_bytes() == before


def test_load_model_rejects_plain_keras_archive(tmp_path):
    inputs = keras.Input((3,))
    plain = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    path = tmp_path / "plain.keras"
    plain.save(path)
    with pytest.raises(simdex.CorruptFileError, match="not a SimilarityModel"):
        simdex.load_model(path)


def test_generalized_mean_pooling():
    from simdex.layers import GeneralizedMeanPooling1D, GeneralizedMeanPooling2D

    rng = np.random.default_rng(0)
    x = rng.random((2, 4, 5, 3)).astype("float32")
    got = np.asarray(GeneralizedMeanPooling2D(p=3.0)(x))
    np.testing.assert_allclose(got, np.mean(x**3, axis=(1, 2)) ** (1 / 3), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(GeneralizedMeanPooling2D(p=1.0)(x)), x.mean(axis=(1, 2)), rtol=1e-5)
    assert GeneralizedMeanPooling2D(keepdims=True)(x).shape == (2, 1, 1, 3)
    seq = x[:, 0]
    np.testing.assert_allclose(
        np.asarray(GeneralizedMeanPooling1D(p=2.0)(seq)), np.sqrt(np.mean(seq**2, axis=1)), rtol=1e-5
    )
    with pytest.raises(ValueError, match="p must be"):
        GeneralizedMeanPooling2D(p=0)
