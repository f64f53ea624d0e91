# ruff: noqa: E741  (D, I for distances and ids, as in FAISS)
"""LSHIndex sketches, sketch scan, centring and self-configuration: exactness of the
returned distances, agreement with the classic path, thread-count determinism,
removal, persistence, the popcount kernel against NumPy, bad input."""

from __future__ import annotations

import numpy as np
import pytest

import simdex
from simdex._runtime import core


def clustered(
    n: int, d: int, centers: int, seed: int, spread: float = 0.35, offset: float = 0.0
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centers, d)) + offset
    lab = rng.integers(0, centers, size=n)
    return (c[lab] + spread * rng.normal(size=(n, d))).astype(np.float32)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # Off-centre clusters (offset): all vectors in one cone, as word embeddings are.
    base = clustered(8000, 32, 80, seed=1, offset=1.0)
    rng = np.random.default_rng(8)
    queries = base[rng.choice(len(base), 200, replace=False)] + 0.2 * rng.normal(size=(200, 32)).astype(
        np.float32
    )
    exact = simdex.ExactIndex(32)
    exact.add(base)
    _, truth = exact.search(queries, 10)
    return base, queries.astype(np.float32), truth


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


def cosine_dist(q: np.ndarray, x: np.ndarray) -> np.ndarray:
    qn = q / np.linalg.norm(q, axis=-1, keepdims=True)
    xn = x / np.linalg.norm(x, axis=-1, keepdims=True)
    return 1.0 - np.einsum("...d,...d->...", qn, xn)


@pytest.mark.parametrize("words", [1, 2, 3, 4, 5, 8])
def test_hamming_kernel_matches_numpy(words: int) -> None:
    rng = np.random.default_rng(words)
    codes = rng.integers(0, 2**63, size=(1037, words), dtype=np.uint64) * np.uint64(2) + rng.integers(
        0, 2, size=(1037, words), dtype=np.uint64
    )
    q = rng.integers(0, 2**63, size=words, dtype=np.uint64)
    expect = np.unpackbits((codes ^ q).view(np.uint8), axis=1).sum(axis=1)
    np.testing.assert_array_equal(core().lsh_hamming(codes, q), expect)
    rows = rng.integers(0, len(codes), size=300).astype(np.uint32)
    np.testing.assert_array_equal(core().lsh_hamming(codes, q, rows), expect[rows])
    assert core().popcount_kernel() in ("avx512-vpopcntdq", "popcnt", "scalar")


def test_sketch_filter_wide_equals_classic_exact_rerank(data) -> None:
    base, queries, _ = data
    classic = simdex.LSHIndex(32, num_tables=6, hash_bits=9, num_probes=4, seed=3)
    sketched = simdex.LSHIndex(
        32, num_tables=6, hash_bits=9, num_probes=4, seed=3, sketch_bits=128, rerank=10**6
    )
    classic.add(base)
    sketched.add(base)
    D0, I0 = classic.search(queries, 10, refine=0)
    D1, I1 = sketched.search(queries, 10)
    np.testing.assert_array_equal(I0, I1)
    np.testing.assert_array_equal(D0, D1)


@pytest.mark.parametrize("bits", [64, 128, 320, 512])
def test_sketch_filter_distances_exact_and_recall(data, bits: int) -> None:
    base, queries, truth = data
    index = simdex.LSHIndex(32, num_tables=8, hash_bits=10, num_probes=8, sketch_bits=bits, rerank=100)
    index.add(base)
    D, I = index.search(queries, 10)
    assert (I >= 0).all()
    np.testing.assert_allclose(D, cosine_dist(queries[:, None, :], base[I]), atol=2e-6)
    assert (np.diff(D, axis=1) >= 0).all()
    for row in I:
        assert len(set(row.tolist())) == 10
    assert recall(I, truth) > 0.8
    st = index.stats()
    assert st["sketch_bits"] == bits and st["mean_scanned_last_search"] >= st["mean_candidates_last_search"]
    # A wider re-rank never loses recall on average here, and re-ranks more.
    D2, I2 = index.search(queries, 10, rerank=400)
    assert recall(I2, truth) >= recall(I, truth) - 0.01


def test_scan_wide_is_exact(data) -> None:
    base, queries, truth = data
    index = simdex.LSHIndex(32, num_tables=1, hash_bits=4, sketch_bits=256, rerank=len(base), scan=True)
    index.add(base)
    D, I = index.search(queries, 10)
    exact = simdex.ExactIndex(32)
    exact.add(base)
    De, Ie = exact.search(queries, 10)
    np.testing.assert_array_equal(I, Ie)
    np.testing.assert_allclose(D, De, atol=1e-6)
    narrow = index.search(queries, 10, rerank=300)[1]
    assert recall(narrow, truth) > 0.85
    assert index.stats()["mean_scanned_last_search"] == len(base)


@pytest.mark.parametrize(
    "kw",
    [
        {"num_tables": 8, "hash_bits": 10, "num_probes": 8},
        {"num_tables": 8, "hash_bits": 10, "num_probes": 8, "sketch_bits": 64, "rerank": 50},
        {"num_tables": 8, "hash_bits": 10, "num_probes": 8, "sketch_bits": 192, "rerank": 50, "center": True},
        {"num_tables": 1, "hash_bits": 2, "sketch_bits": 128, "rerank": 60, "scan": True},
        {
            "num_tables": 2,
            "hash_bits": 8,
            "sketch_bits": 256,
            "rerank": 60,
            "scan": True,
            "scan_fraction": 0.2,
        },
        {},
    ],
)
def test_results_do_not_depend_on_thread_count(data, kw) -> None:
    base, queries, _ = data
    index = simdex.LSHIndex(32, **kw)
    index.add(base)
    many = np.concatenate([queries] * 3)  # several query blocks per thread
    D1, I1 = index.search(many, 10, num_threads=1)
    for threads in (2, 3, 5):
        D, I = index.search(many, 10, num_threads=threads)
        np.testing.assert_array_equal(I, I1)
        np.testing.assert_array_equal(D, D1)


@pytest.mark.parametrize("scan", [False, True, "partitioned"])
def test_removed_ids_never_come_back_with_sketches(data, scan: bool | str) -> None:
    base, queries, _ = data
    index = simdex.LSHIndex(
        32,
        num_tables=4,
        hash_bits=8,
        num_probes=16,
        sketch_bits=128,
        rerank=200,
        scan=bool(scan),
        scan_fraction=0.3 if scan == "partitioned" else 1.0,
    )
    index.add(base)
    rng = np.random.default_rng(5)
    gone = rng.choice(len(base), 3000, replace=False)
    index.remove(gone)
    probe = np.concatenate([queries, base[gone[:100]]])
    _, I = index.search(probe, 20)
    assert not np.isin(I, gone).any()
    gone2 = np.setdiff1d(np.arange(len(base)), gone)[:2000]  # more than half dead: compaction
    index.remove(gone2)
    _, I = index.search(probe, 20)
    assert not np.isin(I, np.concatenate([gone, gone2])).any()
    keep = np.setdiff1d(np.arange(len(base)), np.concatenate([gone, gone2]))
    D, I = index.search(base[keep[:50]], 1)
    np.testing.assert_array_equal(I[:, 0], keep[:50])  # each finds itself (distance 0)
    # Replacing vectors re-hashes them and their sketches.
    index.add(base[keep[:50]][::-1].copy(), ids=keep[:50], replace=True)
    _, I = index.search(base[keep[:50]][::-1].copy(), 1)
    np.testing.assert_array_equal(I[:, 0], keep[:50])


def test_centring_balances_buckets(data) -> None:
    base, queries, truth = data
    plain = simdex.LSHIndex(32, num_tables=8, hash_bits=10, num_probes=8)
    centred = simdex.LSHIndex(32, num_tables=8, hash_bits=10, num_probes=8, center=True)
    plain.add(base)
    centred.add(base)
    # Off-centre data fills few buckets unless hashed around its mean direction.
    assert np.mean(centred.stats()["nonempty_buckets"]) > 1.5 * np.mean(plain.stats()["nonempty_buckets"])
    _, I = centred.search(queries, 10)
    assert recall(I, truth) > 0.8


def test_self_configured_reaches_target(data) -> None:
    base, queries, truth = data
    index = simdex.LSHIndex(32)
    assert index.auto
    index.add(base)
    D, I = index.search(queries, 10)
    assert recall(I, truth) >= 0.9
    np.testing.assert_allclose(D, cosine_dist(queries[:, None, :], base[I]), atol=2e-6)
    st = index.stats()
    cfg = st["autoconfig"]
    assert cfg["size"] == len(base) and cfg["reached_target"] and cfg["sample_recall"] >= 0.9
    assert cfg["mode"] in ("scan", "buckets") and st["scan"] == (cfg["mode"] == "scan")
    assert st["scan"] == (st["rerank"] > 0 and st["sketch_bits"] > 0)
    assert st["bytes_per_vector"] > 4 * 32 and cfg["seconds"] > 0
    assert {r["mode"] for r in index.autoconfig["tried"]} == {"scan", "buckets"}
    strict = simdex.LSHIndex(32, target_recall=0.98)
    strict.add(base)
    assert recall(strict.search(queries, 10)[1], truth) >= 0.95
    assert strict.stats()["autoconfig"]["sample_recall"] >= 0.98


def test_self_configured_small_and_growing() -> None:
    x = clustered(50, 8, 5, seed=2)
    index = simdex.LSHIndex(8)
    assert index.search(x[:3], 4)[1].shape == (3, 4)  # empty index: no configuration, -1 ids
    index.add(x[:1])
    assert index.search(x[0], 2)[1].tolist() == [0, -1]
    index.add(x[1:])
    D, I = index.search(x, 1)
    np.testing.assert_array_equal(I[:, 0], np.arange(50))
    big = clustered(3000, 8, 30, seed=3)
    index.add(big)  # more than twice the configured size: configured again at the next search
    index.search(big[:5], 3)
    assert index.stats()["autoconfig"]["size"] == 3050


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"num_tables": 6, "hash_bits": 9, "num_probes": 4, "sketch_bits": 128, "rerank": 80, "center": True},
        {
            "num_tables": 2,
            "hash_bits": 7,
            "sketch_bits": 512,
            "rerank": 80,
            "scan": True,
            "scan_fraction": 0.25,
        },
    ],
)
def test_save_load_keeps_configuration_and_results(data, tmp_path, kw) -> None:
    base, queries, _ = data
    index = simdex.LSHIndex(32, **kw)
    index.add(base)
    D, I = index.search(queries, 10)
    index.save(tmp_path / "x.simdex")
    loaded = simdex.load_index(tmp_path / "x.simdex")
    D2, I2 = loaded.search(queries, 10)
    np.testing.assert_array_equal(I, I2)
    np.testing.assert_array_equal(D, D2)
    a, b = index.stats(), loaded.stats()
    for key in (
        "num_tables",
        "hash_bits",
        "num_probes",
        "sketch_bits",
        "rerank",
        "scan",
        "scan_fraction",
        "auto",
    ):
        assert a[key] == b[key], key


def test_bad_sketch_arguments() -> None:
    with pytest.raises(ValueError, match="multiple of 64"):
        simdex.LSHIndex(8, num_tables=2, sketch_bits=100)
    with pytest.raises(ValueError, match="sketch_bits"):
        simdex.LSHIndex(8, num_tables=2, sketch_bits=576)
    with pytest.raises(ValueError, match="sketch_bits >= 64"):
        simdex.LSHIndex(8, num_tables=2, sketch_bits=0, rerank=10)
    with pytest.raises(ValueError, match="rerank"):
        simdex.LSHIndex(8, num_tables=2, scan=True)
    with pytest.raises(ValueError, match="target_recall"):
        simdex.LSHIndex(8, num_tables=2, target_recall=0.9)
    with pytest.raises(ValueError, match="target_recall"):
        simdex.LSHIndex(8, target_recall=1.5)
    index = simdex.LSHIndex(8, num_tables=2, hash_bits=4)
    index.add(np.eye(8, dtype=np.float32))
    with pytest.raises(ValueError, match="sketch"):
        index.search(np.eye(8, dtype=np.float32), 2, rerank=5)
    with pytest.raises(ValueError, match="rerank"):
        simdex.LSHIndex(8, num_tables=2, sketch_bits=64, rerank=-1)
    with pytest.raises(ValueError):
        core().lsh_hamming(np.zeros((3, 9), np.uint64), np.zeros(9, np.uint64))
    with pytest.raises(IndexError):
        core().lsh_hamming(np.zeros((3, 1), np.uint64), np.zeros(1, np.uint64), np.array([3], np.uint32))


# -- partitioned scan (scan_fraction < 1) ---------------------------------------------


def partitioned(**kw) -> simdex.LSHIndex:
    args = {"num_tables": 2, "hash_bits": 8, "sketch_bits": 256, "rerank": 100, "scan": True, "center": True}
    return simdex.LSHIndex(32, **{**args, **kw})


def test_partitioned_scan_distances_exact_and_budget(data) -> None:
    base, queries, truth = data
    index = partitioned(scan_fraction=0.2)
    index.add(base)
    assert index.stats()["scan_fraction"] == 0.2
    recalls, scanned = [], []
    for f in (0.05, 0.2, 0.6):
        D, I = index.search(queries, 10, scan_fraction=f)
        assert (I >= 0).all()
        np.testing.assert_allclose(D, cosine_dist(queries[:, None, :], base[I]), atol=2e-6)
        assert (np.diff(D, axis=1) >= 0).all()
        recalls.append(recall(I, truth))
        scanned.append(index.stats()["mean_scanned_last_search"])
        # Whole buckets are compared until each table has covered its share, so the
        # entries compared are at least the budget and at most the budget plus buckets.
        assert f * len(base) <= scanned[-1] <= f * len(base) + 2 * 2 * len(base) / 2**8 + 400
    assert recalls[0] < recalls[1] <= recalls[2] + 0.01 and recalls[2] >= 0.85
    # Full fraction: the plain scan of every stored sketch.
    full = index.search(queries, 10, scan_fraction=1.0)[1]
    assert index.stats()["mean_scanned_last_search"] == len(base)
    assert recall(full, truth) >= recalls[2] - 0.02


def test_partitioned_scan_finds_recent_adds_and_respects_filters(data) -> None:
    base, queries, _ = data
    index = partitioned(scan_fraction=0.3)
    index.add(base[:7000])
    index.add(base[7000:7300], ids=np.arange(7000, 7300))  # a small batch: kept in the tables' delta
    D, I = index.search(base[7000:7300], 1)
    np.testing.assert_array_equal(I[:, 0], np.arange(7000, 7300))
    np.testing.assert_allclose(D[:, 0], 0.0, atol=1e-6)
    allowed = np.arange(0, 7300, 3)
    _, I = index.search(queries, 10, filter=allowed)
    assert np.isin(I[I >= 0], allowed).all() and (I >= 0).mean() > 0.9
    lims, Dr, Ir = index.range_search(queries[:20], 0.05)
    assert lims.shape == (21,) and (Dr <= 0.05).all()
    for i in range(20):
        got = Ir[lims[i] : lims[i + 1]]
        np.testing.assert_allclose(Dr[lims[i] : lims[i + 1]], cosine_dist(queries[i], base[got]), atol=2e-6)


def test_partitioned_scan_memory_is_reported(data) -> None:
    base, _, _ = data
    plain = partitioned(scan_fraction=1.0)
    part = partitioned(scan_fraction=0.5)
    plain.add(base)
    part.add(base)
    extra = part.stats()["memory_bytes"] - plain.stats()["memory_bytes"]
    # Each of the 2 tables keeps the 256-bit sketch of each of its entries, and the
    # slot-order copy of the plain scan is not kept (a full scan reads table 0's).
    assert 32 * len(base) <= extra <= 32 * len(base) + 64 * 1024
    q = base[:50] + 0.01
    np.testing.assert_array_equal(
        part.search(q, 5, scan_fraction=1.0)[1], plain.search(q, 5)[1]
    )  # the same full scan either way


def test_self_configured_large_collection_tries_partitioned_scan() -> None:
    base = clustered(60_000, 16, 400, seed=11, offset=0.5)
    rng = np.random.default_rng(12)
    queries = (base[rng.choice(len(base), 200, replace=False)] + 0.3 * rng.normal(size=(200, 16))).astype(
        np.float32
    )
    exact = simdex.ExactIndex(16)
    exact.add(base)
    _, truth = exact.search(queries, 10)
    index = simdex.LSHIndex(16)
    index.add(base)
    D, I = index.search(queries, 10)
    assert recall(I, truth) >= 0.9
    np.testing.assert_allclose(D, cosine_dist(queries[:, None, :], base[I]), atol=2e-6)
    cfg = index.stats()["autoconfig"]
    assert "pscan" in {r["mode"] for r in index.autoconfig["tried"]}
    assert cfg["reached_target"] and 0.0 < cfg["scan_fraction"] <= 1.0
    if cfg["mode"] == "pscan":
        assert index.scan and index.scan_fraction < 1.0 and index.num_tables == 3


def test_bad_scan_fraction() -> None:
    with pytest.raises(ValueError, match="scan_fraction"):
        partitioned(scan_fraction=0.0)
    with pytest.raises(ValueError, match="scan_fraction"):
        partitioned(scan_fraction=1.5)
    with pytest.raises(TypeError, match="scan_fraction"):
        partitioned(scan_fraction="half")
    with pytest.raises(ValueError, match="scan=True"):
        simdex.LSHIndex(8, num_tables=2, sketch_bits=64, rerank=10, scan_fraction=0.5)
    with pytest.raises(ValueError, match="hash_bits <= 16"):
        partitioned(hash_bits=20, scan_fraction=0.5)
    x = np.random.default_rng(0).normal(size=(300, 32)).astype(np.float32)
    full = partitioned(scan_fraction=1.0)
    full.add(x)
    with pytest.raises(ValueError, match="per-table sketches"):
        full.search(x[:3], 2, scan_fraction=0.5)
    part = partitioned(scan_fraction=0.5)
    part.add(x)
    with pytest.raises(ValueError, match="scan_fraction"):
        part.search(x[:3], 2, scan_fraction=-1)
    with pytest.raises(ValueError, match="scan_fraction"):
        part.search(x[:3], 2, scan_fraction=float("nan"))
