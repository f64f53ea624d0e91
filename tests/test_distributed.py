"""ShardedIndex on a local Ray cluster (2 CPUs, 127.0.0.1) started and stopped by this module.

Checks the bar of the distributed issue: exact sharded search identical to one
ExactIndex (shard counts 1, 2, 3, 7; every metric), LSH recall within 0.01 of one
LSHIndex, routing, remove / replace, save / load onto another shard count, Dataset
bulk loading, and shard actors killed with ``ray.kill`` (restart + reload from the
last save with one replica; uninterrupted service with two).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import warnings

import numpy as np
import pytest

from simdex.index import ExactIndex, LSHIndex

# Keep the test cluster on the loopback interface: with this, Ray binds and advertises
# 127.0.0.1 instead of the machine's address (read when ray is imported).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
ray = pytest.importorskip("ray", reason='needs Ray: pip install "simdex[ray]"')
pytest.importorskip("ray.data", reason='needs Ray Data: pip install "simdex[ray]"')

from simdex.apps.distributed import (  # noqa: E402  (after the skip)
    MANIFEST_NAME,
    ShardedIndex,
    ShardRestoredWarning,
    ShardUnavailableError,
    shard_of,
)

DIM = 16


@pytest.fixture(scope="module")
def cluster():
    """One local Ray cluster for the module, always shut down (and its files removed)."""
    temp = tempfile.mkdtemp(prefix="sdxray-")  # short: Ray's socket paths must fit 107 bytes
    ray.init(
        num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False, _temp_dir=temp
    )
    try:
        address = ray.get_runtime_context().gcs_address
        assert address.startswith("127.0.0.1:"), f"the test cluster must stay on 127.0.0.1, got {address}"
        ray.data.DataContext.get_current().enable_progress_bars = False
        yield ray
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


def _data(n, seed=0, dim=DIM):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, dim)).astype(np.float32)


def _exact(x, ids, metric="cosine"):
    index = ExactIndex(x.shape[1], metric)
    index.add(x, ids)
    return index


@contextlib.contextmanager
def _closing(index):
    try:
        yield index
    finally:
        index.close()


# ------------------------------------------------------------------------------ exactness
# Each shard count runs one metric through Ray (all four are covered); the full cross
# product of shard counts x metrics x kernels is checked without Ray in
# test_distributed_merge.py, on the same routing and merge code.
@pytest.mark.parametrize("num_shards,metric", [(1, "sql2"), (2, "l2"), (3, "ip"), (7, "cosine")])
def test_exact_sharded_search_identical_to_one_index(cluster, num_shards, metric):
    # 30k rows: every shard keeps >= 4096, so single queries take the same kernel on
    # both sides (see test_distributed_merge.py for why that matters).
    x = _data(30_000, seed=num_shards)
    x[17] = x[4]  # an exact tie, broken by the smaller id
    rng = np.random.default_rng(1)
    ids = rng.permutation(np.unique(rng.integers(0, 10**12, 31_000))[:30_000])  # ids far from 0..n
    q = np.concatenate([x[4:5], _data(40, seed=99)])
    single = _exact(x, ids, metric)
    with _closing(ShardedIndex(DIM, metric, num_shards)) as sharded:
        assert sharded.add(x, ids).tolist() == ids.tolist()
        assert len(sharded) == len(single) == 30_000
        for batch, k in ((q, 10), (q[0], 10), (q[:3], 7), (q[:8], 1)):  # BLAS, pre-filter, k=1
            D, I = sharded.search(batch, k)
            D0, I0 = single.search(batch, k)
            assert D.shape == D0.shape and D.dtype == np.float32 and I.dtype == np.int64
            np.testing.assert_array_equal(I, I0)
            np.testing.assert_array_equal(D, D0)


def test_search_pads_like_one_index(cluster):
    x = _data(5)
    with _closing(ShardedIndex(DIM, "l2", 3)) as sharded:
        D, I = sharded.search(x[0], 4)  # empty index: all padding
        assert I.tolist() == [-1] * 4 and np.isinf(D).all()
        sharded.add(x)
        D, I = sharded.search(x[:2], 8)
        D0, I0 = _exact(x, np.arange(5), "l2").search(x[:2], 8)
        np.testing.assert_array_equal(I, I0)
        np.testing.assert_array_equal(D, D0)
        assert (I[:, 5:] == -1).all() and np.isinf(D[:, 5:]).all()
    with pytest.raises(RuntimeError, match="closed"):
        sharded.search(x[0], 1)


# ------------------------------------------------------------------------------ LSH
def test_lsh_sharded_recall_within_001_of_one_index(cluster):
    rng = np.random.default_rng(5)
    centers = rng.normal(size=(200, 32)).astype(np.float32)
    x = (centers[rng.integers(0, 200, 20_000)] + 0.35 * rng.normal(size=(20_000, 32))).astype(np.float32)
    q = (centers[rng.integers(0, 200, 300)] + 0.35 * rng.normal(size=(300, 32))).astype(np.float32)
    params = {"num_tables": 4, "hash_bits": 14, "num_probes": 2, "seed": 3}  # recall ~0.7 here
    _, truth = _exact(x, None).search(q, 10)
    single = LSHIndex(32, **params)
    single.add(x)
    _, found1 = single.search(q, 10)

    def recall(found):
        return np.mean([len(np.intersect1d(f, t)) / 10 for f, t in zip(found, truth)])

    with _closing(ShardedIndex(32, "cosine", 3, index={"kind": "lsh", **params})) as sharded:
        sharded.add(x)
        _, found = sharded.search(q, 10)
        _, more = sharded.search(q, 10, num_probes=16)  # options reach every shard
    r1, rs, rmore = recall(found1), recall(found), recall(more)
    assert 0.5 < r1 < 0.9  # a setting where a worse candidate set would show
    assert rs >= r1 - 0.01, (rs, r1)
    assert rmore > rs


# ------------------------------------------------------------------------------ routing & writes
@pytest.fixture(scope="module")
def three(cluster):
    with _closing(ShardedIndex(DIM, "cosine", 3)) as index:
        yield index


def test_routing_puts_each_id_in_its_shard(three):
    x = _data(900, seed=2)
    ids = three.add(x)
    assert ids.tolist() == list(range(900))
    more = three.add(x[:5])  # auto ids continue: unique over all shards
    assert more.tolist() == list(range(900, 905))
    sizes = three.shard_sizes()
    assert sizes == np.bincount(shard_of(np.arange(905), 3), minlength=3).tolist()
    for s in range(3):  # each shard holds exactly the ids that route to it
        held = ray.get(three.actor(s).export.remote(None))[1]["ids"]
        assert sorted(held.tolist()) == np.flatnonzero(shard_of(np.arange(905), 3) == s).tolist()
    three.remove(np.arange(900, 905))
    assert len(three) == 900


def test_contains_get_vectors_remove_replace(three):
    if len(three) == 0:
        three.add(_data(900, seed=2))
    x = _data(900, seed=2)
    assert three.contains(7) is True and three.contains(10**6) is False
    assert three.contains([3, 10**6, 899]).tolist() == [True, False, True]
    assert 5 in three and 10**6 not in three and "a" not in three
    np.testing.assert_array_equal(three.get_vectors([899, 0, 450]), x[[899, 0, 450]])
    assert three.get_vectors(12).shape == (DIM,)
    with pytest.raises(KeyError):
        three.get_vectors([1, 10**6])

    new = _data(3, seed=9)
    with pytest.raises(ValueError, match="already"):  # rejected everywhere: nothing added
        three.add(new, [10**6, 10**6 + 1, 4])
    assert 10**6 not in three and 10**6 + 1 not in three and len(three) == 900
    three.add(new, [4, 10**6, 10**6 + 1], replace=True)  # replace one, add two
    np.testing.assert_array_equal(three.get_vectors([4, 10**6]), new[:2])
    D, I = three.search(new[0], 1)
    assert I.tolist() == [4]
    three.remove([10**6, 10**6 + 1])
    with pytest.raises(KeyError, match="10000"):  # all or nothing
        three.remove([5, 10**6])
    assert 5 in three and len(three) == 900
    three.add(x[4], [4], replace=True)


def test_bad_input_raises_like_one_index(three):
    with pytest.raises(ValueError, match="dimension"):
        three.add(np.ones((2, DIM + 1)))
    with pytest.raises(ValueError, match="NaN"):
        three.search(np.full(DIM, np.nan), 3)
    with pytest.raises(ValueError, match="k must be"):
        three.search(np.ones(DIM), 0)
    with pytest.raises(ValueError, match="distinct"):
        three.add(np.ones((2, DIM)), [7, 7])
    with pytest.raises(ValueError, match=">= 0"):
        three.add(np.ones((1, DIM)), [-3])
    with pytest.raises(TypeError):
        three.contains([1.5])
    with pytest.raises(ValueError, match="kind"):
        ShardedIndex(DIM, "cosine", 2, index={"num_tables": 4})
    with pytest.raises(ValueError, match="unknown index kind"):
        ShardedIndex(DIM, "cosine", 2, index="hnsw")
    with pytest.raises(ValueError, match="num_shards"):
        ShardedIndex(DIM, "cosine", 0)
    with pytest.raises(ValueError, match="metric"):
        ShardedIndex(DIM, "hamming", 2)


# ------------------------------------------------------------------------------ save / load
def test_save_then_load_onto_other_shard_counts(three, tmp_path):
    if len(three) == 0:
        three.add(_data(900, seed=2))
    q = _data(25, seed=4)
    D0, I0 = three.search(q, 9)
    three.save(tmp_path / "a")
    first = sorted(os.listdir(tmp_path / "a"))
    three.save(tmp_path / "a")  # a second save replaces the first generation's files
    files = sorted(os.listdir(tmp_path / "a"))
    assert len(files) == 4 and MANIFEST_NAME in files and files != first
    manifest = json.loads((tmp_path / "a" / MANIFEST_NAME).read_text())
    assert manifest["num_shards"] == 3 and sum(s["size"] for s in manifest["shards"]) == 900
    n = 2  # fewer shards than saved: each new shard reads every file (as with more)
    with _closing(ShardedIndex.load(tmp_path / "a", num_shards=n)) as loaded:
        assert loaded.num_shards == n and len(loaded) == 900
        assert loaded.shard_sizes() == np.bincount(shard_of(np.arange(900), n), minlength=n).tolist()
        D, I = loaded.search(q, 9)
        np.testing.assert_array_equal(I, I0)
        np.testing.assert_array_equal(D, D0)
        assert loaded.add(q[:1]).tolist() == [manifest["next_id"]]  # id counter carried over


def test_load_errors(cluster, tmp_path):
    with pytest.raises(FileNotFoundError):
        ShardedIndex.load(tmp_path / "nothing")
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(ValueError, match="JSON"):
        ShardedIndex.load(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not a simdex sharded-index manifest"):
        ShardedIndex.load(tmp_path)
    good = {
        "format": "simdex-sharded",
        "format_version": 1,
        "routing": "splitmix64-mod",
        "index": {"kind": "exact", "dim": DIM, "metric": "cosine", "params": {}},
        "num_shards": 1,
        "next_id": 0,
        "shards": [{"file": "shard-00000-of-00001.x.simdex", "size": 0}],
    }
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(good))
    with pytest.raises(FileNotFoundError, match="missing"):
        ShardedIndex.load(tmp_path)


# ------------------------------------------------------------------------------ faults
def _killed_search(index, q, k):
    """A search right after a kill: a clear error naming the shard, or (replicas) an answer."""
    try:
        return index.search(q, k)
    except ShardUnavailableError as e:
        return e


@pytest.mark.parametrize("permanent", [False, True], ids=["ray-restarts", "killed-for-good"])
def test_one_replica_restarts_and_reloads_last_save(cluster, tmp_path, permanent):
    x = _data(2_000, seed=6)
    q = _data(12, seed=7)
    with _closing(ShardedIndex(DIM, "cosine", 2)) as index:
        index.add(x[:1500])
        index.save(tmp_path)
        index.add(x[1500:])  # acknowledged after the save: lost on the restarted shard
        assert len(index) == 2000
        ray.kill(index.actor(1), no_restart=not permanent)
        before = (tmp_path / MANIFEST_NAME).read_text()
        if permanent:  # a save that fails on the dead shard leaves the previous save whole
            with pytest.raises(ShardUnavailableError, match="shard 1 of 2") as info:
                index.save(tmp_path)
            err = info.value
            assert (tmp_path / MANIFEST_NAME).read_text() == before
            assert all((tmp_path / sh["file"]).exists() for sh in json.loads(before)["shards"])
        else:
            err = _killed_search(index, q, 5)
        assert isinstance(err, ShardUnavailableError) and err.shard == 1
        assert "shard 1 of 2" in str(err)
        with pytest.warns(ShardRestoredWarning, match="shard 1 of 2 .* 1 write"):
            index.wait_ready(timeout=60)
        # Shard 1 is back as saved; shard 0 kept everything.
        late = np.arange(1500, 2000)
        kept = np.concatenate([np.arange(1500), late[shard_of(late, 2) == 0]])
        assert len(index) == kept.size
        D, I = index.search(q, 10)
        D0, I0 = _exact(x[kept], kept).search(q, 10)
        np.testing.assert_array_equal(I, I0)
        np.testing.assert_array_equal(D, D0)
        index.add(x[late[shard_of(late, 2) == 1]], late[shard_of(late, 2) == 1])  # writes work again
        assert len(index) == 2000


def test_two_replicas_serve_through_a_kill_and_refill(cluster):
    x = _data(3_000, seed=8)
    q = _data(10, seed=9)
    with _closing(ShardedIndex(DIM, "l2", 2, replicas=2)) as index:
        index.add(x[:2000])  # never saved: only the replicas keep it
        single = _exact(x[:2000], np.arange(2000), "l2")
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no write may be reported lost
            for i in range(12):  # a run of searches and writes with kills in the middle
                if i == 3:
                    ray.kill(index.actor(1, 0), no_restart=False)
                if i == 6:
                    index.add(x[2000:], np.arange(2000, 3000))  # while a replica may be down
                    single.add(x[2000:], np.arange(2000, 3000))
                if i == 8:
                    ray.kill(index.actor(0, 1))  # for good: the index re-creates it
                D, I = index.search(q, 10)
                D0, I0 = single.search(q, 10)
                np.testing.assert_array_equal(I, I0)
                np.testing.assert_array_equal(D, D0)
            index.wait_ready(timeout=60)
            # Every replica holds every acknowledged write.
            for s in range(2):
                held = [ray.get(index.actor(s, r).export.remote(None))[1] for r in range(2)]
                want = np.flatnonzero(shard_of(np.arange(3000), 2) == s)
                for arrays in held:
                    vectors, ids = arrays["vectors"], arrays["ids"]
                    order = np.argsort(ids)
                    assert ids[order].tolist() == want.tolist()
                    np.testing.assert_array_equal(vectors[order], x[want])
            assert len(index) == 3000


# ------------------------------------------------------------------------------ bulk loading
def test_add_dataset_with_progress(cluster):
    x = _data(3_000, seed=10)
    ids = np.arange(3_000, dtype=np.int64) * 3 + 1
    ds = ray.data.from_items([{"vec": x[i], "key": int(ids[i])} for i in range(3_000)])
    seen = []
    with _closing(ShardedIndex(DIM, "cosine", 2)) as index:
        added = index.add_dataset(
            ds,
            column="vec",
            id_column="key",
            batch_size=700,
            progress=lambda done, total: seen.append((done, total)),
        )
        assert added == 3_000 and len(index) == 3_000
        assert seen[-1] == (3_000, 3_000) and len(seen) >= 5
        q = _data(8, seed=11)
        D, I = index.search(q, 5)
        D0, I0 = _exact(x, ids).search(q, 5)
        np.testing.assert_array_equal(I, I0)
        np.testing.assert_array_equal(D, D0)


def _hash_embedder():
    """A stand-in embedding model class: text -> fixed vector, built once per Ray Data worker.

    Made inside a function so that Ray pickles the class by value (workers cannot
    import this test module).
    """

    class HashEmbedder:
        def __init__(self) -> None:
            self.table = np.random.default_rng(0).normal(size=(4, 256, DIM)).astype(np.float32)

        def __call__(self, texts):
            codes = np.array([[ord(c) % 256 for c in t[-4:]] for t in texts])
            return sum(self.table[p, codes[:, p]] for p in range(4))  # one table per position

    return HashEmbedder


def test_add_from_model_over_raw_inputs(cluster):
    texts = [f"doc{i:05d}" for i in range(1_200)]
    items = [{"text": t, "doc_id": 5 * i} for i, t in enumerate(texts)]
    model_cls = _hash_embedder()
    model = model_cls()
    with _closing(ShardedIndex(DIM, "sql2", 2)) as index:
        added = index.add_from_model(
            ray.data.from_items(items), model_cls, input_column="text", id_column="doc_id", batch_size=200
        )
        assert added == 1_200 and len(index) == 1_200
        np.testing.assert_array_equal(index.get_vectors([0, 5 * 1199]), model([texts[0], texts[1199]]))
        # Fresh ids continue after the largest id so far.
        assert index.add(model(texts[:3])).tolist() == [5 * 1199 + 1, 5 * 1199 + 2, 5 * 1199 + 3]
        D, I = index.search(model(texts[:3]), 2)
        assert I[:, 0].tolist() == [0, 5, 10]  # the exact copies, then the fresh copies
        assert I[:, 1].tolist() == [5 * 1199 + 1, 5 * 1199 + 2, 5 * 1199 + 3] and (D[:, 1] == 0).all()
