"""GPU path against the CPU path and NumPy oracles (needs a CUDA device).

Skipped in two steps: "built without CUDA" (no simdex._cuda) and "no device
present". Run on a GPU machine with ``bench/gpu/run.sh`` or ``pytest -m gpu``.
"""

from __future__ import annotations

import numpy as np
import pytest

import simdex
from conftest import METRICS, oracle_knn, random_vectors
from simdex import gpu
from simdex.index.gpu import availability

_cuda, _ = availability.cuda_module()  # simdex._cuda, or the CPU emulator when SIMDEX_CUDA_EMULATOR is set

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(_cuda is None, reason="simdex built without CUDA (no simdex._cuda)"),
    pytest.mark.skipif(_cuda is not None and _cuda.device_count() == 0, reason="no CUDA device present"),
]

_data = random_vectors
_reference = oracle_knn


def _check_against_reference(D, ids, q, x, k, metric, tol=1e-4):
    ref_d, ref_i, full = _reference(q, x, k, metric)
    kk = min(k, x.shape[0])
    assert D.shape == ids.shape == (q.shape[0], k)
    scale = max(1.0, float(np.abs(ref_d).max()))
    np.testing.assert_allclose(D[:, :kk], ref_d[:, :kk], atol=tol * scale, rtol=1e-4)
    # Ids: each returned id's true distance must equal the returned distance, and where
    # the k-th and (k+1)-th true distances are well apart the id sets must agree.
    np.testing.assert_allclose(
        np.take_along_axis(full, ids[:, :kk], 1), D[:, :kk], atol=tol * scale, rtol=1e-4
    )
    srt = np.sort(full, axis=1)
    for r in range(q.shape[0]):
        if kk < x.shape[0] and srt[r, kk] - srt[r, kk - 1] > 10 * tol * scale:
            assert set(ids[r, :kk].tolist()) == set(ref_i[r, :kk].tolist())
    assert (np.diff(D[:, :kk], axis=1) >= 0).all()


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("k", [1, 10, 100])
def test_knn_matches_oracle(metric, k):
    q, x = _data(70, 33, 1), _data(1500, 33, 2)
    D, ids = gpu.knn(q, x, k=k, metric=metric)
    assert D.dtype == np.float32 and ids.dtype == np.int64
    _check_against_reference(D, ids, q, x, k, metric)


@pytest.mark.parametrize("metric", METRICS)
def test_many_tiles_and_large_k(metric):
    # Small blocks force many GEMM tiles, many top-k merges and a buffer overflow path.
    q, x = _data(300, 64, 3), _data(5000, 64, 4)
    D, ids = gpu.knn(q, x, k=300, metric=metric, query_block=128, base_block=256)
    _check_against_reference(D, ids, q, x, 300, metric)
    D2, ids2 = gpu.knn(q, x, k=300, metric=metric)  # one tile: same answer
    np.testing.assert_allclose(D, D2, atol=1e-5)
    assert (ids == ids2).mean() > 0.999


def test_same_ids_as_cpu_without_ties():
    q, x = _data(100, 48, 5), _data(3000, 48, 6)
    for metric in METRICS:
        Dg, Ig = gpu.knn(q, x, k=10, metric=metric)
        Dc, Ic = simdex.knn(q, x, k=10, metric=metric)
        np.testing.assert_allclose(Dg, Dc, atol=1e-4, rtol=1e-4)
        assert (Ig == Ic).mean() > 0.999  # random data: exact ties are vanishingly rare


def test_ties_broken_by_smaller_id_like_cpu():
    base = _data(50, 16, 7)
    x = np.repeat(base, 4, axis=0)  # every vector 4 times: ids 4i..4i+3 tie exactly
    q = _data(20, 16, 8)
    for metric in METRICS:
        Dg, Ig = gpu.knn(q, x, k=12, metric=metric)
        Dc, Ic = simdex.knn(q, x, k=12, metric=metric)
        np.testing.assert_array_equal(Ig, Ic)
        np.testing.assert_allclose(Dg, Dc, atol=1e-4)


def test_k_larger_than_base_and_edge_shapes():
    q, x = _data(3, 5, 9), _data(4, 5, 10)
    D, ids = gpu.knn(q, x, k=7, metric="l2")
    assert (ids[:, 4:] == -1).all() and np.isinf(D[:, 4:]).all()
    _check_against_reference(D[:, :4].copy(), ids[:, :4].copy(), q, x, 4, "l2")
    D1, I1 = gpu.knn(q[0], x, k=2)  # 1-D query -> 1-D results
    assert D1.shape == I1.shape == (2,)
    # float64, Fortran order and non-multiple-of-4 dimension all go through.
    qf = np.asfortranarray(q.astype(np.float64))
    D2, I2 = gpu.knn(qf, x, k=2)
    np.testing.assert_array_equal(I2, gpu.knn(q, x, k=2)[1])


def test_zero_vectors_under_cosine():
    x = np.vstack([np.zeros((1, 8)), _data(5, 8, 11)]).astype(np.float32)
    D, ids = gpu.knn(np.zeros((1, 8), np.float32), x, k=6, metric="cosine")
    np.testing.assert_allclose(D, 1.0, atol=1e-6)
    np.testing.assert_array_equal(ids[0], np.arange(6))


def test_bad_input():
    x = _data(10, 4, 12)
    with pytest.raises(ValueError, match="dimension"):
        gpu.knn(x, _data(10, 5, 13), k=1)
    with pytest.raises(ValueError, match="NaN"):
        bad = x.copy()
        bad[3, 1] = np.nan
        gpu.knn(bad, x, k=1)
    with pytest.raises(ValueError, match="larger than the GPU top-k"):
        gpu.knn(x, x, k=gpu.MAX_K + 1)
    with pytest.raises(TypeError):
        gpu.knn(x.astype(str), x, k=1)


# ---------------------------------------------------------------- index on the GPU
def test_exact_index_cuda_matches_cpu(tmp_path):
    x, q = _data(800, 24, 14), _data(40, 24, 15)
    for metric in METRICS:
        g = simdex.ExactIndex(24, metric=metric, device="cuda")
        c = simdex.ExactIndex(24, metric=metric)
        for idx in (g, c):
            idx.add(x, ids=np.arange(1000, 1800))
            idx.remove([1000, 1500, 1799, 1001])
            idx.add(x[:5] * 2, ids=[1010, 1011, 1012, 1013, 1014], replace=True)
        assert len(g) == len(c) == 796
        assert set(g.ids.tolist()) == set(c.ids.tolist())
        np.testing.assert_array_equal(g.get_vectors([1010, 1200]), c.get_vectors([1010, 1200]))
        np.testing.assert_array_equal(g.contains([1000, 1002]), [False, True])
        Dg, Ig = g.search(q, k=15)
        Dc, Ic = c.search(q, k=15)
        np.testing.assert_allclose(Dg, Dc, atol=1e-4, rtol=1e-4)
        assert (Ig == Ic).mean() > 0.99
        with pytest.raises(KeyError):
            g.remove([1000])
        with pytest.raises(KeyError):
            g.get_vectors([1000])
        with pytest.raises(ValueError, match="already in the index"):
            g.add(x[:1], ids=[1200])
        # Saved on the GPU, loaded on the CPU, and back.
        g.save(tmp_path / "g.simdex")
        c2 = simdex.load_index(tmp_path / "g.simdex")
        g2 = simdex.load_index(tmp_path / "g.simdex", device="cuda")
        for other in (c2, g2):
            D2, I2 = other.search(q, k=15)
            np.testing.assert_allclose(D2, Dg, atol=1e-4)
        g.reset()
        assert len(g) == 0
        D0, I0 = g.search(q, k=3)
        assert (I0 == -1).all()


def _clustered(n, d, seed, centres=30):
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centres, d))
    return (c[rng.integers(0, centres, n)] + 0.3 * rng.normal(size=(n, d))).astype(np.float32)


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_lsh_index_cuda_matches_cpu_on_own_buckets(metric):
    # With one probe both devices re-rank exactly the union of the query's own buckets
    # under the same hyperplanes, so the answers agree (codes could differ only on
    # projections within float32 rounding of zero).
    x, q = _clustered(3000, 24, 40), _clustered(200, 24, 41)
    ids = np.random.default_rng(42).permutation(10**6)[:3000]
    kw = dict(num_tables=8, hash_bits=8, num_probes=1, refine=0, metric=metric)
    g, c = simdex.LSHIndex(24, device="cuda", **kw), simdex.LSHIndex(24, **kw)
    for idx in (g, c):
        idx.add(x, ids=ids)
    Dg, Ig = g.search(q, k=10)
    Dc, Ic = c.search(q, k=10)
    assert (Ig == Ic).mean() > 0.99
    both = (Ig == Ic) & (Ig >= 0)
    np.testing.assert_allclose(Dg[both], Dc[both], atol=1e-4, rtol=1e-4)
    assert set(Ig[Ig >= 0].tolist()) <= set(ids.tolist())


def test_lsh_index_cuda_follows_adds_removes_and_files(tmp_path):
    x, q = _clustered(2000, 16, 43), _clustered(50, 16, 44)
    kw = dict(num_tables=6, hash_bits=7, num_probes=3, refine=0)
    g = simdex.LSHIndex(16, device="cuda", **kw)
    g.add(x[:1000])
    _, I1 = g.search(q, k=5)
    assert I1.max() < 1000
    g.add(x[1000:], ids=np.arange(1000, 2000))  # the GPU tables are rebuilt
    g.remove(np.arange(0, 1000))
    D2, I2 = g.search(q, k=5)
    assert I2.min() >= 1000
    g.add(x[:3], ids=[1500, 1501, 1502], replace=True)
    _, I3 = g.search(x[:3], k=1)
    np.testing.assert_array_equal(I3[:, 0], [1500, 1501, 1502])
    # Saved from the GPU index, loaded on the CPU and back on the GPU.
    g.save(tmp_path / "l.simdex")
    c = simdex.load_index(tmp_path / "l.simdex")
    g2 = simdex.load_index(tmp_path / "l.simdex", device="cuda")
    assert c.device == "cpu" and g2.device == "cuda" and len(c) == len(g2) == len(g) == 1000
    Dg, Ig = g.search(q, k=5)
    Dg2, Ig2 = g2.search(q, k=5)
    np.testing.assert_array_equal(Ig, Ig2)
    np.testing.assert_allclose(Dg, Dg2)
    # Device-array queries come back as device arrays.
    Dd, Id = g.search(gpu.to_device(q), k=5)
    assert gpu.is_device_array(Dd) and gpu.is_device_array(Id)
    np.testing.assert_array_equal(Id.get(), Ig)
    with pytest.raises(ValueError, match="num_probes"):
        g.search(q, k=5, num_probes=9)  # hash_bits + 1 = 8 at most
    g.reset()
    _, I0 = g.search(q, k=2)
    assert (I0 == -1).all()


# ---------------------------------------------------------------- hashing
@pytest.mark.parametrize(("L", "K", "d"), [(16, 16, 128), (3, 64, 37), (5, 24, 70), (2, 1, 3), (7, 33, 129)])
def test_hash_matches_reference_bit_for_bit(L, K, d):
    x = _data(777, d, 16)
    planes = _data(L * K, d, 17)
    codes = gpu.hash_vectors_gpu(x, planes, num_tables=L)
    assert codes.dtype == np.uint64 and codes.shape == (777, L)
    np.testing.assert_array_equal(codes, gpu.hash_reference(x, planes, num_tables=L))


def test_hash_matches_cpu_lsh_except_near_zero():
    L, K, d = 8, 16, 64
    x, planes = _data(2000, d, 18), _data(L * K, d, 19)
    cpu = np.asarray(simdex.hash_vectors(x, planes.reshape(L, K, d)))
    g = gpu.hash_vectors_gpu(x, planes, num_tables=L)
    diff = (cpu.astype(np.uint64) ^ g).reshape(-1)
    if diff.any():  # only bits whose projection is within float32 rounding of zero may differ
        proj = (x.astype(np.float64) @ planes.astype(np.float64).T).reshape(2000, L, K)
        scale = (np.abs(x).astype(np.float64) @ np.abs(planes).astype(np.float64).T).reshape(2000, L, K)
        bits = (diff.reshape(2000, L)[:, :, None] >> np.arange(K, dtype=np.uint64)) & np.uint64(1)
        assert (np.abs(proj)[bits.astype(bool)] <= 1e-5 * scale[bits.astype(bool)]).all()


# ---------------------------------------------------------------- device arrays, no copies
def test_cupy_in_cupy_out_without_copies():
    cp = pytest.importorskip("cupy")
    q, x = _data(64, 32, 20), _data(2000, 32, 21)
    qd, xd = cp.asarray(q), cp.asarray(x)
    D, ids = gpu.knn(qd, xd, k=10, metric="l2")
    assert isinstance(D, cp.ndarray) and isinstance(ids, cp.ndarray)
    _check_against_reference(D.get(), ids.get(), q, x, 10, "l2")
    # A strided view (every other row) is used in place.
    D2, I2 = gpu.knn(qd[::2], xd, k=10, metric="l2")
    np.testing.assert_array_equal(I2.get(), ids.get()[::2])
    # Mixed host/device: result follows the queries.
    D3, I3 = gpu.knn(q, xd, k=10, metric="l2")
    assert isinstance(D3, np.ndarray)
    np.testing.assert_array_equal(I3, ids.get())
    bad = xd.copy()
    bad[5, 5] = cp.inf
    with pytest.raises(ValueError, match="infinite"):
        gpu.knn(qd, bad, k=1)
    codes = gpu.hash_vectors_gpu(xd, cp.asarray(_data(64, 32, 22)), num_tables=4)
    assert isinstance(codes, cp.ndarray) and codes.dtype == np.uint64
    np.testing.assert_array_equal(codes.get(), gpu.hash_reference(x, _data(64, 32, 22), num_tables=4))
    index = gpu.GpuExactIndex(32, "cosine")
    index.add(xd, np.arange(2000))
    Di, Ii = index.search(qd, 5)
    assert isinstance(Ii, cp.ndarray)
    np.testing.assert_array_equal(Ii.get(), gpu.knn(q, x, k=5)[1])


def test_torch_in_torch_out():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA")
    q, x = _data(16, 8, 23), _data(300, 8, 24)
    D, ids = gpu.knn(torch.from_numpy(q).cuda(), torch.from_numpy(x).cuda(), k=4, metric="ip")
    assert isinstance(D, torch.Tensor) and D.is_cuda and ids.dtype == torch.int64
    _check_against_reference(D.cpu().numpy(), ids.cpu().numpy(), q, x, 4, "ip")


def test_device_array_in_device_array_out():
    q, x = _data(10, 12, 25), _data(400, 12, 26)
    qd, xd = gpu.DeviceArray.from_host(q), gpu.DeviceArray.from_host(x)
    np.testing.assert_array_equal(xd.get(), x)
    D, ids = gpu.knn(qd, xd, k=3, metric="cosine")
    assert isinstance(D, gpu.DeviceArray) and isinstance(ids, gpu.DeviceArray)
    Dr, Ir = gpu.knn(q, x, k=3, metric="cosine")
    np.testing.assert_array_equal(ids.get(), Ir)
    np.testing.assert_allclose(D.get(), Dr, atol=1e-6)
    codes = gpu.hash_vectors_gpu(xd, _data(32, 12, 27), num_tables=2)
    assert isinstance(codes, gpu.DeviceArray) and codes.dtype == np.uint64
    np.testing.assert_array_equal(codes.get(), gpu.hash_reference(x, _data(32, 12, 27), num_tables=2))


# ---------------------------------------------------------------- LSH tables on the GPU
def _lsh_oracle(q, x, planes, L, K, P, k, metric):
    """Candidates = rows sharing a probed bucket (same probe rule), re-ranked in float64."""
    xc = gpu.hash_reference(x, planes, num_tables=L)
    qc = gpu.hash_reference(q, planes, num_tables=L)
    q64, p64 = q.astype(np.float64), planes.astype(np.float64)
    proj = np.zeros((q.shape[0], L * K))
    for c in range(q.shape[1]):  # the same in-order float64 sums as the kernels
        proj += q64[:, c, None] * p64[None, :, c]
    margin = np.abs(proj).astype(np.float32).reshape(-1, L, K)
    _, _, full = _reference(q, x, 1, metric)
    D = np.full((q.shape[0], k), np.inf)
    ids = np.full((q.shape[0], k), -1)
    for i in range(q.shape[0]):
        cand = set()
        for t in range(L):
            order = np.argsort(margin[i, t], kind="stable")
            probes = [int(qc[i, t])] + [int(qc[i, t]) ^ (1 << int(j)) for j in order[: P - 1]]
            for p in probes:
                cand.update(np.flatnonzero(xc[:, t] == np.uint64(p)).tolist())
        cand = np.array(sorted(cand), dtype=np.int64)
        if cand.size:
            sel = cand[np.lexsort((cand, full[i, cand]))][:k]
            D[i, : sel.size], ids[i, : sel.size] = full[i, sel], sel
    return D, ids


def test_lsh_tables_are_sorted_codes_of_the_base():
    x, planes = _data(3000, 20, 30), _data(6 * 10, 20, 31)
    lsh = gpu.GpuLSHIndex(x, planes, num_tables=6)
    assert len(lsh) == 3000
    ref = gpu.hash_reference(x, planes, num_tables=6)
    for t in range(6):
        codes, rows = lsh.table(t)
        assert (np.diff(codes.astype(np.float64)) >= 0).all()
        np.testing.assert_array_equal(np.sort(rows), np.arange(3000))
        np.testing.assert_array_equal(codes, ref[rows, t])


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize(("L", "K", "P"), [(4, 8, 1), (6, 10, 3), (2, 12, 13)])
def test_lsh_search_matches_bucket_oracle(metric, L, K, P):
    x, q, planes = _data(4000, 16, 32), _data(60, 16, 33), _data(L * K, 16, 34)
    lsh = gpu.GpuLSHIndex(x, planes, num_tables=L, metric=metric)
    D, ids = lsh.search(q, k=20, num_probes=P)
    Dr, Ir = _lsh_oracle(q, x, planes, L, K, P, 20, metric)
    assert ((ids == -1) == (Ir == -1)).all()
    found = Ir != -1
    np.testing.assert_allclose(D[found], Dr[found], atol=1e-4, rtol=1e-4)
    assert (ids[found] == Ir[found]).mean() > 0.99
    for row in ids:  # no duplicates across tables
        real = row[row >= 0]
        assert len(set(real.tolist())) == real.size


def test_lsh_recall_on_clustered_data():
    rng = np.random.default_rng(35)
    centers = rng.normal(size=(50, 32))
    x = (centers[rng.integers(0, 50, 20000)] + 0.1 * rng.normal(size=(20000, 32))).astype(np.float32)
    q = (centers[rng.integers(0, 50, 200)] + 0.1 * rng.normal(size=(200, 32))).astype(np.float32)
    lsh = gpu.GpuLSHIndex(x, _data(16 * 12, 32, 36), num_tables=16)
    _, ids = lsh.search(q, k=10, num_probes=4)
    _, exact = gpu.knn(q, x, k=10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids.tolist(), exact.tolist())])
    assert recall > 0.8
    with pytest.raises(ValueError, match="num_probes"):
        lsh.search(q, k=10, num_probes=14)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize(("precision", "tol"), [("tf32x3", 1e-4), ("tf32", 3e-2)])
def test_tensor_core_precisions(metric, precision, tol):
    q, x = _data(150, 100, 40), _data(3000, 100, 41)  # d = 100: a partial K step of 32
    D, ids = gpu.knn(q, x, k=10, metric=metric, precision=precision, query_block=128, base_block=1024)
    ref_d, ref_i, _ = _reference(q, x, 10, metric)
    scale = max(1.0, float(np.abs(ref_d).max()))
    np.testing.assert_allclose(D, ref_d, atol=tol * scale, rtol=tol)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids.tolist(), ref_i.tolist())])
    assert recall > (0.999 if precision == "tf32x3" else 0.9)
    if precision == "tf32x3":
        _check_against_reference(D, ids, q, x, 10, metric)
