"""Fuzz every loader with mutations of valid files (fixed seeds, bounded time).

Each case must either load into a usable object or raise ``CorruptFileError``:
no other exception, no crash, no hang. Mutations (see ``_filefuzz.mutate``) include
raw flips (caught by the checksum), truncations, payload changes with a re-signed
checksum (NaN, huge values, random bytes), lying header lengths, and structured
mutations of header fields (numbers at the edges, wrong types, deep nesting, bad
UTF-8, missing keys). ``make fuzz`` runs the same loop for longer
(``bench/fuzz_loaders.py``).
"""

from __future__ import annotations

import io

import numpy as np
import pytest

import simdex
from _filefuzz import mutate

CorruptFileError = simdex.CorruptFileError


def _exact_bytes() -> bytes:
    index = simdex.ExactIndex(6, metric="l2")
    index.add(np.random.default_rng(0).standard_normal((7, 6)), ids=[3, 9, 1, 4, 8, 20, 2])
    return index.to_bytes()


def _lsh_bytes() -> bytes:
    index = simdex.LSHIndex(6, num_tables=3, hash_bits=4, num_probes=2)
    index.add(np.random.default_rng(1).standard_normal((9, 6)))
    index.remove([2])
    return index.to_bytes()


def _use_index(index: simdex.Index) -> None:
    q = np.ones((2, index.dim), np.float32)
    index.search(q, k=3)
    index.range_search(q, 0.5)
    try:
        index.add(np.ones((1, index.dim), np.float32))  # the id counter is sane
    except ValueError as e:
        # A valid but exhausted counter (next_id = 2**63 - 1: ids end at 2**63 - 2).
        assert "no fresh ids left" in str(e) and index._next_id == 2**63 - 1, e
    assert len(index) >= 1


def _check(load, data: bytes, use) -> str:
    try:
        obj = load(data)
    except CorruptFileError:
        return "refused"
    use(obj)
    return "loaded"


@pytest.mark.parametrize("make", [_exact_bytes, _lsh_bytes], ids=["exact", "lsh"])
def test_fuzz_load_index(make):
    valid = make()
    rng = np.random.default_rng(20261129)
    outcomes = {"refused": 0, "loaded": 0}
    for _ in range(4000):
        data = mutate(valid, rng)
        outcomes[_check(simdex.load_index, data, _use_index)] += 1
    assert outcomes["refused"] > 2500 and outcomes["loaded"] > 100, outcomes
    # the file-object path parses the same way
    assert len(simdex.load_index(io.BytesIO(valid))) == len(simdex.load_index(valid))


def test_fuzz_load_index_mmap(tmp_path):
    """Memory-mapped loads defer the checksum and array contents to verify(): a
    mutated file must still never crash a search, and verify() must refuse it or pass."""
    valid = _exact_bytes()
    rng = np.random.default_rng(99)
    path = tmp_path / "m.simdex"
    outcomes = {"refused": 0, "loaded": 0, "verified": 0}
    for _ in range(1500):
        path.write_bytes(mutate(valid, rng))
        try:
            index = simdex.load_index(path, mmap=True)
        except CorruptFileError:
            outcomes["refused"] += 1
            continue
        except ValueError as e:  # a valid file of another kind
            assert "ExactIndex" in str(e)
            continue
        outcomes["loaded"] += 1
        q = np.ones((2, index.dim), np.float32)
        index.search(q, 3)
        index.search(q, 3, filter=[1, 2, 3])
        index.range_search(q, 0.5)
        try:
            index.verify()
            outcomes["verified"] += 1
        except CorruptFileError:
            pass
        del index
    assert outcomes["refused"] > 500 and outcomes["loaded"] > 100, outcomes


def test_fuzz_finder_load(tmp_path):
    from _filefuzz import container
    from simdex.neardup import NearDuplicateFinder

    def embed(x):
        return np.ones((len(x), 6), np.float32) / np.sqrt(6)

    valid = container(
        "NearDuplicateFinder",
        {"format": 1, "batch_size": 8, "labels": '[[1, "a"], [3, 2.5], [4, null]]'},
        {"index_file": np.frombuffer(_exact_bytes(), np.uint8)},
    )
    rng = np.random.default_rng(7)
    path = tmp_path / "f.simdex"
    outcomes = {"refused": 0, "loaded": 0}
    for _ in range(1500):
        path.write_bytes(mutate(valid, rng))
        try:
            finder = NearDuplicateFinder.load(path, embedder=embed)
        except CorruptFileError:
            outcomes["refused"] += 1
            continue
        except ValueError as e:  # an embedder/index size mismatch is the caller's, not corruption
            assert "dim" in str(e)
            continue
        outcomes["loaded"] += 1
        assert len(finder) >= 0
    assert outcomes["refused"] > 800 and outcomes["loaded"] > 20, outcomes


@pytest.mark.slow
def test_fuzz_load_model(tmp_path):
    """The model loader: fewer cases (each load that gets far builds a Keras model)."""
    keras = pytest.importorskip("keras")
    from simdex.models import SimilarityModel

    inputs = keras.Input((4,))
    model = SimilarityModel(inputs, keras.layers.Dense(3)(inputs))
    model.index(np.eye(4, dtype=np.float32), y=np.arange(4))
    model.save(tmp_path / "m.simdex")
    valid = (tmp_path / "m.simdex").read_bytes()
    rng = np.random.default_rng(5)
    path = tmp_path / "x.simdex"
    outcomes = {"refused": 0, "loaded": 0}
    for _ in range(200):
        path.write_bytes(mutate(valid, rng))
        try:
            loaded = simdex.load_model(path)
        except CorruptFileError:
            outcomes["refused"] += 1
            continue
        outcomes["loaded"] += 1
        loaded.lookup(np.eye(4, dtype=np.float32)[:1], k=2)
    assert outcomes["refused"] > 80, outcomes
