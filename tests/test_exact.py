"""Exact kNN (simdex.knn, ExactIndex) against a float64 NumPy oracle, bad input, save/load."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

import simdex
from conftest import METRICS, oracle_distances
from simdex.index.io import CorruptFileError


def check_exact(D, I, q, x, k, metric, rtol=2e-5):
    """Distances equal the oracle's k smallest; ids point at vectors with those distances."""
    full = oracle_distances(q, x, metric)
    kk = min(k, x.shape[0])
    ref = np.sort(full, axis=1)[:, :kk]
    scale = np.abs(full).max() + 1.0
    tol = rtol * scale
    assert D.shape == I.shape == (q.shape[0], k)
    assert D.dtype == np.float32 and I.dtype == np.int64
    np.testing.assert_allclose(D[:, :kk], ref, atol=tol)
    # ids are valid, distinct per row, and their true distances match the reported ones
    assert (I[:, :kk] >= 0).all() and (I[:, :kk] < x.shape[0]).all()
    for row in I[:, :kk]:
        assert len(set(row.tolist())) == kk
    np.testing.assert_allclose(np.take_along_axis(full, I[:, :kk], 1), D[:, :kk], atol=tol)
    assert (np.diff(D[:, :kk], axis=1) >= 0).all()
    if k > kk:
        assert (I[:, kk:] == -1).all() and np.isinf(D[:, kk:]).all()


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize(
    ("nq", "nb", "d", "k"),
    [
        (1, 1, 1, 1),
        (3, 7, 5, 3),
        (17, 300, 33, 10),
        (200, 5000, 64, 10),
        (5, 20000, 16, 100),
        (130, 2100, 8, 7),
    ],
)
def test_knn_matches_oracle(metric, nq, nb, d, k):
    rng = np.random.default_rng(nq * 1000 + nb + d)
    x = rng.normal(size=(nb, d)).astype(np.float32)
    q = rng.normal(size=(nq, d)).astype(np.float32)
    D, I = simdex.knn(q, x, k=k, metric=metric)
    check_exact(D, I, q, x, k, metric)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32])
@pytest.mark.parametrize("order", ["C", "F"])
def test_dtypes_and_memory_order(dtype, order):
    rng = np.random.default_rng(1)
    x = np.asarray(rng.normal(size=(500, 24)) * 10, dtype=dtype, order=order)
    q = np.asarray(rng.normal(size=(40, 24)) * 10, dtype=dtype, order=order)
    D, I = simdex.knn(q, x, k=5)
    check_exact(D, I, q, x, 5, "cosine")
    # a non-contiguous view works too
    D2, I2 = simdex.knn(q[::2], x, k=5)
    np.testing.assert_array_equal(I2, I[::2])


def test_single_query_1d_returns_1d():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(100, 8)).astype(np.float32)
    D, I = simdex.knn(x[3], x, k=4)
    assert D.shape == I.shape == (4,)
    assert I[0] == 3 and abs(D[0]) < 1e-6


def test_k_larger_than_base_pads():
    x = np.eye(3, dtype=np.float32)
    D, I = simdex.knn(x, x, k=5)
    assert I.shape == (3, 5)
    assert (I[:, 3:] == -1).all() and np.isinf(D[:, 3:]).all()
    assert (I[:, 0] == [0, 1, 2]).all()


def test_zero_vectors_under_cosine_have_distance_one():
    x = np.array([[0, 0, 0], [1, 0, 0], [0, 2, 0]], dtype=np.float32)
    D, I = simdex.knn(np.zeros(3, np.float32), x, k=3)
    np.testing.assert_array_equal(D, [1, 1, 1])
    np.testing.assert_array_equal(I, [0, 1, 2])  # ties broken by the smaller id
    D, I = simdex.knn(x[1], x, k=3)
    assert I[0] == 1 and D[0] == 0
    assert not np.isnan(D).any()


def test_ties_broken_by_smaller_id_for_any_thread_count():
    rng = np.random.default_rng(3)
    base = rng.normal(size=(50, 16)).astype(np.float32)
    x = np.repeat(base, 40, axis=0)  # every vector 40 times: lots of exact ties
    q = rng.normal(size=(33, 16)).astype(np.float32)
    results = [simdex.knn(q, x, k=25, num_threads=t) for t in (1, 2, 3)]
    for D, I in results[1:]:
        np.testing.assert_array_equal(I, results[0][1])
        np.testing.assert_array_equal(D, results[0][0])
    D, I = results[0]
    for r in range(I.shape[0]):  # within equal distances, ids ascend
        for a in range(24):
            if D[r, a] == D[r, a + 1]:
                assert I[r, a] < I[r, a + 1]


# --------------------------------------------------------------------------- ExactIndex
@pytest.mark.parametrize("metric", METRICS)
def test_index_search_matches_oracle_with_custom_ids(metric):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(3000, 20)).astype(np.float32)
    q = rng.normal(size=(50, 20)).astype(np.float32)
    ids = rng.permutation(np.unique(rng.integers(0, 2**62, 3100)))[:3000].astype(np.int64)
    index = simdex.ExactIndex(20, metric=metric)
    assert index.add(x, ids=ids).tolist() == ids.tolist()
    assert len(index) == 3000 and index.dim == 20 and index.metric == metric
    D, I = index.search(q, k=10)
    rows = {int(v): r for r, v in enumerate(ids)}
    check_exact(D, np.vectorize(rows.get)(I).astype(np.int64), q, x, 10, metric)


def test_auto_ids_and_remove():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(100, 8)).astype(np.float32)
    index = simdex.ExactIndex(8)
    a = index.add(x[:60])
    b = index.add(x[60:])
    assert a.tolist() == list(range(60)) and b.tolist() == list(range(60, 100))
    index.remove([3, 50, 99])
    assert len(index) == 97 and 3 not in index and 4 in index
    D, I = index.search(x, k=97)
    assert not np.isin(I, [3, 50, 99]).any()
    # a removed id is never reused by auto-assignment
    assert index.add(x[:1]).tolist() == [100]
    # result equals a fresh index holding the same vectors
    keep = np.setdiff1d(np.arange(100), [3, 50, 99])
    fresh = simdex.ExactIndex(8)
    fresh.add(np.vstack([x[keep], x[:1]]), ids=np.append(keep, 100))
    D2, I2 = fresh.search(x, k=10)
    D1, I1 = index.search(x, k=10)
    np.testing.assert_array_equal(I1, I2)
    np.testing.assert_allclose(D1, D2, atol=1e-6)


def test_remove_unknown_id_raises_keyerror_and_removes_nothing():
    index = simdex.ExactIndex(4)
    index.add(np.eye(4))
    with pytest.raises(KeyError, match="7"):
        index.remove([1, 7])
    assert len(index) == 4 and 1 in index


def test_duplicate_ids_and_replace():
    index = simdex.ExactIndex(3, metric="l2")
    index.add(np.eye(3), ids=[10, 11, 12])
    with pytest.raises(ValueError, match="already in the index"):
        index.add(np.ones((1, 3)), ids=[11])
    with pytest.raises(ValueError, match="more than once"):
        index.add(np.ones((2, 3)), ids=[20, 20])
    assert len(index) == 3
    index.add(np.full((1, 3), 5.0), ids=[11], replace=True)
    assert len(index) == 3
    np.testing.assert_array_equal(index.get_vectors(11), [5, 5, 5])
    D, I = index.search([5, 5, 5], k=1)
    assert I[0] == 11 and D[0] == 0


def test_get_vectors_returns_what_was_added():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(10, 5))
    index = simdex.ExactIndex(5)  # cosine: vectors are stored as given, not normalised
    ids = index.add(x)
    np.testing.assert_allclose(index.get_vectors(ids), x.astype(np.float32))
    with pytest.raises(KeyError):
        index.get_vectors([42])


def test_empty_index_search_pads():
    index = simdex.ExactIndex(4)
    D, I = index.search(np.ones(4), k=3)
    assert (I == -1).all() and np.isinf(D).all()


def test_reset():
    index = simdex.ExactIndex(4)
    index.add(np.eye(4))
    index.reset()
    assert len(index) == 0
    assert index.add(np.eye(4)[:1]).tolist() == [4]


# --------------------------------------------------------------------------- bad input
BAD_INPUTS = [
    (np.ones((2, 5), np.float32), ValueError, "dimension 5, expected 4"),
    (np.ones((0, 4), np.float32), ValueError, "empty"),
    (np.ones((2, 2, 4), np.float32), ValueError, "2-D"),
    (np.array([[np.nan, 0, 0, 0]], np.float32), ValueError, "NaN"),
    (np.array([[np.inf, 0, 0, 0]]), ValueError, "infinity"),
    (np.array([[1e300, 0, 0, 0]]), ValueError, "float32 range"),
    (np.array([["a", "b", "c", "d"]]), TypeError, "real numbers"),
    (np.ones((1, 4), complex), TypeError, "real numbers"),
    (np.ones((1, 4), bool), TypeError, "real numbers"),
    (np.array([[object(), 1, 2, 3]], dtype=object), TypeError, "real numbers"),
]


@pytest.mark.parametrize(("bad", "exc", "msg"), BAD_INPUTS)
def test_bad_vectors(bad, exc, msg):
    index = simdex.ExactIndex(4)
    index.add(np.eye(4))
    with pytest.raises(exc, match=msg):
        index.add(bad)
    with pytest.raises(exc, match=msg):
        index.search(bad, k=1)
    if "expected 4" not in msg:  # knn has no fixed dim: there the base is the odd one out
        with pytest.raises(exc, match=msg):
            simdex.knn(bad, np.eye(4), k=1)
    assert len(index) == 4


@pytest.mark.parametrize(
    ("k", "exc"), [(0, ValueError), (-3, ValueError), (1.5, TypeError), (True, TypeError), ("3", TypeError)]
)
def test_bad_k(k, exc):
    index = simdex.ExactIndex(4)
    index.add(np.eye(4))
    with pytest.raises(exc, match="k must"):
        index.search(np.eye(4), k=k)
    with pytest.raises(exc, match="k must"):
        simdex.knn(np.eye(4), np.eye(4), k=k)


def test_bad_constructor_and_ids():
    with pytest.raises(ValueError, match="unknown metric"):
        simdex.ExactIndex(4, metric="hamming")
    with pytest.raises(ValueError, match="dim must be >= 1"):
        simdex.ExactIndex(0)
    with pytest.raises(TypeError, match="dim must be an integer"):
        simdex.ExactIndex(4.0)
    with pytest.raises(ValueError, match="unknown device"):
        simdex.ExactIndex(4, device="tpu")
    index = simdex.ExactIndex(4)
    with pytest.raises(ValueError, match=">= 0"):
        index.add(np.eye(4), ids=[0, 1, -2, 3])
    with pytest.raises(ValueError, match="4 vectors but 3 ids"):
        index.add(np.eye(4), ids=[0, 1, 2])
    with pytest.raises(TypeError, match="integers"):
        index.add(np.eye(4), ids=[0.5, 1, 2, 3])
    with pytest.raises(ValueError, match="base has dimension 3, expected 4"):
        simdex.knn(np.eye(4), np.eye(3), k=1)
    assert len(index) == 0


# --------------------------------------------------------------------------- save / load
@pytest.mark.parametrize("metric", METRICS)
def test_save_load_round_trip(tmp_path, metric):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(500, 12))
    index = simdex.ExactIndex(12, metric=metric)
    index.add(x, ids=np.arange(500) * 3)
    index.remove([0, 3])
    path = tmp_path / "idx.simdex"
    index.save(path)
    loaded = simdex.load_index(path)
    assert isinstance(loaded, simdex.ExactIndex)
    assert (loaded.dim, loaded.metric, len(loaded)) == (12, metric, 498)
    q = rng.normal(size=(20, 12))
    for a, b in zip(index.search(q, k=7), loaded.search(q, k=7)):
        np.testing.assert_array_equal(a, b)
    assert loaded.add(x[:1]).tolist() == [index.add(x[:1])[0]]  # id counter survives


def test_save_is_atomic_and_failed_save_keeps_old_file(tmp_path, monkeypatch):
    index = simdex.ExactIndex(4)
    index.add(np.eye(4))
    path = tmp_path / "idx.simdex"
    index.save(path)
    before = path.read_bytes()
    index.add(np.ones((1, 4)))

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="No space left"):
        index.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["idx.simdex"]  # no temp file left behind
    assert len(simdex.load_index(path)) == 4


def test_save_into_missing_directory_raises(tmp_path):
    index = simdex.ExactIndex(4)
    with pytest.raises(FileNotFoundError):
        index.save(tmp_path / "nope" / "idx.simdex")


def test_corrupt_truncated_and_foreign_files(tmp_path):
    index = simdex.ExactIndex(8)
    index.add(np.random.default_rng(8).normal(size=(100, 8)))
    path = tmp_path / "idx.simdex"
    index.save(path)
    data = path.read_bytes()

    cases = {
        "truncated": data[: len(data) // 2],
        "flipped": data[:200] + bytes([data[200] ^ 0xFF]) + data[201:],
        "foreign": b"PK\x03\x04 this is a zip file, not an index" * 10,
        "empty": b"",
        "tail_cut": data[:-1],
    }
    for name, blob in cases.items():
        p = tmp_path / f"{name}.simdex"
        p.write_bytes(blob)
        with pytest.raises(CorruptFileError):
            simdex.load_index(p)
    with pytest.raises(FileNotFoundError):
        simdex.load_index(tmp_path / "missing.simdex")
    assert issubclass(CorruptFileError, ValueError)


def test_newer_format_version_is_refused(tmp_path):
    import hashlib
    import struct

    index = simdex.ExactIndex(2)
    path = tmp_path / "idx.simdex"
    index.save(path)
    body = bytearray(path.read_bytes()[:-32])
    struct.pack_into("<I", body, 8, 99)
    path.write_bytes(bytes(body) + hashlib.sha256(body).digest())
    with pytest.raises(CorruptFileError, match="version 99"):
        simdex.load_index(path)


# --------------------------------------------------------------------------- concurrency
def test_concurrent_searches_equal_serial():
    rng = np.random.default_rng(9)
    x = rng.normal(size=(20000, 32)).astype(np.float32)
    index = simdex.ExactIndex(32)
    index.add(x)
    queries = [rng.normal(size=(64, 32)).astype(np.float32) for _ in range(8)]
    serial = [index.search(q, k=10) for q in queries]
    results: list = [None] * len(queries)
    errors: list = []

    def work(i):
        try:
            results[i] = index.search(queries[i], k=10)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(queries))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for (D1, I1), (D2, I2) in zip(serial, results):
        np.testing.assert_array_equal(I1, I2)
        np.testing.assert_array_equal(D1, D2)


def test_concurrent_add_and_search_is_safe():
    rng = np.random.default_rng(10)
    index = simdex.ExactIndex(16)
    index.add(rng.normal(size=(1000, 16)))
    stop = threading.Event()
    errors: list = []

    def searcher():
        q = rng.normal(size=(8, 16))
        while not stop.is_set():
            try:
                D, I = index.search(q, k=5)
                assert (I >= 0).all()
            except Exception as e:  # pragma: no cover - reported below
                errors.append(e)
                return

    t = threading.Thread(target=searcher)
    t.start()
    for _ in range(50):
        index.add(rng.normal(size=(100, 16)))
    stop.set()
    t.join()
    assert not errors and len(index) == 6000


def test_threads_setting_round_trip():
    old = simdex.get_num_threads()
    try:
        simdex.set_num_threads(1)
        assert simdex.get_num_threads() == 1
    finally:
        simdex.set_num_threads(0)
    assert simdex.get_num_threads() == old


def test_build_info():
    info = simdex.build_info()
    assert "OpenBLAS" in info["blas"]
    assert info["simd"] in ("avx512", "avx2", "scalar")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_search_works_in_a_forked_child():
    """The native worker pool does not exist in a forked child; it must start a new one
    there instead of waiting on the parent's workers (a hang)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20_000, 32)).astype(np.float32)
    index = simdex.ExactIndex(32)
    index.add(x)
    expected = index.search(x[:3], 5, num_threads=2)  # starts the pool in the parent
    pid = os.fork()
    if pid == 0:  # child: exit code 0 only if the search finishes with the same result
        code = 1
        try:
            import signal

            signal.alarm(60)  # a hang ends the child instead of the test run
            D, ids = index.search(x[:3], 5, num_threads=2)
            code = 0 if np.array_equal(ids, expected[1]) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    np.testing.assert_array_equal(index.search(x[:3], 5, num_threads=2)[1], expected[1])
