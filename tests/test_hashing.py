# ruff: noqa: E741  (D, I for distances and ids, as in FAISS)
"""Sign-random-projection hashing and the multi-probe sequence, against NumPy oracles."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import simdex
from simdex._runtime import core


def oracle_codes(x: np.ndarray, planes: np.ndarray) -> np.ndarray:
    """Bit j of table t = <x, planes[t, j]> > 0, LSB first, computed in float64."""
    L, K, d = planes.shape
    proj = x.astype(np.float64) @ planes.reshape(L * K, d).astype(np.float64).T
    bits = (proj > 0).reshape(len(x), L, K).astype(np.uint64)
    return (bits << np.arange(K, dtype=np.uint64)).sum(axis=2, dtype=np.uint64)


def safe_rows(x: np.ndarray, planes: np.ndarray, rel: float = 1e-3) -> np.ndarray:
    """Rows whose every projection is far from 0 relative to float32 rounding."""
    L, K, d = planes.shape
    flat = planes.reshape(L * K, d).astype(np.float64)
    proj = x.astype(np.float64) @ flat.T
    scale = np.linalg.norm(x, axis=1)[:, None] * np.linalg.norm(flat, axis=1)[None, :]
    return x[(np.abs(proj) > rel * scale).all(axis=1)]


@pytest.mark.parametrize("K", [1, 7, 8, 13, 16, 17, 31, 32, 33, 63, 64])
@pytest.mark.parametrize("L", [1, 3])
def test_codes_match_numpy_oracle(K: int, L: int) -> None:
    rng = np.random.default_rng(K * 10 + L)
    rp = simdex.RandomProjection(dim=24, num_tables=L, hash_bits=K, seed=K)
    x = safe_rows(rng.normal(size=(3000, 24)).astype(np.float32), rp.planes)
    assert len(x) > 300  # several GEMM blocks of 256 rows
    codes = simdex.hash_vectors(x, rp)
    assert codes.dtype == np.uint64 and codes.shape == (len(x), L)
    np.testing.assert_array_equal(codes, oracle_codes(x, rp.planes))
    np.testing.assert_array_equal(rp.hash(x), codes)


@pytest.mark.parametrize("K", [5, 16, 40, 64])
def test_exact_integer_arithmetic_including_zero_projections(K: int) -> None:
    # Small integers: float32 products and sums are exact, so the rule "0 -> bit 0"
    # is tested on real zeros.
    rng = np.random.default_rng(K)
    planes = rng.integers(-2, 3, size=(2, K, 6)).astype(np.float32)
    x = rng.integers(-2, 3, size=(700, 6)).astype(np.float32)
    proj = x @ planes.reshape(2 * K, 6).T
    assert (proj == 0).sum() > 100
    np.testing.assert_array_equal(simdex.hash_vectors(x, planes), oracle_codes(x, planes))


def test_bit_order_documented_example() -> None:
    planes = np.array([[[1, 0], [0, 1], [-1, 0]]], dtype=np.float32)  # L=1, K=3
    x = np.array([[2, -1], [-1, 3], [0, 0], [1, 1]], dtype=np.float32)
    # bit0: x0 > 0, bit1: x1 > 0, bit2: -x0 > 0
    assert simdex.hash_vectors(x, planes)[:, 0].tolist() == [0b001, 0b110, 0, 0b011]


def test_planes_are_numpy_default_rng() -> None:
    rp = simdex.RandomProjection(dim=7, num_tables=3, hash_bits=5, seed=42)
    expect = np.random.default_rng(42).standard_normal((15, 7), dtype=np.float32)
    np.testing.assert_array_equal(rp.planes.reshape(15, 7), expect)
    assert rp.planes.dtype == np.float32 and rp.planes.shape == (3, 5, 7)
    assert not rp.planes.flags.writeable
    # Fewer tables with the same seed are a prefix (tables nest).
    small = simdex.RandomProjection(dim=7, num_tables=2, hash_bits=5, seed=42)
    np.testing.assert_array_equal(small.planes, rp.planes[:2])
    other = simdex.RandomProjection(dim=7, num_tables=3, hash_bits=5, seed=43)
    assert not np.array_equal(other.planes, rp.planes)


def test_thread_count_and_float64_input_do_not_change_codes() -> None:
    rng = np.random.default_rng(1)
    rp = simdex.RandomProjection(dim=32, num_tables=8, hash_bits=20, seed=3)
    x = rng.normal(size=(2000, 32))
    a = simdex.hash_vectors(x, rp, num_threads=1)
    b = simdex.hash_vectors(x, rp, num_threads=2)
    c = simdex.hash_vectors(x.astype(np.float32), rp, num_threads=2)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    one = simdex.hash_vectors(x[5], rp)
    assert one.shape == (8,)


def test_hash_bad_input() -> None:
    rp = simdex.RandomProjection(dim=4, num_tables=2, hash_bits=3)
    with pytest.raises(ValueError, match="dimension"):
        simdex.hash_vectors(np.ones((2, 5)), rp)
    with pytest.raises(ValueError, match="NaN"):
        simdex.hash_vectors(np.array([[1, np.nan, 0, 0]]), rp)
    with pytest.raises(ValueError, match="infinity"):
        simdex.hash_vectors(np.array([[1, np.inf, 0, 0]]), rp)
    with pytest.raises(TypeError):
        simdex.hash_vectors(np.array([["a", "b", "c", "d"]]), rp)
    with pytest.raises(ValueError, match="shape"):
        simdex.hash_vectors(np.ones((2, 4)), np.ones((6, 4)))
    with pytest.raises(ValueError, match="64"):
        simdex.hash_vectors(np.ones((2, 4)), np.ones((1, 65, 4)))
    with pytest.raises(ValueError, match="hash_bits"):
        simdex.RandomProjection(4, 2, 65)
    with pytest.raises(ValueError, match="num_tables"):
        simdex.RandomProjection(4, 0, 8)
    with pytest.raises(TypeError):
        simdex.RandomProjection(4, 2.5, 8)


@pytest.mark.parametrize("K", [1, 3, 8, 10])
def test_probe_masks_in_increasing_summed_margin(K: int) -> None:
    rng = np.random.default_rng(K)
    margins = rng.random(K).astype(np.float32)
    n_all = 2**K
    masks = core().lsh_probe_masks(margins, n_all + 5)
    assert len(masks) == n_all and masks[0] == 0
    assert len(set(masks.tolist())) == n_all  # every bucket once

    def score(m: int) -> float:
        return float(sum(margins[j] for j in range(K) if m >> j & 1))

    got = np.array([score(int(m)) for m in masks])
    oracle = np.sort([score(m) for m in range(n_all)])
    np.testing.assert_allclose(got, oracle, rtol=0, atol=1e-5)
    # A prefix of a longer sequence is the shorter sequence (probes nest).
    for p in (1, 2, 5):
        np.testing.assert_array_equal(core().lsh_probe_masks(margins, p), masks[:p])


def test_probe_masks_brute_force_small_example() -> None:
    margins = np.array([0.5, 0.1, 0.3], dtype=np.float32)
    masks = core().lsh_probe_masks(margins, 8).tolist()
    # scores: {}=0, {1}=.1, {2}=.3, {1,2}=.4, {0}=.5, {0,1}=.6, {0,2}=.8, {0,1,2}=.9
    assert masks == [0, 0b010, 0b100, 0b110, 0b001, 0b011, 0b101, 0b111]
    assert list(itertools.islice(masks, 1)) == [0]
