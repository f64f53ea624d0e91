"""Memory-mapped loading (issue 14, item 2): same answers, shared pages, read-only."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import simdex


def _saved(tmp_path, n=3000, d=32, metric="cosine"):
    rng = np.random.default_rng(0)
    index = simdex.ExactIndex(d, metric=metric)
    index.add(rng.standard_normal((n, d)), ids=rng.permutation(5 * n)[:n])
    path = tmp_path / "idx.simdex"
    index.save(path)
    return index, path


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2", "sql2"])
def test_mmap_load_equals_normal_load(tmp_path, metric):
    index, path = _saved(tmp_path, metric=metric)
    mapped = simdex.load_index(path, mmap=True)
    normal = simdex.load_index(path)
    assert mapped.is_mapped and not normal.is_mapped
    assert (len(mapped), mapped.dim, mapped.metric) == (len(normal), normal.dim, normal.metric)
    q = np.random.default_rng(1).standard_normal((9, 32)).astype(np.float32)
    for a, b in zip(mapped.search(q, 7), normal.search(q, 7)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(mapped.search(q[0], 7), normal.search(q[0], 7)):  # single query (GEMV)
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    for a, b in zip(mapped.range_search(q, 0.9), normal.range_search(q, 0.9)):
        np.testing.assert_array_equal(a, b)
    ids = normal.ids[:5]
    np.testing.assert_array_equal(mapped.get_vectors(ids), normal.get_vectors(ids))
    assert mapped.contains(ids).all()
    np.testing.assert_array_equal(mapped.search(q, 3, filter=ids)[1], normal.search(q, 3, filter=ids)[1])
    mapped.verify()
    np.testing.assert_array_equal(mapped.ids, normal.ids)
    np.testing.assert_array_equal(mapped.get_vectors(mapped.ids), normal.get_vectors(mapped.ids))


def test_mapped_index_is_read_only_and_copies_are_writable(tmp_path):
    _, path = _saved(tmp_path, n=50)
    mapped = simdex.load_index(path, mmap=True)
    for write in (lambda: mapped.add(np.ones(32)), lambda: mapped.remove(mapped.ids[:1]), mapped.reset):
        with pytest.raises(ValueError, match="read-only"):
            write()
    assert len(mapped) == 50
    twin = copy.copy(mapped)
    assert not twin.is_mapped
    twin.add(np.ones(32))
    assert len(twin) == 51 and len(mapped) == 50


def test_verify_finds_what_mmap_deferred(tmp_path):
    _, path = _saved(tmp_path, n=50)
    data = bytearray(path.read_bytes())
    data[-40] ^= 0xFF  # inside the ids array: the checksum no longer matches
    path.write_bytes(bytes(data))
    mapped = simdex.load_index(path, mmap=True)  # header is fine, so the map opens
    with pytest.raises(simdex.CorruptFileError, match="checksum"):
        mapped.verify()
    with pytest.raises(simdex.CorruptFileError):
        simdex.load_index(path)


def test_mmap_refusals(tmp_path):
    lsh = simdex.LSHIndex(8)
    lsh.add(np.ones((3, 8)))
    lsh.save(tmp_path / "lsh.simdex")
    with pytest.raises(ValueError, match="ExactIndex"):
        simdex.load_index(tmp_path / "lsh.simdex", mmap=True)
    _, path = _saved(tmp_path, n=10)
    with pytest.raises(ValueError, match="path"):
        simdex.load_index(path.read_bytes(), mmap=True)
    (tmp_path / "bad.simdex").write_bytes(b"SIMDEX\x00\x01" + b"\x00" * 100)
    with pytest.raises(simdex.CorruptFileError):
        simdex.load_index(tmp_path / "bad.simdex", mmap=True)


_CHILD = textwrap.dedent(
    """
    import sys, numpy as np, simdex
    index = simdex.load_index(sys.argv[1], mmap=True)
    index.search(np.ones((2, index.dim), np.float32), 3)  # touches every vector
    print("ready", flush=True)
    sys.stdin.readline()
    """
)


def _mapped_kib(pid: int, path: str) -> dict[str, int]:
    """Rss / Shared_Clean / Private of the mapping of ``path`` in process ``pid`` (KiB)."""
    out: dict[str, int] = {}
    inside = False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            if "-" in line.split(" ", 1)[0] and len(line.split()) >= 5:
                inside = line.rstrip().endswith(path)
                continue
            if inside and line.split(":")[0] in ("Rss", "Shared_Clean", "Private_Clean", "Private_Dirty"):
                key = line.split(":")[0]
                out[key] = out.get(key, 0) + int(line.split()[1])
    return out


def test_two_processes_share_the_pages(tmp_path):
    _, path = _saved(tmp_path, n=40000, d=64)  # ~10 MiB of vectors
    size_kib = os.path.getsize(path) // 1024
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "ready"
        for p in procs:
            m = _mapped_kib(p.pid, str(path))
            assert m.get("Rss", 0) >= 0.9 * size_kib, m  # the vectors are mapped in...
            assert m.get("Shared_Clean", 0) >= 0.9 * size_kib, m  # ...as pages both share
            assert m.get("Private_Dirty", 0) == 0, m
    finally:
        for p in procs:
            p.communicate("\n", timeout=60)
