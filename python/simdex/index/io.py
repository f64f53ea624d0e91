"""Versioned, checksummed, atomically written container files.

Layout of a simdex file (all integers little-endian)::

    magic      8 bytes   b"SIMDEX\\x00\\x01"
    version    uint32    format version (FORMAT_VERSION)
    kind_len   uint32    length of the kind string
    kind       bytes     UTF-8 name of what is stored ("ExactIndex", "LSHIndex", ...)
    meta_len   uint64    length of the JSON metadata
    meta       bytes     UTF-8 JSON: {"params": {...}, "arrays": [{name, dtype, shape, offset, nbytes}]}
    payload    bytes     the arrays' raw C-order bytes, at the offsets given in meta
    sha256     32 bytes  digest of everything before it

Writes go to a temporary file in the target directory, are fsync'ed and then
renamed over the target, so a crash or a full disk never destroys the previous
file. Reads verify size, magic, version and checksum before parsing anything,
and raise :class:`CorruptFileError` (a ``ValueError``) on any mismatch.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
import tempfile
from collections.abc import Iterator, Mapping
from typing import IO, Any

import numpy as np

MAGIC = b"SIMDEX\x00\x01"
FORMAT_VERSION = 1
_DIGEST = 32
_ALLOWED_DTYPES = {"float32", "float64", "int64", "uint64", "int32", "uint32", "uint8", "bool"}


class CorruptFileError(ValueError):
    """A file is truncated, corrupted, of a newer format, or not a simdex file."""


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    """Open a binary file that replaces ``path`` only if the block succeeds.

    The data goes to a temporary file next to ``path``; on success it is
    flushed, fsync'ed and renamed over ``path``. On any exception the temporary
    file is removed and ``path`` is left exactly as it was.

    Args:
        path: Destination file.

    Yields:
        A writable binary file object.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"directory does not exist: {directory!r}")
    fd, tmp = tempfile.mkstemp(prefix=".simdex-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename durable where the OS allows it
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def _container_chunks(
    kind: str, params: Mapping[str, Any], arrays: Mapping[str, np.ndarray]
) -> list[bytes | memoryview]:
    """Header and array bytes of a container (the SHA-256 digest follows them)."""
    specs = []
    offset = 0
    prepared = []
    for name, arr in arrays.items():
        arr = np.ascontiguousarray(arr)
        if arr.dtype.name not in _ALLOWED_DTYPES:
            raise TypeError(f"array {name!r} has unsupported dtype {arr.dtype}")
        arr = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
        specs.append(
            {
                "name": name,
                "dtype": arr.dtype.name,
                "shape": list(arr.shape),
                "offset": offset,
                "nbytes": arr.nbytes,
            }
        )
        offset += arr.nbytes
        prepared.append(arr)
    meta = json.dumps({"params": dict(params), "arrays": specs}, sort_keys=True).encode("utf-8")
    kind_b = kind.encode("utf-8")
    header = (
        MAGIC + struct.pack("<II", FORMAT_VERSION, len(kind_b)) + kind_b + struct.pack("<Q", len(meta)) + meta
    )
    return [header, *(a.reshape(-1).view(np.uint8).data for a in prepared)]


def write_container(
    path: str | os.PathLike[str],
    kind: str,
    params: Mapping[str, Any],
    arrays: Mapping[str, np.ndarray],
) -> None:
    """Write ``params`` (JSON-serialisable) and ``arrays`` atomically to ``path``."""
    chunks = _container_chunks(kind, params, arrays)
    digest = hashlib.sha256()
    with atomic_writer(path) as f:
        for chunk in chunks:
            digest.update(chunk)
            f.write(chunk)
        f.write(digest.digest())


def pack_container(kind: str, params: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> bytes:
    """The bytes :func:`write_container` would write (to nest a container inside another file)."""
    chunks = _container_chunks(kind, params, arrays)
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return b"".join([*(bytes(c) for c in chunks), digest.digest()])


def read_container(path: str | os.PathLike[str]) -> tuple[str, dict[str, Any], dict[str, np.ndarray]]:
    """Read a file written by :func:`write_container`.

    Returns:
        ``(kind, params, arrays)``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CorruptFileError: the file is truncated, corrupted or not a simdex file.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    return unpack_container(data, os.path.basename(path))


def unpack_container(
    data: bytes, name: str = "container"
) -> tuple[str, dict[str, Any], dict[str, np.ndarray]]:
    """Parse container bytes (:func:`pack_container`); ``name`` appears in error messages.

    Raises:
        CorruptFileError: truncated, corrupted or not a simdex container.
    """
    min_size = len(MAGIC) + 8 + 8 + _DIGEST
    if len(data) < min_size or data[: len(MAGIC)] != MAGIC:
        raise CorruptFileError(f"{name!r} is not a simdex file (bad magic or too short: {len(data)} bytes)")
    body, stored = data[:-_DIGEST], data[-_DIGEST:]
    if hashlib.sha256(body).digest() != stored:
        raise CorruptFileError(f"{name!r} is corrupted or truncated (checksum mismatch)")
    pos = len(MAGIC)
    version, kind_len = struct.unpack_from("<II", body, pos)
    pos += 8
    if version > FORMAT_VERSION:
        raise CorruptFileError(
            f"{name!r} uses format version {version}; this simdex reads up to "
            f"{FORMAT_VERSION}; upgrade simdex"
        )
    try:
        kind = body[pos : pos + kind_len].decode("utf-8")
        pos += kind_len
        (meta_len,) = struct.unpack_from("<Q", body, pos)
        pos += 8
        meta = json.loads(body[pos : pos + meta_len].decode("utf-8"))
        pos += meta_len
        payload = memoryview(body)[pos:]
        arrays: dict[str, np.ndarray] = {}
        for spec in meta["arrays"]:
            if spec["dtype"] not in _ALLOWED_DTYPES:
                raise ValueError(f"dtype {spec['dtype']!r}")
            dtype = np.dtype(spec["dtype"]).newbyteorder("<")
            shape = tuple(int(s) for s in spec["shape"])
            start, nbytes = int(spec["offset"]), int(spec["nbytes"])
            if start < 0 or start + nbytes > len(payload) or nbytes != int(np.prod(shape)) * dtype.itemsize:
                raise ValueError(f"array {spec['name']!r} out of bounds")
            arrays[spec["name"]] = (
                np.frombuffer(payload[start : start + nbytes], dtype=dtype).reshape(shape).copy()
            )
        params = meta["params"]
        if not isinstance(params, dict):
            raise ValueError("params is not a mapping")
    except (ValueError, KeyError, TypeError, struct.error, UnicodeDecodeError) as e:
        raise CorruptFileError(f"{name!r} has a malformed header: {e}") from e
    return kind, params, arrays
