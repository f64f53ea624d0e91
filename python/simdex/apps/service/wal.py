"""Write-ahead log: checksummed, length-prefixed records in segment files, group commit.

A log directory holds segment files ``wal-<first lsn, 20 digits>.log``. Each segment
starts with an 16-byte header (``b"SDXWAL01"`` and the uint64 LSN of its first record)
followed by records, all integers little-endian::

    body_len   uint32    length of body
    crc32      uint32    zlib.crc32 of the lsn bytes + body
    lsn        uint64    log sequence number: 1, 2, 3, ... without gaps
    body       bytes     op (uint8) + op-specific data (see :func:`encode_upsert`)

Writers hand :meth:`WriteAheadLog.append_group` several encoded records; they are
written with one ``write`` and made durable with one ``fsync`` (group commit). Only
then are the operations applied and acknowledged.

Reading (:meth:`WriteAheadLog.open`) stops at the first record that is incomplete,
fails its checksum or breaks the LSN sequence *in the last segment*, and truncates the
segment there: that record and anything after it belong to a group whose ``fsync``
never returned, so none of them was acknowledged. The same damage in an earlier
segment (segments are only closed after a successful ``fsync``) is real corruption and
raises :class:`simdex.index.io.CorruptFileError`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from simdex.index.io import CorruptFileError

__all__ = ["WriteAheadLog", "Record", "OP_UPSERT", "OP_DELETE", "encode_upsert", "encode_delete"]

log = logging.getLogger("simdex")

SEGMENT_MAGIC = b"SDXWAL01"
_SEG_HEADER = struct.Struct("<8sQ")
_REC_HEADER = struct.Struct("<IIQ")  # body_len, crc32, lsn
_SEGMENT_RE = re.compile(r"^wal-(\d{20})\.log$")
MAX_RECORD = 1 << 30  # a length above this is damage, not data

OP_UPSERT = 1
OP_DELETE = 2


@dataclass
class Record:
    """One decoded log record.

    Attributes:
        lsn: Its log sequence number.
        op: ``OP_UPSERT`` or ``OP_DELETE``.
        ids: int64 ids, shape (n,).
        vectors: float32 (n, d) for an upsert, None for a delete.
        meta: Per-id ``[label, payload]`` pairs for an upsert (or None), None for a delete.
    """

    lsn: int
    op: int
    ids: np.ndarray
    vectors: np.ndarray | None
    meta: list[Any] | None


def encode_upsert(ids: np.ndarray, vectors: np.ndarray, meta: list[Any] | None) -> bytes:
    """Body of an upsert: ``op, n (uint32), d (uint32), ids (n int64), vectors (n*d float32),
    meta_len (uint32), meta`` (UTF-8 JSON list of ``[label, payload]``, or empty)."""
    n, d = vectors.shape
    meta_bytes = b"" if meta is None else json.dumps(meta, separators=(",", ":")).encode()
    return b"".join(
        (
            struct.pack("<BII", OP_UPSERT, n, d),
            np.ascontiguousarray(ids, "<i8").tobytes(),
            np.ascontiguousarray(vectors, "<f4").tobytes(),
            struct.pack("<I", len(meta_bytes)),
            meta_bytes,
        )
    )


def encode_delete(ids: np.ndarray) -> bytes:
    """Body of a delete: ``op, n (uint32), ids (n int64)``."""
    return struct.pack("<BI", OP_DELETE, len(ids)) + np.ascontiguousarray(ids, "<i8").tobytes()


def _decode(lsn: int, body: bytes) -> Record:
    op = body[0]
    if op == OP_UPSERT:
        _, n, d = struct.unpack_from("<BII", body, 0)
        off = 9
        ids = np.frombuffer(body, "<i8", n, off).astype(np.int64)
        off += 8 * n
        vectors = np.frombuffer(body, "<f4", n * d, off).astype(np.float32).reshape(n, d)
        off += 4 * n * d
        (mlen,) = struct.unpack_from("<I", body, off)
        off += 4
        meta = json.loads(body[off : off + mlen]) if mlen else None
        if off + mlen != len(body):
            raise ValueError("trailing bytes")
        return Record(lsn, op, ids, vectors, meta)
    if op == OP_DELETE:
        _, n = struct.unpack_from("<BI", body, 0)
        if 5 + 8 * n != len(body):
            raise ValueError("length mismatch")
        return Record(lsn, op, np.frombuffer(body, "<i8", n, 5).astype(np.int64), None, None)
    raise ValueError(f"unknown op {op}")


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class WriteAheadLog:
    """An append-only log of index operations in ``directory``.

    Not thread-safe: one writer (the collection's writer thread) calls
    :meth:`append_group` and :meth:`rotate`.

    Args:
        directory: Where the segments live (created if missing).
        fsync: Make every group durable with ``fsync`` before returning (default
            True; False is for tests and benchmarks only and voids the guarantee).
    """

    def __init__(self, directory: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.directory = os.fspath(directory)
        self.fsync = bool(fsync)
        os.makedirs(self.directory, exist_ok=True)
        self._fd: int | None = None
        self.last_lsn = 0
        self.bytes_written = 0  # bytes in live segments
        self.dropped_tail_bytes = 0  # torn tail bytes dropped by the last replay()

    # -- reading ----------------------------------------------------------------------
    def segments(self) -> list[tuple[int, str]]:
        """``(first lsn, path)`` of every segment, oldest first."""
        out = []
        for name in os.listdir(self.directory):
            m = _SEGMENT_RE.match(name)
            if m:
                out.append((int(m.group(1)), os.path.join(self.directory, name)))
        return sorted(out)

    def replay(self, after_lsn: int = 0) -> Iterator[Record]:
        """Yield the records with ``lsn > after_lsn``, repairing a torn tail.

        After the generator is exhausted the log is open for appending at the
        next LSN (``last_lsn + 1``).

        Raises:
            CorruptFileError: damage anywhere but at the end of the last segment,
                or a gap in the LSN sequence between segments.
        """
        segs = self.segments()
        tail_path: str | None = None
        expected: int | None = None
        self.bytes_written = 0
        self.dropped_tail_bytes = 0
        self.last_lsn = after_lsn
        for i, (first, path) in enumerate(segs):
            last_segment = i == len(segs) - 1
            with open(path, "rb") as f:
                data = f.read()
            if last_segment and len(data) < _SEG_HEADER.size:
                os.unlink(path)  # a crash while the segment was being created
                tail_path = None
                break
            tail_path = path
            good_end, records = self._scan(path, data, first)
            if good_end < len(data):
                if not last_segment:
                    raise CorruptFileError(
                        f"write-ahead log segment {path!r} is damaged at byte {good_end} of {len(data)}, "
                        "and it is not the last segment"
                    )
                self.dropped_tail_bytes = len(data) - good_end
                log.warning(
                    "write-ahead log %s: dropping a torn tail of %d bytes (never acknowledged)",
                    path,
                    len(data) - good_end,
                )
                with open(path, "r+b") as f:
                    f.truncate(good_end)
                    f.flush()
                    os.fsync(f.fileno())
            for rec in records:
                if expected is not None and rec.lsn != expected:
                    raise CorruptFileError(
                        f"write-ahead log has a gap: expected lsn {expected}, found {rec.lsn} in {path!r}"
                    )
                expected = rec.lsn + 1
                if rec.lsn > after_lsn:
                    self.last_lsn = rec.lsn
                    yield rec
            if not records and expected is None:
                expected = first
            self.bytes_written += good_end
        if expected is not None and expected - 1 > self.last_lsn:
            self.last_lsn = expected - 1
        if tail_path is not None:
            self._fd = os.open(tail_path, os.O_WRONLY | os.O_APPEND)
        if expected is not None and after_lsn >= expected:
            # The snapshot is newer than the whole log (crash after snapshot, before
            # rotation): start a fresh segment so LSNs stay contiguous.
            self.rotate(after_lsn)

    def _scan(self, path: str, data: bytes, first: int) -> tuple[int, list[Record]]:
        if len(data) < _SEG_HEADER.size:
            return 0, []
        magic, seg_first = _SEG_HEADER.unpack_from(data, 0)
        if magic != SEGMENT_MAGIC or seg_first != first:
            raise CorruptFileError(f"{path!r} is not a simdex write-ahead log segment (bad header)")
        off = _SEG_HEADER.size
        records: list[Record] = []
        expected = first
        while off + _REC_HEADER.size <= len(data):
            body_len, crc, lsn = _REC_HEADER.unpack_from(data, off)
            end = off + _REC_HEADER.size + body_len
            if body_len == 0 or body_len > MAX_RECORD or end > len(data) or lsn != expected:
                break
            body = data[off + _REC_HEADER.size : end]
            if zlib.crc32(body, zlib.crc32(struct.pack("<Q", lsn))) != crc:
                break
            try:
                records.append(_decode(lsn, body))
            except (ValueError, IndexError, struct.error):
                break
            expected += 1
            off = end
        return off, records

    # -- writing ----------------------------------------------------------------------
    def rotate(self, last_lsn: int) -> None:
        """Start a new segment whose first record will be ``last_lsn + 1``.

        Segments holding only records ``<= last_lsn`` are deleted afterwards by
        :meth:`drop_through`.
        """
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        first = last_lsn + 1
        path = os.path.join(self.directory, f"wal-{first:020d}.log")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        os.write(fd, _SEG_HEADER.pack(SEGMENT_MAGIC, first))
        if self.fsync:
            os.fsync(fd)
            _fsync_dir(self.directory)
        self._fd = fd
        self.last_lsn = last_lsn
        self.bytes_written += _SEG_HEADER.size

    def drop_through(self, lsn: int) -> None:
        """Delete every segment whose records all have ``lsn <=`` the given one."""
        segs = self.segments()
        self.bytes_written = 0
        for i, (_first, path) in enumerate(segs):
            nxt = segs[i + 1][0] if i + 1 < len(segs) else None
            if nxt is not None and nxt - 1 <= lsn:
                os.unlink(path)
            else:
                self.bytes_written += os.path.getsize(path)

    def append_group(self, bodies: list[bytes]) -> int:
        """Append records with consecutive LSNs, then one ``fsync``.

        Args:
            bodies: Encoded bodies (:func:`encode_upsert`, :func:`encode_delete`).

        Returns:
            The LSN of the last record written.
        """
        if self._fd is None:
            self.rotate(self.last_lsn)
        assert self._fd is not None
        parts = []
        lsn = self.last_lsn
        for body in bodies:
            lsn += 1
            crc = zlib.crc32(body, zlib.crc32(struct.pack("<Q", lsn)))
            parts.append(_REC_HEADER.pack(len(body), crc, lsn))
            parts.append(body)
        data = b"".join(parts)
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        if self.fsync:
            os.fdatasync(self._fd) if hasattr(os, "fdatasync") else os.fsync(self._fd)
        self.last_lsn = lsn
        self.bytes_written += len(data)
        return lsn

    def close(self) -> None:
        """Close the open segment (the log stays on disk)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
