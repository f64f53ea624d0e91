"""A durable collection: a :class:`simdex.index.collection.Collection` (an index plus
labels and payloads by id) behind a write-ahead log and snapshots.

Durability contract (with a data directory; see also the README's "Service" section):

* An add/replace/remove is acknowledged (the call returns, or the HTTP reply is sent)
  only after its log record is written and ``fsync``'ed. After a crash (process kill,
  power loss on a file system that honours ``fsync``) every acknowledged operation is
  present after restart, in acknowledgement order, with its exact float32 vector,
  label and payload.
* An operation that was not acknowledged is either fully applied or not at all: its
  record is checksummed, and a torn or damaged final record is dropped on restart.
  (An operation whose reply was lost in a crash *after* its ``fsync`` may be present.)
* A rejected operation (4xx) writes nothing.
* A snapshot is one atomic container write (temporary file, ``fsync``, rename) of the
  collection's state (index, labels, payloads) and the log sequence number (LSN) it
  includes; only after it is complete is the log up to that LSN deleted. Restart loads
  the snapshot and replays the log records with a larger LSN. Replay applies upserts
  and removals idempotently, so a crash anywhere between the snapshot and the log
  truncation loses nothing and applies nothing twice in effect.
* Without a data directory nothing is durable between explicit snapshots.

Concurrency: one writer thread applies writes in groups (one ``fsync`` per group);
searches run on other threads and are never blocked by writes for longer than one
native add/remove (the native store's reader-writer lock).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

import numpy as np

from simdex._validate import as_matrix
from simdex.apps.service.wal import OP_DELETE, OP_UPSERT, WriteAheadLog, encode_delete, encode_upsert
from simdex.index import Index, knn, load_index
from simdex.index.collection import Collection
from simdex.index.io import CorruptFileError, read_container, write_container

__all__ = ["DurableCollection", "UnknownIdError", "IdConflictError", "SNAPSHOT_KIND"]

log = logging.getLogger("simdex")

MAX_ID = (1 << 63) - 1
# Largest |component| the service accepts: with it every norm stays below 2**63 for
# any d < 8.5e7, so inner products and squared distances stay finite in float32
# (larger values overflow and give infinite or meaningless distances).
MAX_ABS = 1e15


def as_vectors(x: Any, name: str, dim: int) -> np.ndarray:
    """The index's own checks (shape, dimension, dtype, NaN/inf) plus the
    :data:`MAX_ABS` bound; returns C-contiguous float32 (n, dim)."""
    out, _ = as_matrix(x, name, dim=dim)
    big = np.abs(out) > MAX_ABS
    if big.any():
        r, c = np.argwhere(big)[0]
        raise ValueError(
            f"{name} has {float(out[r, c]):.3g} at row {r}, column {c}; values must lie within "
            f"+-{MAX_ABS:g} so that distances stay finite in float32 (scale the vectors down)"
        )
    return out


SNAPSHOT_KIND = "ServiceSnapshot"  # container kind: a Collection's state plus the LSN it includes
SNAPSHOT_NAME = "snapshot.simdex"


class UnknownIdError(KeyError):
    """An id is not in the collection."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the sentence readable
        return str(self.args[0]) if self.args else "unknown id"


class IdConflictError(ValueError):
    """An id given to a plain add is already present."""


def _check_ids(ids: Any, n: int | None = None) -> np.ndarray:
    arr = np.asarray(ids)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"ids must be integers, got dtype {arr.dtype}")
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"ids must be a non-empty 1-D list, got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"got {n} vectors but {arr.shape[0]} ids")
    if arr.dtype.kind == "u" and arr.max() > MAX_ID:
        raise ValueError(f"ids must be <= {MAX_ID}")
    out = np.ascontiguousarray(arr, dtype=np.int64)
    if out.min() < 0:
        raise ValueError(f"ids must be >= 0, got {int(out.min())}")
    if np.unique(out).size != out.size:
        vals, counts = np.unique(out, return_counts=True)
        raise ValueError(f"id {int(vals[counts > 1][0])} appears more than once in one request")
    return out


def search_supports_filter(index: Index) -> bool:
    """Whether ``index.search`` takes a ``filter`` (an allow-list of ids) itself."""
    import inspect

    try:
        return "filter" in inspect.signature(index.search).parameters
    except (TypeError, ValueError):
        return False


def filtered_search(index: Index, q: np.ndarray, k: int, allow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """k nearest neighbours of each query among the ids in ``allow`` only.

    Uses the index's own ``filter`` when its ``search`` has one; otherwise an exact
    search over the allowed vectors (``simdex.knn``), which is exact for every index
    kind and costs O(len(allow) * d) per query. Unknown ids in ``allow`` are ignored.
    """
    if search_supports_filter(index):
        search: Any = index.search  # a backend whose search takes filter=
        return search(q, k, filter=allow)
    allowed = np.unique(allow)  # ascending, so row-order ties break by smaller id
    allowed = allowed[np.asarray(index.contains(allowed), dtype=bool)] if allowed.size else allowed
    nq = q.shape[0]
    if allowed.size == 0:
        return np.full((nq, k), np.inf, np.float32), np.full((nq, k), -1, np.int64)
    vecs = index.get_vectors(allowed)
    D, rows = knn(q, vecs, k=k, metric=index.metric)
    ids = np.where(rows >= 0, allowed[np.maximum(rows, 0)], -1)
    return D, ids


class _WriteOp:
    __slots__ = ("kind", "ids", "vectors", "meta", "replace", "future")

    def __init__(
        self, kind: str, ids: np.ndarray, vectors: np.ndarray | None, meta: list | None, replace: bool
    ):
        self.kind = kind
        self.ids = ids
        self.vectors = vectors
        self.meta = meta
        self.replace = replace
        self.future: Future = Future()


class DurableCollection:
    """A :class:`simdex.index.collection.Collection` (index, labels, data by id) made
    durable by a write-ahead log and snapshots, with one writer thread.

    Use :meth:`open` to start from a data directory (durable); the constructor wraps
    a collection or index in memory (writes are lost unless :meth:`snapshot` is called
    with ``snapshot_path`` set).

    Args:
        target: A ``Collection`` or an index (wrapped in a new ``Collection``).
        snapshot_path: Where :meth:`snapshot` saves when there is no data directory.
        max_group: Most write operations committed with one ``fsync``.

    Example:
        >>> import numpy as np
        >>> from simdex.index import ExactIndex
        >>> c = DurableCollection(ExactIndex(dim=3))
        >>> c.add([1, 2], np.eye(3)[:2], labels=["a", "b"])  # the operation's log sequence number
        1
        >>> c.get([2])[0]["label"]
        'b'
        >>> c.close()
    """

    def __init__(
        self,
        target: Collection | Index,
        *,
        snapshot_path: str | os.PathLike[str] | None = None,
        max_group: int = 256,
    ) -> None:
        if isinstance(target, Index):
            target = Collection(target)
        if not isinstance(target, Collection) or target.index is None:
            raise TypeError(
                f"expected a simdex Index or a Collection with an index, got {type(target).__name__}"
            )
        self.collection = target
        self.data_dir: str | None = None
        self.snapshot_path = None if snapshot_path is None else os.fspath(snapshot_path)
        self.wal: WriteAheadLog | None = None
        self.lsn = 0  # last applied (and durable) operation
        self.snapshot_lsn = 0
        self.max_group = int(max_group)
        self._queue: queue.Queue = queue.Queue()
        self._writer: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._closed = False
        self.write_groups = 0
        self.last_snapshot_time: float | None = None

    @property
    def index(self) -> Index:
        """The served index."""
        index = self.collection.index
        assert index is not None
        return index

    # -- opening ------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        data_dir: str | os.PathLike[str],
        base: str | os.PathLike[str] | Collection | Index | None = None,
        *,
        fsync: bool = True,
        max_group: int = 256,
    ) -> DurableCollection:
        """Open a durable collection: load the snapshot in ``data_dir`` (or ``base``
        when there is none yet) and replay the write-ahead log.

        Args:
            data_dir: Directory for the snapshot and the log (created if missing).
            base: The starting point (a file written by ``Index.save`` or by a
                snapshot, an index or a collection), used only while ``data_dir``
                holds no snapshot.
            fsync: False voids the durability guarantee (tests, benchmarks).
            max_group: Most write operations per group commit.

        Raises:
            FileNotFoundError: no snapshot and no ``base``.
            CorruptFileError: a damaged snapshot or log (other than a torn final record).
        """
        data_dir = os.fspath(data_dir)
        os.makedirs(data_dir, exist_ok=True)
        snap_path = os.path.join(data_dir, SNAPSHOT_NAME)
        snap_lsn = 0
        if os.path.exists(snap_path):
            collection, snap_lsn = _read_snapshot(snap_path)
        elif base is None:
            raise FileNotFoundError(f"{data_dir!r} holds no snapshot yet; pass the starting index as base")
        else:
            collection, _ = load_collection(base)
        self = cls(collection, max_group=max_group)
        self.data_dir = data_dir
        self.wal = WriteAheadLog(data_dir, fsync=fsync)
        self.lsn = self.snapshot_lsn = snap_lsn
        replayed = 0
        for rec in self.wal.replay(after_lsn=snap_lsn):
            self._apply(rec.op, rec.ids, rec.vectors, rec.meta)
            self.lsn = rec.lsn
            replayed += 1
        self.lsn = max(self.lsn, self.wal.last_lsn)
        if replayed:
            log.info("replayed %d write-ahead log records (lsn %d..%d)", replayed, snap_lsn + 1, self.lsn)
        return self

    # -- writer thread ------------------------------------------------------------------
    def _ensure_writer(self) -> None:
        if self._closed:
            raise RuntimeError("the collection is closed")
        if self._writer is None:
            with self._start_lock:
                if self._closed:
                    raise RuntimeError("the collection is closed")
                if self._writer is None:
                    self._writer = threading.Thread(
                        target=self._write_loop, name="simdex-writer", daemon=True
                    )
                    self._writer.start()

    def _write_loop(self) -> None:
        try:
            self._write_loop_inner()
        except BaseException:  # a bug here must not leave writers waiting forever
            log.exception("simdex writer thread stopped")
            self._closed = True
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                fut = item.future if isinstance(item, _WriteOp) else item[0] if item is not None else None
                if fut is not None and fut.set_running_or_notify_cancel():
                    fut.set_exception(RuntimeError("the writer thread stopped; see the log"))
            raise

    def _write_loop_inner(self) -> None:
        carry = None
        while True:
            item = carry if carry is not None else self._queue.get()
            carry = None
            if item is None:
                return
            if not isinstance(item, _WriteOp):  # a snapshot request: (future,)
                fut = item[0]
                if not fut.set_running_or_notify_cancel():
                    continue
                try:
                    fut.set_result(self._snapshot_now())
                except BaseException as e:  # noqa: BLE001 - handed to the caller
                    fut.set_exception(e)
                continue
            group = [item]
            while len(group) < self.max_group:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if not isinstance(nxt, _WriteOp):
                    carry = nxt  # a snapshot or the stop mark: after this group, in order
                    break
                group.append(nxt)
            self._commit(group)

    def _commit(self, group: list[_WriteOp]) -> None:
        overlay: dict[int, bool] = {}
        accepted: list[_WriteOp] = []
        for op in group:
            if not op.future.set_running_or_notify_cancel():
                continue  # its caller went away before it started: never written, never acknowledged
            try:
                present = np.asarray(self.index.contains(op.ids), dtype=bool)
                for j, id_ in enumerate(op.ids.tolist()):
                    if id_ in overlay:
                        present[j] = overlay[id_]
                if op.kind == "add" and not op.replace and present.any():
                    raise IdConflictError(
                        f"id {int(op.ids[present][0])} is already present; use replace to overwrite it"
                    )
                if op.kind == "remove" and not present.all():
                    raise UnknownIdError(
                        f"id {int(op.ids[~present][0])} is not in the index (nothing removed)"
                    )
            except Exception as e:  # noqa: BLE001 - handed to the caller
                op.future.set_exception(e)
                continue
            for id_ in op.ids.tolist():
                overlay[id_] = op.kind == "add"
            accepted.append(op)
        if not accepted:
            return
        try:
            if self.wal is not None:
                bodies = [
                    encode_upsert(op.ids, op.vectors, op.meta)
                    if op.vectors is not None
                    else encode_delete(op.ids)
                    for op in accepted
                ]
                self.wal.append_group(bodies)
        except BaseException as e:  # noqa: BLE001 - nothing applied, nothing acknowledged
            log.error("write-ahead log append failed: %s", e)
            for op in accepted:
                op.future.set_exception(OSError(f"write-ahead log append failed: {e}"))
            return
        self.write_groups += 1
        for op in accepted:
            try:
                self._apply(OP_UPSERT if op.kind == "add" else OP_DELETE, op.ids, op.vectors, op.meta)
                self.lsn += 1
                op.future.set_result(self.lsn)
            except BaseException as e:  # noqa: BLE001
                self.lsn += 1
                op.future.set_exception(e)

    def _apply(self, op: int, ids: np.ndarray, vectors: np.ndarray | None, meta: list | None) -> None:
        """Apply one operation idempotently (upsert, remove-if-present)."""
        labels, data = self.collection.labels, self.collection.data
        if op == OP_UPSERT:
            self.index.add(vectors, ids, replace=True)
            for j, id_ in enumerate(ids.tolist()):
                label, payload = (None, None) if meta is None else meta[j]
                if label is None:
                    labels.pop(id_, None)
                else:
                    labels[id_] = label
                if payload is None:
                    data.pop(id_, None)
                else:
                    data[id_] = payload
        else:
            present = np.asarray(self.index.contains(ids), dtype=bool)
            if present.any():
                self.index.remove(ids[present])
            for id_ in ids.tolist():
                labels.pop(id_, None)
                data.pop(id_, None)

    # -- public writes --------------------------------------------------------------------
    def _prepare_add(
        self,
        ids: Any,
        vectors: Any,
        labels: Sequence[Any] | None,
        payloads: Sequence[Any] | None,
        replace: bool,
    ) -> _WriteOp:
        x = as_vectors(vectors, "vectors", self.index.dim)
        ids_arr = _check_ids(ids, x.shape[0])
        n = x.shape[0]
        for name, seq in (("labels", labels), ("payloads", payloads)):
            if seq is not None and len(seq) != n:
                raise ValueError(f"got {n} vectors but {len(seq)} {name}")
        meta = None
        if labels is not None or payloads is not None:
            meta = [
                [None if labels is None else labels[j], None if payloads is None else payloads[j]]
                for j in range(n)
            ]
            json.dumps(meta)  # raises TypeError on something JSON cannot hold
        return _WriteOp("add", ids_arr, x, meta, bool(replace))

    def submit_add(
        self,
        ids: Any,
        vectors: Any,
        labels: Sequence[Any] | None = None,
        payloads: Sequence[Any] | None = None,
        *,
        replace: bool = False,
    ) -> Future:
        """Queue an add; the future resolves to the operation's LSN once durable.

        Raises (immediately): ValueError/TypeError for bad vectors, ids, labels.
        The future fails with :class:`IdConflictError` when an id exists and
        ``replace`` is False.
        """
        op = self._prepare_add(ids, vectors, labels, payloads, replace)
        self._ensure_writer()
        self._queue.put(op)
        return op.future

    def submit_remove(self, ids: Any) -> Future:
        """Queue a removal (all or nothing; :class:`UnknownIdError` if an id is absent)."""
        op = _WriteOp("remove", _check_ids(ids), None, None, False)
        self._ensure_writer()
        self._queue.put(op)
        return op.future

    def add(
        self,
        ids: Any,
        vectors: Any,
        labels: Sequence[Any] | None = None,
        payloads: Sequence[Any] | None = None,
        *,
        replace: bool = False,
    ) -> int:
        """Add (or with ``replace=True`` upsert) vectors by id; returns the LSN once durable."""
        return self.submit_add(ids, vectors, labels, payloads, replace=replace).result()

    def remove(self, ids: Any) -> int:
        """Remove ids (all or nothing); returns the LSN once durable."""
        return self.submit_remove(ids).result()

    # -- reads --------------------------------------------------------------------------
    def get(self, ids: Any) -> list[dict[str, Any]]:
        """``[{"id", "vector", "label", "payload"}]`` for each id.

        Raises:
            UnknownIdError: an id is not present.
        """
        arr = _check_ids(ids)
        present = np.asarray(self.index.contains(arr), dtype=bool)
        if not present.all():
            raise UnknownIdError(f"id {int(arr[~present][0])} is not in the index")
        try:
            vecs = self.index.get_vectors(arr)
        except KeyError as e:  # removed in between
            raise UnknownIdError(f"an id is not in the index: {e}") from None
        labels, data = self.collection.labels, self.collection.data
        return [
            {"id": id_, "vector": vecs[j].tolist(), "label": labels.get(id_), "payload": data.get(id_)}
            for j, id_ in enumerate(arr.tolist())
        ]

    def labels_of(self, ids: np.ndarray) -> list:
        """Labels of ``ids`` (None where an id has none)."""
        get = self.collection.labels.get
        return [get(i) for i in ids.tolist()]

    def search(self, queries: Any, k: int = 10, *, filter_ids: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """The index's search, or :func:`filtered_search` when ``filter_ids`` is given."""
        q = as_vectors(queries, "queries", self.index.dim)
        if filter_ids is None:
            return self.index.search(q, k)
        return filtered_search(
            self.index, q, k, _check_ids(filter_ids) if len(filter_ids) else np.empty(0, np.int64)
        )

    def __len__(self) -> int:
        return len(self.index)

    # -- snapshots ------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Save a snapshot (through the writer thread, between write groups).

        Returns:
            ``{"lsn", "path", "seconds"}``.
        """
        fut: Future = Future()
        self._ensure_writer()
        self._queue.put((fut,))
        return fut.result()

    def submit_snapshot(self) -> Future:
        fut: Future = Future()
        self._ensure_writer()
        self._queue.put((fut,))
        return fut

    def _snapshot_now(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        lsn = self.lsn
        params, arrays = self.collection.state()
        if self.data_dir is None:
            if self.snapshot_path is None:
                raise RuntimeError("no data directory and no snapshot path: nowhere to save a snapshot")
            path = self.snapshot_path
            write_container(path, SNAPSHOT_KIND, {"lsn": lsn, "collection": params}, arrays)
        else:
            assert self.wal is not None
            path = os.path.join(self.data_dir, SNAPSHOT_NAME)
            # One atomic write (temporary file, fsync, rename): the old snapshot stays
            # whole until the new one is complete.
            write_container(path, SNAPSHOT_KIND, {"lsn": lsn, "collection": params}, arrays)
            # Only now may the log up to lsn go; a crash before this replays it onto
            # the new snapshot, skipping records <= lsn.
            self.wal.rotate(lsn)
            self.wal.drop_through(lsn)
        self.snapshot_lsn = lsn
        self.last_snapshot_time = time.time()
        return {"lsn": lsn, "path": path, "seconds": time.perf_counter() - t0}

    @property
    def wal_lag(self) -> int:
        """Operations in the log since the last snapshot (what a restart replays)."""
        return self.lsn - self.snapshot_lsn

    @property
    def wal_bytes(self) -> int:
        return 0 if self.wal is None else self.wal.bytes_written

    @property
    def ready(self) -> bool:
        return not self._closed

    def close(self) -> None:
        """Finish queued writes, stop the writer thread and close the log."""
        with self._start_lock:
            self._closed = True
            writer = self._writer
        if writer is not None:
            self._queue.put(None)
            writer.join(timeout=30)
        if self.wal is not None:
            self.wal.close()

    def __enter__(self) -> DurableCollection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_snapshot(path: str) -> tuple[Collection, int]:
    kind, params, arrays = read_container(path)
    if kind != SNAPSHOT_KIND:
        raise CorruptFileError(f"{path!r} holds a {kind!r}, not a service snapshot")
    try:
        return Collection.from_state(params["collection"], arrays), int(params["lsn"])
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, CorruptFileError):
            raise
        raise CorruptFileError(f"{path!r} is a damaged service snapshot: {e}") from e


def load_collection(source: str | os.PathLike[str] | Collection | Index) -> tuple[Collection, int]:
    """A collection from an index, a collection, or a file written by ``Index.save`` or
    by a snapshot; returns ``(collection, lsn it includes)`` (0 for an index file)."""
    if isinstance(source, Collection):
        return source, 0
    if isinstance(source, Index):
        return Collection(source), 0
    path = os.fspath(source)
    kind, _, _ = read_container(path)
    if kind == SNAPSHOT_KIND:
        return _read_snapshot(path)
    return Collection(load_index(path)), 0
