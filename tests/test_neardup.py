"""Tests for simdex.neardup.NearDuplicateFinder on synthetic images with planted duplicates."""

from __future__ import annotations

import os

import numpy as np
import pytest

import simdex
from simdex import CorruptFileError
from simdex.neardup import Matches, NearDuplicateFinder, _similarity

SHAPE = (8, 8, 1)


class ProjectionEmbedder:
    """A NumPy embedder: fixed random projection of the centred pixels, L2-normalised."""

    input_shape = SHAPE
    dim = 16

    def __init__(self) -> None:
        self.w = np.random.default_rng(42).normal(size=(64, self.dim)).astype(np.float32)
        self.calls = 0

    def embed(self, x, batch_size=256):
        x = np.asarray(x, dtype=np.float32)
        if x.ndim == 3:
            x = x[..., None]
        if x.shape[1:] != SHAPE:
            raise ValueError(f"bad shape {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError("NaN in images")
        self.calls += 1
        v = (x.reshape(len(x), -1) - 0.5) @ self.w
        return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture()
def data():
    """150 random images + planted duplicates: 3 pairs and one triple."""
    rng = np.random.default_rng(0)
    base = rng.random((150, *SHAPE)).astype(np.float32)
    extra = [base[3], base[40], base[77], base[100], base[100]]
    dups = np.stack(extra) + rng.normal(0, 0.01, size=(5, *SHAPE)).astype(np.float32)
    images = np.concatenate([base, dups])
    planted = [[3, 150], [40, 151], [77, 152], [100, 153, 154]]
    return images, planted


def exact_finder(**kwargs):
    return NearDuplicateFinder(ProjectionEmbedder(), index=simdex.ExactIndex(16, metric="cosine"), **kwargs)


def test_add_query_matches_numpy(data):
    images, _ = data
    finder = exact_finder(batch_size=32)
    labels = [f"img{i}" for i in range(len(images))]
    ids = finder.add(images, labels=labels, verbose=0)
    np.testing.assert_array_equal(ids, np.arange(len(images)))
    assert len(finder) == len(images)

    emb = ProjectionEmbedder().embed(images)
    queries = images[[5, 60]]
    res = finder.query(queries, k=4)
    assert isinstance(res, Matches)
    assert res.ids.shape == res.labels.shape == res.similarities.shape == (2, 4)
    ref_sims = emb[[5, 60]] @ emb.T
    ref_top = -np.sort(-ref_sims, axis=1)[:, :4]
    np.testing.assert_allclose(res.similarities, ref_top, atol=1e-5)
    assert res.ids[:, 0].tolist() == [5, 60]
    assert res.labels[1, 0] == "img60"
    assert res.labels[0].tolist() == [labels[i] for i in res.ids[0]]


def test_single_image_query(data):
    images, _ = data
    finder = exact_finder()
    finder.add(images, verbose=0)
    for one in (images[7], images[7, ..., 0]):  # with and without the channel axis
        ids, labels, sims = finder.query(one, k=3)
        assert ids.shape == labels.shape == sims.shape == (3,)
        assert ids[0] == 7 and sims[0] == pytest.approx(1.0, abs=1e-5)
        assert labels.tolist() == [None, None, None]


def test_find_duplicates_exact(data):
    images, planted = data
    finder = exact_finder()
    finder.add(images, verbose=0)
    assert finder.find_duplicates(threshold=0.99, k=5) == [[100, 153, 154], [3, 150], [40, 151], [77, 152]]
    # A threshold of -1 links everything through the k-NN graph.
    assert finder.find_duplicates(threshold=-1.0, k=3) == [list(range(len(images)))]


def test_find_duplicates_chains_beyond_k():
    # Six images on a line in pixel space; with k=2 each sees its two nearest,
    # and the union-find joins the whole chain (a group larger than k + 1).
    rng = np.random.default_rng(1)
    img = rng.random(SHAPE).astype(np.float32)
    step = rng.normal(size=SHAPE).astype(np.float32) * 0.01
    chain = [img + i * step for i in range(6)]
    images = np.stack(chain + [rng.random(SHAPE).astype(np.float32) for _ in range(20)])
    finder = exact_finder()
    finder.add(images, ids=np.arange(100, 126), verbose=0)
    assert finder.find_duplicates(threshold=0.99, k=2) == [[100, 101, 102, 103, 104, 105]]


def test_default_index_and_lsh_finds_planted(data):
    images, planted = data
    finder = NearDuplicateFinder(ProjectionEmbedder())
    assert finder.index is None
    finder.add(images, verbose=0)
    try:
        expected_cls = simdex.LSHIndex
    except (ImportError, AttributeError):
        expected_cls = simdex.ExactIndex
    assert isinstance(finder.index, expected_cls)
    groups = finder.find_duplicates(threshold=0.99, k=10)
    assert sorted(groups) == sorted(planted)


def test_add_in_batches_and_iterables(data):
    images, _ = data
    emb = ProjectionEmbedder()
    finder = NearDuplicateFinder(emb, index=simdex.ExactIndex(16), batch_size=40)
    finder.add(images, verbose=1)  # with a tqdm bar
    assert emb.calls == 4  # 155 images in batches of 40
    other = exact_finder()
    other.add([images[:100], images[100:]], labels=list(range(155)), verbose=0)
    np.testing.assert_array_equal(other.index.ids, finder.index.ids)
    np.testing.assert_allclose(
        other.index.get_vectors(other.index.ids), finder.index.get_vectors(finder.index.ids)
    )
    assert other.labels_of([0, 154]).tolist() == [0, 154]


def test_keras_embedder_end_to_end(data):
    keras = pytest.importorskip("keras")
    from simdex import embeddings

    keras.utils.set_random_seed(0)
    model = embeddings.small_cnn(SHAPE, embedding_dim=8, filters=(4,))
    images, _ = data
    finder = NearDuplicateFinder(model, index=simdex.ExactIndex(8), batch_size=64)
    finder.add(images[:50], verbose=0)
    ref = embeddings.embed(model, images[:50])
    res = finder.query(images[10:12], k=2)
    np.testing.assert_allclose(res.similarities, -np.sort(-(ref[10:12] @ ref.T), axis=1)[:, :2], atol=1e-5)


def test_k_larger_than_collection(data):
    images, _ = data
    finder = exact_finder()
    finder.add(images[:3], labels=["a", "b", "c"], verbose=0)
    ids, labels, sims = finder.query(images[0], k=5)
    assert ids[3:].tolist() == [-1, -1] and labels[3:].tolist() == [None, None]
    assert np.isneginf(sims[3:]).all() and np.isfinite(sims[:3]).all()


def test_empty_finder():
    finder = exact_finder()
    assert finder.find_duplicates() == []
    assert finder.add(np.zeros((0, *SHAPE)), verbose=0).shape == (0,)
    ids, _, sims = finder.query(np.zeros(SHAPE) + 0.3, k=2)
    assert ids.tolist() == [-1, -1] and np.isneginf(sims).all()


def test_bad_inputs_leave_collection_unchanged(data):
    images, _ = data
    finder = exact_finder()
    finder.add(images[:10], labels=list("abcdefghij"), verbose=0)
    bad_calls = [
        (ValueError, lambda: finder.add(images[10:13], labels=["x"], verbose=0)),
        (ValueError, lambda: finder.add(images[10:13], ids=[1, 2], verbose=0)),
        (ValueError, lambda: finder.add(images[10:12], ids=[0, 99], verbose=0)),  # id 0 exists
        (ValueError, lambda: finder.add(np.full((2, *SHAPE), np.nan), verbose=0)),
        (ValueError, lambda: finder.add(np.zeros((2, 8, 7, 1)), verbose=0)),
        (TypeError, lambda: finder.add("images", verbose=0)),
        (TypeError, lambda: finder.add(images[10:12], labels="ab", verbose=0)),
        (ValueError, lambda: finder.query(images[0], k=0)),
        (TypeError, lambda: finder.query(images[0], k=2.0)),
        (ValueError, lambda: finder.find_duplicates(threshold=1.5)),
        (ValueError, lambda: finder.find_duplicates(threshold=float("nan"))),
        (TypeError, lambda: finder.find_duplicates(threshold="high")),
        (ValueError, lambda: finder.find_duplicates(k=0)),
        (KeyError, lambda: finder.labels_of([3, 12345])),
    ]
    for exc, call in bad_calls:
        with pytest.raises(exc):
            call()
    assert len(finder) == 10
    assert finder.labels_of(np.arange(10)).tolist() == list("abcdefghij")


def test_constructor_checks():
    with pytest.raises(TypeError, match="embedder"):
        NearDuplicateFinder(42)
    with pytest.raises(TypeError, match="Index contract"):
        NearDuplicateFinder(ProjectionEmbedder(), index=object())
    with pytest.raises(ValueError, match="dim"):
        NearDuplicateFinder(ProjectionEmbedder(), index=simdex.ExactIndex(5))
    with pytest.raises(ValueError, match="batch_size"):
        NearDuplicateFinder(ProjectionEmbedder(), batch_size=0)


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2", "sql2"])
def test_similarity_conversion_for_each_metric(metric, data):
    images, _ = data
    a = NearDuplicateFinder(ProjectionEmbedder(), index=simdex.ExactIndex(16, metric=metric))
    a.add(images[:30], verbose=0)
    emb = ProjectionEmbedder().embed(images[:30])
    sims = a.query(images[:4], k=3).similarities
    np.testing.assert_allclose(sims, -np.sort(-(emb[:4] @ emb.T), axis=1)[:, :3], atol=1e-4)
    assert _similarity(np.array([np.inf]), metric)[0] == -np.inf


def test_save_load_roundtrip(data, tmp_path):
    images, planted = data
    finder = exact_finder(batch_size=50)
    finder.add(
        images, labels=[int(i) % 7 for i in range(len(images))], ids=np.arange(len(images)) * 2, verbose=0
    )
    path = tmp_path / "finder.simdex"
    finder.save(path)
    loaded = NearDuplicateFinder.load(path, ProjectionEmbedder())
    assert len(loaded) == len(finder) and loaded.batch_size == 50
    a, b = finder.query(images[:5], k=4), loaded.query(images[:5], k=4)
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_allclose(a.similarities, b.similarities)
    expected = sorted(([2 * i for i in g] for g in planted), key=lambda g: (-len(g), g[0]))
    assert loaded.find_duplicates(0.99) == finder.find_duplicates(0.99) == expected
    with pytest.raises(ValueError, match="embedder"):
        NearDuplicateFinder.load(path)  # no ONNX graph stored


def test_save_failures_and_corrupt_files(data, tmp_path):
    images, _ = data
    path = tmp_path / "finder.simdex"
    with pytest.raises(ValueError, match="nothing to save"):
        NearDuplicateFinder(ProjectionEmbedder()).save(path)
    finder = exact_finder()
    finder.add(images[:5], labels=list("abcde"), verbose=0)
    finder.save(path)
    good = path.read_bytes()
    finder.add(images[5:6], labels=[object()], verbose=0)
    with pytest.raises(TypeError, match="labels"):
        finder.save(path)
    assert path.read_bytes() == good
    assert sorted(os.listdir(tmp_path)) == ["finder.simdex"]

    broken = tmp_path / "broken.simdex"
    broken.write_bytes(good[:-10])
    with pytest.raises(CorruptFileError):
        NearDuplicateFinder.load(broken, ProjectionEmbedder())
    index_file = tmp_path / "index.simdex"
    finder.index.save(index_file)
    with pytest.raises(CorruptFileError, match="not a saved NearDuplicateFinder"):
        NearDuplicateFinder.load(index_file, ProjectionEmbedder())
    with pytest.raises(FileNotFoundError):
        NearDuplicateFinder.load(tmp_path / "missing", ProjectionEmbedder())


def test_onnx_embedder_is_saved_with_the_finder(data, tmp_path):
    keras = pytest.importorskip("keras")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("tf2onnx")
    from simdex import embeddings

    keras.utils.set_random_seed(0)
    model = embeddings.small_cnn(SHAPE, embedding_dim=8, filters=(4,))
    simdex.export_onnx(model, tmp_path / "m.onnx")
    images, _ = data
    finder = NearDuplicateFinder(simdex.OnnxEmbedder(tmp_path / "m.onnx"))
    finder.add(images[:40], verbose=0)
    finder.save(tmp_path / "f.simdex")
    loaded = NearDuplicateFinder.load(tmp_path / "f.simdex")  # embedder comes from the file
    assert isinstance(loaded.embedder, simdex.OnnxEmbedder)
    a, b = finder.query(images[:3], k=3), loaded.query(images[:3], k=3)
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_allclose(a.similarities, b.similarities, atol=1e-6)
