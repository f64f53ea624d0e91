"""Forging and mutating simdex container files, for the hostile-file tests and the fuzzers.

A forged file has a *valid* checksum, so it gets past the integrity check and
exercises the validation behind it. Nothing here imports simdex: the format is
re-implemented from its documentation (``simdex`` container layout), so a bug in
the library's reader cannot hide in a shared helper.
"""

from __future__ import annotations

import copy
import hashlib
import json
import struct
from typing import Any

import numpy as np

MAGIC = b"SIMDEX\x00\x01"


def parse(data: bytes) -> tuple[int, bytes, dict[str, Any], bytes]:
    """Split a valid container into (version, kind, meta, payload)."""
    body = data[:-32]
    pos = len(MAGIC)
    version, kind_len = struct.unpack_from("<II", body, pos)
    pos += 8
    kind = body[pos : pos + kind_len]
    pos += kind_len
    (meta_len,) = struct.unpack_from("<Q", body, pos)
    pos += 8
    meta = json.loads(body[pos : pos + meta_len])
    return version, kind, meta, body[pos + meta_len :]


def forge(
    kind: bytes | str,
    meta: dict[str, Any] | bytes,
    payload: bytes,
    *,
    version: int = 1,
    kind_len: int | None = None,
    meta_len: int | None = None,
) -> bytes:
    """Build a container with a valid checksum; header lengths may lie on request."""
    kind_b = kind.encode() if isinstance(kind, str) else kind
    meta_b = meta if isinstance(meta, bytes) else json.dumps(meta, allow_nan=True).encode()
    head = MAGIC + struct.pack("<II", version, len(kind_b) if kind_len is None else kind_len) + kind_b
    head += struct.pack("<Q", len(meta_b) if meta_len is None else meta_len) + meta_b
    body = head + payload
    return body + hashlib.sha256(body).digest()


def container(kind: str, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> bytes:
    """A well-formed container of ``arrays`` laid out back to back."""
    specs, chunks, off = [], [], 0
    for name, a in arrays.items():
        a = np.ascontiguousarray(a)
        specs.append(
            {"name": name, "dtype": a.dtype.name, "shape": list(a.shape), "offset": off, "nbytes": a.nbytes}
        )
        chunks.append(a.tobytes())
        off += a.nbytes
    return forge(kind, {"params": params, "arrays": specs}, b"".join(chunks))


# ----------------------------------------------------------------------------- mutations
HOSTILE_VALUES: list[Any] = [
    -1,
    0,
    1,
    2,
    63,
    64,
    65,
    4096,
    4097,
    2**31,
    2**32,
    2**63 - 1,
    2**63,
    2**64,
    -(2**63),
    10**30,
    1e999,
    -1e999,
    float("nan"),
    0.5,
    -0.0,
    1e308,
    True,
    False,
    None,
    "",
    "x",
    "cosine",
    "l2",
    "\udcff",
    [],
    {},
    [1],
    [-1, 4],
    [0, 0],
    [2**62, 2**62],
    {"a": 1},
    "int64",
    "float32",
    "object",
    "<f4",
    "|O",
]


def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, prefix + (i,))
    return out


def _set(obj: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    cur = obj
    for p in path[:-1]:
        cur = cur[p]
    cur[path[-1]] = value
    return obj


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """One random mutation of a valid container, re-signed unless it is a raw one."""
    version, kind, meta, payload = parse(data)
    op = int(rng.integers(12))
    if op == 0:  # raw byte flips, checksum left stale (must be caught by the checksum)
        b = bytearray(data)
        for _ in range(int(rng.integers(1, 8))):
            b[int(rng.integers(len(b)))] ^= 1 << int(rng.integers(8))
        return bytes(b)
    if op == 1:  # truncation
        return data[: int(rng.integers(len(data)))]
    if op == 2:  # flips in the payload, re-signed
        b = bytearray(payload)
        if b:
            for _ in range(int(rng.integers(1, 8))):
                b[int(rng.integers(len(b)))] = int(rng.integers(256))
        return forge(kind, meta, bytes(b), version=version)
    if op == 3:  # NaN / inf / huge values written into float payload bytes
        b = bytearray(payload)
        if len(b) >= 4:
            pos = int(rng.integers(len(b) - 3)) // 4 * 4
            b[pos : pos + 4] = struct.pack(
                "<f", [float("nan"), float("inf"), -3e38, 1e-45][int(rng.integers(4))]
            )
        return forge(kind, meta, bytes(b), version=version)
    if op == 4:  # lying header lengths
        kind_lens = [0, len(kind) + 1, 2**31, 2**32 - 1]
        meta_lens = [0, 1, 2**40, 2**64 - 1]
        return forge(
            kind,
            meta,
            payload,
            version=version,
            kind_len=kind_lens[int(rng.integers(4))] if rng.random() < 0.5 else None,
            meta_len=meta_lens[int(rng.integers(4))] if rng.random() < 0.5 else None,
        )
    if op == 5:  # other kind / version / bad UTF-8
        kinds = [
            b"ExactIndex",
            b"LSHIndex",
            b"SimilarityModel",
            b"NearDuplicateFinder",
            b"\xff\xfe",
            b"Index",
        ]
        return forge(kinds[int(rng.integers(len(kinds)))], meta, payload, version=int(rng.integers(3)))
    if op == 6:  # deep nesting somewhere in the header (written as text: json.dumps would recurse)
        m = copy.deepcopy(meta)
        paths = _paths(m)
        depth = [50, 5000, 100000][int(rng.integers(3))]
        raw = json.dumps(_set(m, paths[int(rng.integers(len(paths)))], "__NEST__")).encode()
        return forge(kind, raw.replace(b'"__NEST__"', b"[" * depth + b"0" + b"]" * depth), payload)
    if op == 7:  # meta that is not JSON / not UTF-8
        raw = json.dumps(meta).encode()
        cut = int(rng.integers(len(raw)))
        return forge(kind, raw[:cut] + bytes([int(rng.integers(128, 256))]) + raw[cut + 1 :], payload)
    # ops 8-11: structured header-field mutation (the most productive kind)
    m = copy.deepcopy(meta)
    paths = [p for p in _paths(m) if p]
    for _ in range(int(rng.integers(1, 3))):
        p = paths[int(rng.integers(len(paths)))]
        v = HOSTILE_VALUES[int(rng.integers(len(HOSTILE_VALUES)))]
        if isinstance(v, str) and v == "\udcff":
            raw = json.dumps(m).encode()
            return forge(kind, raw.replace(b'"params"', b'"par\xffams"', 1), payload)
        try:
            _set(m, p, copy.deepcopy(v))
        except (KeyError, IndexError, TypeError):
            pass
        paths = [p for p in _paths(m) if p]
    if rng.random() < 0.2:  # drop a key
        d = m.get("params") if isinstance(m.get("params"), dict) else m
        if isinstance(d, dict) and d:
            d.pop(list(d)[int(rng.integers(len(d)))])
    return forge(kind, m, payload, version=version)
