"""Search-time filters and range search (issue 14, item 4) against NumPy oracles."""

from __future__ import annotations

import numpy as np
import pytest

import simdex

METRICS = ["cosine", "ip", "l2", "sql2"]


def _oracle_dist(q, x, metric):
    q, x = q.astype(np.float64), x.astype(np.float64)
    if metric == "cosine":
        qn = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-300)
        xn = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-300)
        return 1.0 - qn @ xn.T
    if metric == "ip":
        return -(q @ x.T)
    d2 = (q * q).sum(1)[:, None] + (x * x).sum(1)[None, :] - 2 * q @ x.T
    d2 = np.maximum(d2, 0)
    return np.sqrt(d2) if metric == "l2" else d2


def _data(n=600, d=12, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    ids = rng.permutation(10 * n)[:n].astype(np.int64)
    q = rng.standard_normal((7, d)).astype(np.float32)
    return x, ids, q


def _post_filtered(q, x, ids, allowed, metric, k):
    """Exact search over all data, then keep the allowed ids: the oracle of a filter."""
    dist = _oracle_dist(q, x, metric)
    out_ids = np.full((len(q), k), -1, np.int64)
    out_d = np.full((len(q), k), np.inf)
    for i in range(len(q)):
        order = np.lexsort((ids, dist[i]))
        keep = [j for j in order if allowed(ids[j])][:k]
        out_ids[i, : len(keep)] = ids[keep]
        out_d[i, : len(keep)] = dist[i, keep]
    return out_d, out_ids


def _filters(ids, rng):
    sub = rng.choice(ids, size=len(ids) // 10, replace=False)  # 10% selectivity
    big = rng.choice(ids, size=len(ids) * 8 // 10, replace=False)  # 80%: the masked scan
    few = rng.choice(ids, size=3, replace=False)
    sset, bset, fset = set(sub.tolist()), set(big.tolist()), set(few.tolist())
    mask = np.zeros(ids.max() + 1, bool)
    mask[sub] = True
    return [
        ("allow10", list(sub), lambda i: i in sset),
        ("allow80", big, lambda i: i in bset),
        ("allow3", simdex.IdFilter.allow(few), lambda i: i in fset),
        ("deny3", simdex.IdFilter.deny(few), lambda i: i not in fset),
        ("deny80", simdex.IdFilter.deny(big), lambda i: i not in bset),
        ("mask", mask, lambda i: i in sset),
        ("callable", lambda a: a % 3 == 0, lambda i: i % 3 == 0),
        ("none_allowed", [10**9], lambda i: False),
    ]


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("k", [1, 10, 70])
def test_exact_filter_equals_post_filtering(metric, k):
    x, ids, q = _data()
    index = simdex.ExactIndex(x.shape[1], metric=metric)
    index.add(x, ids=ids)
    for name, flt, allowed in _filters(ids, np.random.default_rng(1)):
        D, I = index.search(q, k, filter=flt)
        oD, oI = _post_filtered(q, x, ids, allowed, metric, k)
        np.testing.assert_array_equal(I == -1, oI == -1, err_msg=name)
        np.testing.assert_allclose(np.where(I >= 0, D, 0), np.where(oI >= 0, oD, 0), atol=2e-4, err_msg=name)
        # ids may differ only between (near-)equal distances
        assert all(allowed(i) for i in I[I >= 0].tolist()), name


@pytest.mark.parametrize("metric", METRICS)
def test_exact_filter_single_query_prefilter_path(metric):
    x, ids, q = _data(n=6000, d=16)
    index = simdex.ExactIndex(16, metric=metric)
    index.add(x, ids=ids)
    for name, flt, allowed in _filters(ids, np.random.default_rng(2)):
        D, I = index.search(q[0], 5, filter=flt)
        oD, oI = _post_filtered(q[:1], x, ids, allowed, metric, 5)
        np.testing.assert_allclose(
            np.where(I >= 0, D, 0), np.where(oI[0] >= 0, oD[0], 0), atol=2e-4, err_msg=name
        )


@pytest.mark.parametrize("metric", METRICS)
def test_lsh_filter_equals_post_filtering_when_probing_everything(metric):
    # hash_bits=3 and 8 probes visit every bucket: the LSH candidate set is all data,
    # so a filtered LSH search must equal post-filtering an exact search.
    x, ids, q = _data(n=400)
    index = simdex.LSHIndex(x.shape[1], num_tables=2, hash_bits=3, num_probes=8, metric=metric, refine=0)
    index.add(x, ids=ids)
    index.remove(ids[:5])
    xs, ids_s = x[5:], ids[5:]
    for name, flt, allowed in _filters(ids_s, np.random.default_rng(3)):
        D, I = index.search(q, 10, filter=flt)
        oD, oI = _post_filtered(q, xs, ids_s, allowed, metric, 10)
        np.testing.assert_array_equal(I == -1, oI == -1, err_msg=name)
        np.testing.assert_allclose(np.where(I >= 0, D, 0), np.where(oI >= 0, oD, 0), atol=2e-4, err_msg=name)
        assert all(allowed(i) for i in I[I >= 0].tolist()), name


def test_lsh_filtered_candidates_are_counted_after_the_filter():
    x, ids, q = _data(n=400)
    index = simdex.LSHIndex(x.shape[1], num_tables=2, hash_bits=3, num_probes=8)
    index.add(x, ids=ids)
    index.search(q, 5, filter=ids[:40])
    assert index.stats()["mean_candidates_last_search"] == 40


def _range_oracle(q, x, ids, radius, metric, allowed=lambda i: True):
    dist = _oracle_dist(q, x, metric)
    return [
        sorted((dist[i, j], ids[j]) for j in range(len(x)) if dist[i, j] <= radius and allowed(ids[j]))
        for i in range(len(q))
    ]


def _radius_between(q, x, metric, quantile):
    # A radius in the middle of a gap between distances, so float32 rounding cannot
    # move a vector across it.
    d = np.sort(_oracle_dist(q, x, metric).ravel())
    i = int(quantile * (len(d) - 1))
    gaps = np.diff(d[i : i + 200])
    j = i + int(np.argmax(gaps))
    return float((d[j] + d[j + 1]) / 2)


def _check_csr(lims, D, I, expected):
    assert lims.dtype == np.int64 and D.dtype == np.float32 and I.dtype == np.int64
    assert lims[0] == 0 and len(lims) == len(expected) + 1 and lims[-1] == len(D) == len(I)
    for i, exp in enumerate(expected):
        got_i = I[lims[i] : lims[i + 1]]
        got_d = D[lims[i] : lims[i + 1]]
        assert sorted(got_i.tolist()) == sorted(e[1] for e in exp)
        assert np.all(np.diff(got_d) >= 0)
        np.testing.assert_allclose(got_d, [e[0] for e in exp], atol=2e-4)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("quantile", [0.0, 0.02, 0.3])
def test_exact_range_search_equals_numpy(metric, quantile):
    x, ids, q = _data()
    index = simdex.ExactIndex(x.shape[1], metric=metric)
    index.add(x, ids=ids)
    radius = _radius_between(q, x, metric, quantile)
    _check_csr(*index.range_search(q, radius), _range_oracle(q, x, ids, radius, metric))
    lims, D, I = index.range_search(q[0], radius)  # one 1-D query: still CSR, q = 1
    _check_csr(lims, D, I, _range_oracle(q[:1], x, ids, radius, metric))
    sub = set(ids[::4].tolist())
    _check_csr(
        *index.range_search(q, radius, filter=ids[::4]),
        _range_oracle(q, x, ids, radius, metric, lambda i: i in sub),
    )


@pytest.mark.parametrize("metric", METRICS)
def test_lsh_range_search_equals_numpy_when_probing_everything(metric):
    x, ids, q = _data(n=300)
    index = simdex.LSHIndex(x.shape[1], num_tables=2, hash_bits=3, num_probes=8, metric=metric)
    index.add(x, ids=ids)
    radius = _radius_between(q, x, metric, 0.05)
    _check_csr(*index.range_search(q, radius), _range_oracle(q, x, ids, radius, metric))
    deny = set(ids[:100].tolist())
    _check_csr(
        *index.range_search(q, radius, filter=simdex.IdFilter.deny(ids[:100])),
        _range_oracle(q, x, ids, radius, metric, lambda i: i not in deny),
    )


def test_lsh_range_search_is_subset_of_exact_with_few_probes():
    x, ids, q = _data(n=2000)
    lsh = simdex.LSHIndex(x.shape[1], num_tables=4, hash_bits=8, num_probes=2)
    lsh.add(x, ids=ids)
    radius = _radius_between(q, x, "cosine", 0.05)
    lims, D, I = lsh.range_search(q, radius)
    truth = _range_oracle(q, x, ids, radius, "cosine")
    for i in range(len(q)):
        assert set(I[lims[i] : lims[i + 1]].tolist()) <= {e[1] for e in truth[i]}
    assert np.all(D <= radius)


def test_range_search_edges():
    index = simdex.ExactIndex(3)
    lims, D, I = index.range_search(np.ones((2, 3)), 0.5)  # empty index
    assert lims.tolist() == [0, 0, 0] and D.size == I.size == 0
    index.add(np.eye(3))
    assert index.range_search(np.ones(3), -1.0)[0].tolist() == [0, 0]
    assert index.range_search(np.ones(3), np.inf)[0].tolist() == [0, 3]
    with pytest.raises(ValueError, match="NaN"):
        index.range_search(np.ones(3), float("nan"))
    with pytest.raises(TypeError):
        index.range_search(np.ones(3), "x")


def test_filter_errors():
    index = simdex.ExactIndex(3)
    index.add(np.eye(3))
    with pytest.raises(TypeError, match="integer"):
        index.search(np.ones(3), 2, filter=[0.5])
    with pytest.raises(ValueError, match="bool array"):
        index.search(np.ones(3), 2, filter=lambda ids: ids)
    with pytest.raises(TypeError):
        index.search(np.ones(3), 2, filter="abc")
    # an empty allow-list allows nothing; an empty deny-list nothing is denied
    assert index.search(np.ones(3), 2, filter=[])[1].tolist() == [-1, -1]
    assert index.search(np.ones(3), 3, filter=simdex.IdFilter.deny([]))[1].tolist() == [0, 1, 2]


def test_similarity_model_lookup_restricted_to_labels():
    keras = pytest.importorskip("keras")
    from simdex.models import SimilarityModel

    rng = np.random.default_rng(0)
    inputs = keras.Input((6,))
    model = SimilarityModel(inputs, keras.layers.Dense(4)(inputs))
    x = rng.standard_normal((60, 6)).astype(np.float32)
    y = np.arange(60) % 5
    model.index(x, y)
    q = rng.standard_normal((4, 6)).astype(np.float32)
    for labels in ([2], [0, 3], 4):
        wanted = set(np.atleast_1d(labels).tolist())
        got = model.lookup(q, k=7, labels=labels)
        assert all(len(row) == 7 and {r.label for r in row} <= wanted for row in got)
        # the same neighbours as post-filtering a full lookup
        full = model.lookup(q, k=60)
        for row, frow in zip(got, full):
            assert [r.id for r in row] == [r.id for r in frow if r.label in wanted][:7]
    assert model.lookup(q, k=3, labels=[99]) == [[], [], [], []]
    with pytest.raises(TypeError):
        model.lookup(q, k=3, labels=["a"])


# The sketch pipelines of LSHIndex (sketch-filtered buckets, sketch scan, self-configured)
# admit candidates at the same point as the classic one: the filter must hold on all of them.
def _sketch_indexes(dim, metric, n):
    return {
        # every bucket probed and a re-rank budget above n: the candidates are all data
        "sketch_buckets": simdex.LSHIndex(
            dim,
            num_tables=2,
            hash_bits=3,
            num_probes=8,
            metric=metric,
            refine=0,
            sketch_bits=128,
            rerank=4 * n,
        ),
        "scan": simdex.LSHIndex(dim, metric=metric, refine=0, sketch_bits=128, rerank=4 * n, scan=True),
    }


@pytest.mark.parametrize("metric", METRICS)
def test_lsh_sketch_paths_filter_and_range_equal_oracles_with_full_budget(metric):
    x, ids, q = _data(n=400)
    for mode, index in _sketch_indexes(x.shape[1], metric, len(x)).items():
        index.add(x, ids=ids)
        index.remove(ids[:5])
        xs, ids_s = x[5:], ids[5:]
        for name, flt, allowed in _filters(ids_s, np.random.default_rng(4)):
            D, I = index.search(q, 10, filter=flt)
            oD, oI = _post_filtered(q, xs, ids_s, allowed, metric, 10)
            msg = f"{mode}/{name}"
            np.testing.assert_array_equal(I == -1, oI == -1, err_msg=msg)
            np.testing.assert_allclose(
                np.where(I >= 0, D, 0), np.where(oI >= 0, oD, 0), atol=2e-4, err_msg=msg
            )
        radius = _radius_between(q, xs, metric, 0.05)
        _check_csr(*index.range_search(q, radius), _range_oracle(q, xs, ids_s, radius, metric))
        denied = frozenset(ids_s[:100].tolist())
        _check_csr(
            *index.range_search(q, radius, filter=simdex.IdFilter.deny(ids_s[:100])),
            _range_oracle(q, xs, ids_s, radius, metric, lambda i, s=denied: i not in s),
        )


def test_lsh_scan_counts_candidates_after_the_filter():
    x, ids, q = _data(n=400)
    index = simdex.LSHIndex(x.shape[1], sketch_bits=64, rerank=1000, scan=True)
    index.add(x, ids=ids)
    index.search(q, 5, filter=ids[:40])
    assert index.stats()["mean_candidates_last_search"] == 40


def test_self_configured_lsh_filter_and_range_search():
    rng = np.random.default_rng(5)
    centers = rng.standard_normal((40, 16)).astype(np.float32)
    x = (centers[rng.integers(0, 40, 3000)] + 0.3 * rng.standard_normal((3000, 16))).astype(np.float32)
    ids = np.arange(3000, dtype=np.int64) * 3
    q = x[:20] + 0.05 * rng.standard_normal((20, 16)).astype(np.float32)
    index = simdex.LSHIndex(16)  # no tuning argument: configures itself at the first search
    index.add(x, ids=ids)
    allowed = ids[ids % 2 == 0]
    aset = set(allowed.tolist())
    D, I = index.search(q, 10, filter=allowed)
    assert index.stats()["autoconfig"], "the filtered search configured the index"
    assert all(i in aset for i in I[I >= 0].tolist())
    oD, oI = _post_filtered(q, x, ids, lambda i: i in aset, "cosine", 10)
    recall = np.mean([len(set(I[r].tolist()) & set(oI[r].tolist())) / 10 for r in range(len(q))])
    assert recall >= 0.8, recall
    # Returned distances are exact.
    pos = {int(i): j for j, i in enumerate(ids.tolist())}
    exact = _oracle_dist(q, x, "cosine")
    for r in range(len(q)):
        for dist, i in zip(D[r], I[r]):
            if i >= 0:
                assert abs(exact[r, pos[int(i)]] - dist) < 2e-4
    radius = _radius_between(q, x, "cosine", 0.002)
    lims, RD, RI = index.range_search(q, radius, filter=allowed)
    truth = _range_oracle(q, x, ids, radius, "cosine", lambda i: i in aset)
    found = total = 0
    for r in range(len(q)):
        got = set(RI[lims[r] : lims[r + 1]].tolist())
        want = {e[1] for e in truth[r]}
        assert got <= want
        found, total = found + len(got), total + len(want)
    assert np.all(RD <= radius)
    assert total > 0 and found / total >= 0.8, (found, total)
