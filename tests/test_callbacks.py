"""simdex.callbacks.EvalCallback: metrics on a held-out split in Keras' logs each epoch."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
pytest.importorskip("tensorflow")

import simdex  # noqa: E402
from simdex import losses, metrics  # noqa: E402
from simdex.callbacks import EvalCallback  # noqa: E402
from simdex.samplers import MultiShotMemorySampler  # noqa: E402


@pytest.fixture(scope="module")
def split():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(5, 10)) * 2
    y = np.repeat(np.arange(5), 30)
    x = (centres[y] + rng.normal(size=(150, 10))).astype("float32")
    return x[::3], y[::3], x[1::3], y[1::3], x[2::3], y[2::3]


def make_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((10,))
    return simdex.SimilarityModel(inputs, simdex.MetricEmbedding(8)(keras.layers.Dense(16, "relu")(inputs)))


def test_eval_callback_logs_into_history(split, tmp_path):
    xtr, ytr, xq, yq, xt, yt = split
    model = make_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=losses.MultiSimilarityLoss())
    try:
        import tensorboard  # noqa: F401

        tb = str(tmp_path / "tb")
    except ImportError:
        tb = None
        with pytest.raises(ImportError, match="pip install tensorboard"):
            EvalCallback(xq, yq, xt, yt, tb_logdir=str(tmp_path / "tb"))
    cb = EvalCallback(xq, yq, xt, yt, retrieval_metrics=["recall@1", "map@r"], tb_logdir=tb)
    sampler = MultiShotMemorySampler(xtr, ytr, 5, 4, steps_per_epoch=10)
    history = model.fit(sampler, epochs=2, verbose=0, callbacks=[cb])
    for key in ("val_recall@1", "val_map@r", "val_f1", "val_binary_accuracy", "val_distance"):
        assert len(history.history[key]) == 2, key
    assert model.index_size() == 0  # the model's own index is untouched
    if tb is not None:
        assert list((tmp_path / "tb").iterdir())  # TensorBoard event file written
    # the logged figures are those of the plain API on the same embeddings
    model.index(xt, yt, verbose=0)
    ret = model.evaluate_retrieval(xq, yq, k=1, metrics=["recall@1"])
    assert history.history["val_recall@1"][-1] == pytest.approx(ret["recall@1"])
    D, ids = model.search_index.search(model.embed(xq), 1)
    cal = simdex.calibrate(D, np.asarray(yt)[ids], yq, extra_metrics=["binary_accuracy"], rounding=None)
    assert history.history["val_f1"][-1] == pytest.approx(cal.cutpoints["optimal"]["f1"])
    assert metrics.classification_metric_info("binary_accuracy")["name"] == "binary_accuracy"


def test_eval_callback_fixed_thresholds(split):
    xtr, ytr, xq, yq, xt, yt = split
    model = make_model()
    model.compile(optimizer="adam", loss=losses.MultiSimilarityLoss())
    one = EvalCallback(xq, yq, xt, yt, retrieval_metrics=[], distance_thresholds=[np.inf], metrics=["f1"])
    two = EvalCallback(xq, yq, xt, yt, retrieval_metrics=[], distance_thresholds=[0.1, 0.5], metrics=["f1"])
    one.set_model(model)
    two.set_model(model)
    logs: dict = {}
    one.on_epoch_end(0, logs)
    two.on_epoch_end(0, logs)
    assert set(logs) == {"val_f1", "val_f1@0.1", "val_f1@0.5"}
    # at an infinite threshold every query is matched: F1 of the nearest-neighbour labels
    model.index(xt, yt, verbose=0)
    out = model.evaluate_classification(xq, yq, thresholds=[np.inf], metrics=["f1"])
    assert logs["val_f1"] == pytest.approx(float(out["f1"][0]))
    with pytest.raises(ValueError, match="distance_thresholds"):
        EvalCallback(xq, yq, xt, yt, distance_thresholds=[])


def test_eval_callback_errors(split):
    xtr, ytr, xq, yq, xt, yt = split
    with pytest.raises(ValueError, match="query_labels"):
        EvalCallback(xq, yq[:-1], xt, yt)
    with pytest.raises(ValueError, match="differ in shape"):
        EvalCallback(xq[:, :5], yq, xt, yt)
    with pytest.raises(ValueError, match="empty"):
        EvalCallback(xq[:0], yq[:0], xt, yt)
