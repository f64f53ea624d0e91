"""Tests for simdex.embeddings: builders, backbone wrapping, batched embedding."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from simdex import embeddings as E  # noqa: E402


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return E.small_cnn((12, 12, 1), embedding_dim=8, filters=(4, 8))


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).random((37, 12, 12, 1)).astype(np.float32)


@pytest.fixture(scope="module")
def backbone():
    keras.utils.set_random_seed(0)
    # Random weights: nothing is downloaded.
    return keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), alpha=0.35, classes=5)


# -- small_cnn -------------------------------------------------------------------------


def test_small_cnn_shapes_and_unit_norm(model, images):
    out = model(images, training=False).numpy()
    assert out.shape == (37, 8)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    # The output is the L2-normalised "embedding" layer: check against NumPy.
    pre = keras.Model(model.input, model.get_layer("embedding").output)(images).numpy()
    np.testing.assert_allclose(out, _unit_rows(pre), atol=1e-6)


def test_small_cnn_two_dim_input_and_rescale():
    m = E.small_cnn((8, 8), embedding_dim=5, filters=(3,), rescale=1 / 255)
    x = np.random.default_rng(0).integers(0, 256, (4, 8, 8)).astype(np.uint8)
    out = E.embed(m, x)
    assert out.shape == (4, 5) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"input_shape": (8,)},
        {"input_shape": (8, 8, 1, 1)},
        {"input_shape": (8, 8, 1), "embedding_dim": 0},
        {"input_shape": (8, 8, 1), "filters": ()},
        {"input_shape": (8, 8, 1), "filters": (4, 4, 4, 4)},  # pools 8x8 to nothing
        {"input_shape": (8, 8, 1), "dropout": 1.0},
    ],
)
def test_small_cnn_bad_args(kwargs):
    with pytest.raises(ValueError):
        E.small_cnn(**kwargs)


# -- embed ------------------------------------------------------------------------------


def test_embed_matches_direct_call(model, images):
    out = E.embed(model, images, batch_size=16)
    assert out.dtype == np.float32 and out.shape == (37, 8) and out.flags.c_contiguous
    np.testing.assert_allclose(out, model(images, training=False).numpy(), atol=1e-5)


def test_streaming_equals_one_shot(model, images):
    one_shot = E.embed(model, images, batch_size=256)
    from_list = E.embed(model, [images[:10], images[10:11], images[11:]], batch_size=4)
    from_gen = E.embed(model, (images[i : i + 9] for i in range(0, 37, 9)), batch_size=5)
    from_ds = E.embed(model, tf.data.Dataset.from_tensor_slices(images).batch(6), batch_size=256)
    for other in (from_list, from_gen, from_ds):
        assert other.shape == one_shot.shape
        np.testing.assert_allclose(other, one_shot, atol=1e-6)


def test_embed_traces_once(model, images):
    E.embed(model, images, batch_size=5)  # batches of 5 and a last one of 2
    E.embed(model, images, batch_size=37)
    assert E.compiled_forward(model).experimental_get_tracing_count() == 1


def test_embed_adds_missing_channel_and_casts(model, images):
    as_uint8 = (images * 255).astype(np.uint8)
    np.testing.assert_allclose(
        E.embed(model, as_uint8[..., 0]), E.embed(model, as_uint8.astype(np.float32)), atol=1e-6
    )


def test_embed_list_of_single_images(model, images):
    ref = E.embed(model, images[:2])
    np.testing.assert_allclose(E.embed(model, [images[0], images[1]]), ref, atol=1e-6)
    np.testing.assert_allclose(E.embed(model, [images[0, ..., 0], images[1, ..., 0]]), ref, atol=1e-6)


def test_embed_empty(model):
    assert E.embed(model, np.zeros((0, 12, 12, 1))).shape == (0, 8)
    assert E.embed(model, iter([])).shape == (0, 8)


@pytest.mark.parametrize(
    ("x", "exc", "match"),
    [
        (np.zeros((3, 12, 11, 1)), ValueError, "axis 2"),
        (np.zeros((12, 12)), ValueError, "shape"),
        (np.full((2, 12, 12, 1), np.nan), ValueError, "NaN"),
        (np.array([["a"] * 12] * 12), TypeError, "numeric"),
        ("images", TypeError, "array"),
        (42, TypeError, "array"),
    ],
)
def test_embed_bad_inputs(model, x, exc, match):
    with pytest.raises(exc, match=match):
        E.embed(model, x)


def test_embed_bad_batch_size_and_model(model, images):
    with pytest.raises(ValueError, match="batch_size"):
        E.embed(model, images, batch_size=0)
    with pytest.raises(TypeError, match="batch_size"):
        E.embed(model, images, batch_size=2.5)
    with pytest.raises(TypeError, match="keras.Model"):
        E.embed(lambda x: x, images)


# -- from_backbone ----------------------------------------------------------------------


def test_from_backbone_default_takes_classifier_input(backbone):
    emb = E.from_backbone(backbone)
    x = np.random.default_rng(2).random((3, 32, 32, 3)).astype(np.float32)
    features = keras.Model(backbone.input, backbone.layers[-1].input)(x).numpy()
    assert emb.output_shape == (None, features.shape[1])
    np.testing.assert_allclose(E.embed(emb, x), _unit_rows(features), atol=1e-5)
    # Weights are shared, not copied.
    assert emb.get_layer("Conv1") is backbone.get_layer("Conv1")


def test_from_backbone_spatial_layer_is_pooled(backbone):
    emb = E.from_backbone(backbone, layer_name="block_3_project_BN", pooling="avg")
    x = np.random.default_rng(3).random((2, 32, 32, 3)).astype(np.float32)
    spatial = keras.Model(backbone.input, backbone.get_layer("block_3_project_BN").output)(x).numpy()
    assert spatial.ndim == 4
    np.testing.assert_allclose(E.embed(emb, x), _unit_rows(spatial.mean(axis=(1, 2))), atol=1e-5)


def test_from_backbone_projection_and_headless(backbone):
    emb = E.from_backbone(backbone, layer_name="out_relu", embedding_dim=6, pooling="max")
    out = E.embed(emb, np.zeros((2, 32, 32, 3)) + 0.5)
    assert out.shape == (2, 6)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    headless = keras.Model(backbone.input, backbone.get_layer("out_relu").output)
    assert E.from_backbone(headless).output_shape == (None, headless.output_shape[-1])


def test_from_backbone_unknown_layer_lists_names(backbone):
    with pytest.raises(ValueError, match="no layer 'nope'") as info:
        E.from_backbone(backbone, layer_name="nope")
    assert "Conv1" in str(info.value) and "block_3_project_BN" in str(info.value)


def test_from_backbone_bad_inputs(backbone, tmp_path):
    with pytest.raises(TypeError):
        E.from_backbone(b"not a model")
    with pytest.raises(FileNotFoundError):
        E.from_backbone(tmp_path / "missing.keras")
    with pytest.raises(ValueError, match="pooling"):
        E.from_backbone(backbone, pooling="median")
    with pytest.raises(ValueError, match="embedding_dim"):
        E.from_backbone(backbone, embedding_dim=0)

    class Subclassed(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="no graph"):
        E.from_backbone(Subclassed())


# Keras' own saver calls np.array() on TF variables, which NumPy 2 flags; not ours.
@pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)
def test_from_backbone_local_model_file(tmp_path, model, images):
    path = tmp_path / "m.keras"
    model.save(path)
    emb = E.from_backbone(path, layer_name="global_pool")
    pooled = keras.Model(model.input, model.get_layer("global_pool").output)(images).numpy()
    np.testing.assert_allclose(E.embed(emb, images), _unit_rows(pooled), atol=1e-5)


# -- Embedder protocol ------------------------------------------------------------------


def test_embedder_protocol(model, images):
    wrapped = E.as_embedder(model)
    assert isinstance(wrapped, E.KerasEmbedder) and isinstance(wrapped, E.Embedder)
    assert wrapped.dim == 8 and wrapped.input_shape == (12, 12, 1)
    np.testing.assert_allclose(wrapped.embed(images, batch_size=8), E.embed(model, images), atol=1e-6)
    assert E.as_embedder(wrapped) is wrapped

    fn = E.as_embedder(lambda b: b.reshape(len(b), -1)[:, :3])
    np.testing.assert_array_equal(fn.embed(images, batch_size=10), images.reshape(37, -1)[:, :3])
    with pytest.raises(TypeError, match="embedder"):
        E.as_embedder(42)
