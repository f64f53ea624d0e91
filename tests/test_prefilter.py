"""The float16 pre-filter of ExactIndex: same neighbours as the float32 path, on hard data.

The pre-filter answers searches with at most 4 queries from a float16 copy and
re-scores in float32 every row its error bound cannot rule out. These tests compare
it with the same index built with ``fp16_prefilter=False`` (ids equal, distances
within float32 rounding) on data chosen to break a wrong bound: near-ties, exact
duplicates, zero rows, rows whose squares underflow float32, wide norm ranges, every
metric, both SIMD kernels, and after removals and replacements. ``prefilter_stats``
shows the pre-filter was really used and how much it filtered.
"""

from __future__ import annotations

import numpy as np
import pytest

import simdex
from conftest import METRICS, oracle_distances
from simdex import _core

N = 6000  # above the pre-filter's 4,096-row minimum

pytestmark = pytest.mark.skipif(
    _core.fp16_simd_level() == "none", reason="this CPU has no F16C: the pre-filter is off"
)


def pair(dim: int, metric: str) -> tuple[simdex.ExactIndex, simdex.ExactIndex]:
    return simdex.ExactIndex(dim, metric), simdex.ExactIndex(dim, metric, fp16_prefilter=False)


def hard_data(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.normal(size=(n, dim)) * rng.uniform(0.01, 100.0, size=(n, 1))
    x[10] = 0.0  # zero row
    x[11:20] = x[20]  # exact duplicates: ties broken by the smaller id
    # Squares below the float16 filter's 1e-30 floor: always re-ranked. (Rows whose squares
    # underflow float32 itself, e.g. 1e-20, are rejected by the magnitude rule.)
    x[30] = 1e-18
    x[31] = x[40] * (1 + 1e-7)  # near-duplicate
    x[50:60] = x[60] * 3.0  # same direction, other norm
    return x.astype(np.float32)


def assert_same(a, b, oracle=None):
    """Same distances; same ids, except between rows whose true distances tie to within
    float32 rounding (e.g. one direction at several norms under cosine), where the two
    paths' summation orders may pick different members: the float64 ``oracle`` must
    then give both ids the same distance."""
    (Da, Ia), (Db, Ib) = a, b
    Da, Db, Ia, Ib = (np.atleast_2d(v) for v in (Da, Db, Ia, Ib))
    finite = np.isfinite(Db)
    np.testing.assert_array_equal(np.isfinite(Da), finite)
    tol = oracle.tol if oracle is not None else 1e-5
    if oracle is not None and oracle.metric == "l2":  # compare squares: sqrt amplifies rounding near 0
        Da, Db = Da.astype(np.float64) ** 2, Db.astype(np.float64) ** 2
    np.testing.assert_allclose(Da[finite], Db[finite], rtol=0, atol=tol)
    for qi, pos in zip(*np.nonzero(Ia != Ib)):
        assert oracle is not None, f"query {qi} rank {pos}: id {Ia[qi, pos]} != {Ib[qi, pos]}"
        da, db = oracle.dist(qi, Ia[qi, pos]), oracle.dist(qi, Ib[qi, pos])
        if oracle.metric == "l2":
            da, db = da**2, db**2
        assert abs(da - db) <= tol, (qi, pos, Ia[qi, pos], Ib[qi, pos], da, db)


class Oracle:
    """float64 distances of (query, row) and the float32 rounding tolerance of the
    metric's formula for this data (L2 expands |q|^2 + |x|^2 - 2<q, x>)."""

    def __init__(self, x: np.ndarray, q: np.ndarray, metric: str) -> None:
        self.x = np.atleast_2d(x).astype(np.float64)
        self.q = np.atleast_2d(q).astype(np.float64)
        self.metric = metric
        qmax = np.linalg.norm(self.q, axis=1).max()
        xmax = np.linalg.norm(self.x, axis=1).max()
        u = 2.0**-24
        if metric == "cosine":
            self.tol = 1e-5
        elif metric == "ip":
            self.tol = 64 * u * qmax * xmax + 1e-6
        else:
            self.tol = 64 * u * (qmax + xmax) ** 2 + 1e-6

    def dist(self, qi: int, i: int) -> float:
        return _dist(self.q[qi], self.x[i], self.metric)


def _dist(a: np.ndarray, b: np.ndarray, metric: str) -> float:
    return float(oracle_distances(a, b, metric)[0, 0])


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("dim", [7, 64, 129])
def test_matches_float32_path(metric, dim):
    rng = np.random.default_rng(dim)
    x = hard_data(rng, N, dim)
    fast, ref = pair(dim, metric)
    fast.add(x)
    ref.add(x)
    # Queries: random, a stored row (exact match), a duplicate's source, a zero query.
    q = np.vstack([rng.normal(size=(2, dim)), x[20], x[60], np.zeros(dim)]).astype(np.float32)
    for k in (1, 5, 37, 300):
        for row in q:
            assert_same(fast.search(row, k), ref.search(row, k), oracle=Oracle(x, row, metric))
        assert_same(fast.search(q[:4], k), ref.search(q[:4], k), oracle=Oracle(x, q[:4], metric))
    stats = fast.prefilter_stats()
    assert stats["active"] == 1
    assert stats["queries"] == 4 * (len(q) + 4)


@pytest.mark.parametrize("metric", METRICS)
def test_filters_most_rows(metric):
    """On well-spread data the float32 re-scoring touches a small share of the rows."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20_000, 64)).astype(np.float32)
    index = simdex.ExactIndex(64, metric)
    index.add(x)
    index.search(rng.normal(size=(4, 64)).astype(np.float32), 10)
    stats = index.prefilter_stats()
    assert stats["queries"] == 4
    assert 4 * 10 <= stats["rescored"] < 0.02 * 4 * len(x)


def test_all_rows_tied():
    """Every row identical: nothing can be ruled out, ties go to the smallest ids."""
    x = np.ones((N, 16), np.float32)
    fast, ref = pair(16, "cosine")
    fast.add(x)
    ref.add(x)
    D, Ids = fast.search(np.ones(16, np.float32), 10)
    np.testing.assert_array_equal(Ids, np.arange(10))  # a 1-D query gives 1-D results
    np.testing.assert_allclose(D, 0.0, atol=1e-6)
    assert_same((D, Ids), ref.search(np.ones(16, np.float32), 10))
    assert fast.prefilter_stats()["rescored"] == N


def test_k_larger_than_index():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(N, 8)).astype(np.float32)
    fast, ref = pair(8, "l2")
    fast.add(x)
    ref.add(x)
    D, Ids = fast.search(x[0], N + 5)
    assert_same((D, Ids), ref.search(x[0], N + 5), oracle=Oracle(x, x[0], "l2"))
    assert (Ids[N:] == -1).all() and np.isinf(D[N:]).all()
    assert sorted(Ids[:N].tolist()) == list(range(N))


@pytest.mark.parametrize("metric", METRICS)
def test_after_removals_and_replacements(metric):
    """The float16 copy follows remove (swap with the last row), replace and re-add."""
    rng = np.random.default_rng(4)
    x = hard_data(rng, N + 500, 24)
    ids = np.arange(len(x)) * 3
    fast = simdex.ExactIndex(24, metric)
    fast.add(x, ids)
    gone = rng.choice(ids, size=700, replace=False)
    fast.remove(gone)
    changed = rng.choice(np.setdiff1d(ids, gone), size=300, replace=False)
    new_vectors = rng.normal(size=(300, 24)).astype(np.float32) * 5
    fast.add(new_vectors, changed, replace=True)
    fast.add(x[:17], gone[:17])  # re-add some removed ids
    # Reference: a fresh float32-only index with the same final contents.
    vecs = dict(zip(ids.tolist(), x))
    for i in gone.tolist():
        del vecs[i]
    vecs.update(zip(changed.tolist(), new_vectors))
    vecs.update(zip(gone[:17].tolist(), x[:17]))
    ref = simdex.ExactIndex(24, metric, fp16_prefilter=False)
    keys = np.array(sorted(vecs))
    ref.add(np.stack([vecs[i] for i in keys]), keys)
    assert len(fast) == len(ref)
    q = np.vstack([rng.normal(size=(3, 24)), new_vectors[:1]]).astype(np.float32)
    final = np.zeros((int(keys.max()) + 1, 24), np.float32)
    final[keys] = np.stack([vecs[i] for i in keys])
    for k in (1, 10, 100):
        assert_same(fast.search(q, k), ref.search(q, k), oracle=Oracle(final, q, metric))
    assert fast.prefilter_stats()["queries"] == 12


def test_avx2_kernel_matches():
    """The AVX2+F16C kernel (forced on an AVX-512 CPU) gives the same results."""
    rng = np.random.default_rng(5)
    x = hard_data(rng, N, 37)
    q = rng.normal(size=(3, 37)).astype(np.float32)
    ref = simdex.ExactIndex(37, "ip", fp16_prefilter=False)
    ref.add(x)
    expected = ref.search(q, 20)
    levels = ["auto", "avx2"] if _core._set_fp16_kernel("avx2") else ["auto"]
    try:
        for level in levels:
            assert _core._set_fp16_kernel(level)
            fast = simdex.ExactIndex(37, "ip")  # built and searched with this kernel
            fast.add(x)
            assert_same(fast.search(q, 20), expected, oracle=Oracle(x, q, "ip"))
    finally:
        _core._set_fp16_kernel("auto")
    assert not _core._set_fp16_kernel("sse2")


@pytest.mark.parametrize("num_threads", [1, 2, 3])
def test_thread_counts_agree(num_threads):
    rng = np.random.default_rng(6)
    x = rng.normal(size=(3 * N, 32)).astype(np.float32)
    index = simdex.ExactIndex(32, "cosine")
    index.add(x)
    q = rng.normal(size=(2, 32)).astype(np.float32)
    ref = simdex.ExactIndex(32, "cosine", fp16_prefilter=False)
    ref.add(x)
    assert_same(
        index.search(q, 10, num_threads=num_threads),
        ref.search(q, 10, num_threads=1),
        oracle=Oracle(x, q, "cosine"),
    )


def test_more_queries_take_the_float32_path():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(N, 16)).astype(np.float32)
    index = simdex.ExactIndex(16)
    index.add(x)
    index.search(x[:5], 3)  # 5 queries: GEMM path
    assert index.prefilter_stats()["queries"] == 0
    index.search(x[:4], 3)
    assert index.prefilter_stats()["queries"] == 4


def test_small_index_skips_prefilter():
    index = simdex.ExactIndex(8)
    index.add(np.eye(8, dtype=np.float32))
    index.search(np.eye(8, dtype=np.float32)[0], 1)
    assert index.prefilter_stats()["queries"] == 0


def test_option_saved_and_validated(tmp_path):
    rng = np.random.default_rng(8)
    x = rng.normal(size=(N, 8)).astype(np.float32)
    off = simdex.ExactIndex(8, fp16_prefilter=False)
    off.add(x)
    off.save(tmp_path / "off.sdx")
    back = simdex.load_index(tmp_path / "off.sdx")
    assert back.fp16_prefilter is False and back.prefilter_stats()["active"] == 0
    on = simdex.ExactIndex(8)
    on.add(x)
    on.save(tmp_path / "on.sdx")
    back = simdex.load_index(tmp_path / "on.sdx")
    assert back.fp16_prefilter is True
    assert_same(back.search(x[3], 5), off.search(x[3], 5), oracle=Oracle(x, x[3], "cosine"))
    with pytest.raises(TypeError, match="fp16_prefilter"):
        simdex.ExactIndex(8, fp16_prefilter="yes")


def _rounding_pair(rng: np.random.Generator, d: int, margin: float):
    """Two unit rows A, B and a query q with <q, A> = <q, B> + margin, where float16
    rounds every component of A down and of B up by ~0.45 ulp: the float16 scores rank
    B above A by ~9e-4, nearly the worst case a correct bound must cover."""

    def unit_near_grid(sign: float) -> np.ndarray:
        # Float16 grid points just above the bottom of their binade (so one ulp is the
        # binade's), 90% of them near 1/16 and the rest near 1/64.
        level = np.where(np.arange(d) < int(0.9 * d), 1 / 16, 1 / 64)
        h16 = np.float16(level * (1 + 0.04 * rng.random(d)))
        ulp = np.spacing(h16).astype(np.float64)
        u = h16.astype(np.float64) + sign * 0.45 * ulp  # rounds down (sign +1) or up (-1)
        u[-1] = np.sqrt(1.0 - (u[:-1] ** 2).sum())  # unit norm; one component left uncontrolled
        return u

    a, b = unit_near_grid(+1.0), unit_near_grid(-1.0)
    delta = a - b
    c = (a + b) / 2
    gamma = margin * np.linalg.norm(c) / (delta @ delta)
    q = c + gamma * delta
    q /= np.linalg.norm(q)
    return a.astype(np.float32), b.astype(np.float32), q.astype(np.float32)


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_bound_covers_aligned_rounding(metric):
    """Rounding errors that all push the same way: with the bound cut to a quarter, B wins."""
    rng = np.random.default_rng(11)
    d = 256
    a, b, q = _rounding_pair(rng, d, margin=1e-4)
    assert abs(float(np.linalg.norm(a)) - 1) < 1e-6 and abs(float(np.linalg.norm(b)) - 1) < 1e-6
    # The construction holds: float16 puts B ahead of A, float64 puts A ahead.
    a16, b16 = a.astype(np.float16).astype(np.float64), b.astype(np.float16).astype(np.float64)
    assert q @ b16 - q @ a16 > 5e-4
    assert float(q.astype(np.float64) @ a) > float(q.astype(np.float64) @ b)
    others = -np.abs(rng.normal(size=(N, d))).astype(np.float32)  # far from q
    x = np.vstack([b, others, a])  # A gets the largest id: ties could not save it
    index = simdex.ExactIndex(d, metric)
    index.add(x)
    D, Ids = index.search(q, 1)
    assert int(Ids[0]) == len(x) - 1
    assert index.prefilter_stats()["queries"] == 1
