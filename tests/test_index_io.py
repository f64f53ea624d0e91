"""Pickle, copy, bytes and file objects for every index kind (issue 14, item 1)."""

from __future__ import annotations

import copy
import io
import pickle

import numpy as np
import pytest

import simdex


def _exact():
    index = simdex.ExactIndex(8, metric="l2", fp16_prefilter=False)
    index.add(np.random.default_rng(0).standard_normal((50, 8)), ids=np.arange(100, 150))
    index.remove([110, 120])
    return index


def _lsh():
    index = simdex.LSHIndex(8, num_tables=4, hash_bits=5, num_probes=3, seed=7, refine=0)
    index.add(np.random.default_rng(1).standard_normal((60, 8)))
    index.remove([5])
    return index


KINDS = [_exact, _lsh]


def _same(a, b):
    assert type(a) is type(b)
    assert (a.dim, a.metric, len(a)) == (b.dim, b.metric, len(b))
    np.testing.assert_array_equal(np.sort(a.ids), np.sort(b.ids))
    q = np.random.default_rng(5).standard_normal((6, a.dim)).astype(np.float32)
    for x, y in zip(a.search(q, 5), b.search(q, 5)):
        np.testing.assert_array_equal(x, y)
    assert b.add(np.ones(b.dim)) == a._next_id  # the copy continues the same id counter
    b.remove(b.ids[-1:])


@pytest.mark.parametrize("make", KINDS)
@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_pickle_round_trip(make, protocol):
    index = make()
    _same(index, pickle.loads(pickle.dumps(index, protocol=protocol)))


@pytest.mark.parametrize("make", KINDS)
@pytest.mark.parametrize("how", [copy.copy, copy.deepcopy])
def test_copies_do_not_share_the_native_store(make, how):
    index = make()
    twin = how(index)
    n = len(index)
    twin.add(np.zeros((3, index.dim)) + 1)
    twin.remove([int(twin.ids[0])])
    assert len(index) == n and len(twin) == n + 2
    if isinstance(index, simdex.LSHIndex):
        assert (twin.num_tables, twin.hash_bits, twin.num_probes, twin.seed) == (4, 5, 3, 7)
        np.testing.assert_array_equal(twin.projection.planes, index.projection.planes)


@pytest.mark.parametrize("make", KINDS)
def test_bytes_and_file_objects(make, tmp_path):
    index = make()
    data = index.to_bytes()
    assert isinstance(data, bytes)
    _same(index, type(index).from_bytes(data))
    _same(index, simdex.load_index(data))
    buf = io.BytesIO()
    index.save(buf)
    assert buf.getvalue() == data
    buf.seek(0)
    _same(index, simdex.load_index(buf))
    with open(tmp_path / "x.simdex", "wb") as f:
        f.write(b"prefix")
        index.save(f)  # written at the position, file left open
        assert not f.closed
    with open(tmp_path / "x.simdex", "rb") as f:
        assert f.read(6) == b"prefix"
        _same(index, simdex.load_index(f))
    index.save(tmp_path / "y.simdex")
    assert (tmp_path / "y.simdex").read_bytes() == data


def test_from_bytes_checks_the_class():
    with pytest.raises(simdex.CorruptFileError, match="not a LSHIndex"):
        simdex.LSHIndex.from_bytes(_exact().to_bytes())
    with pytest.raises(TypeError):
        simdex.load_index(12)
    with pytest.raises(TypeError, match="binary"):
        simdex.load_index(io.StringIO("x"))


def test_pickle_inside_containers():
    bundle = {"a": _exact(), "b": [_lsh()]}
    out = pickle.loads(pickle.dumps(bundle))
    _same(bundle["a"], out["a"])
    _same(bundle["b"][0], out["b"][0])
