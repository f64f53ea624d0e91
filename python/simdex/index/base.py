"""The :class:`Index` contract every simdex index follows, and :func:`load_index`.

Distances are always "smaller is closer" (the metrics and their aliases are listed in
:mod:`simdex._validate`).

Under ``"cosine"`` a zero vector (query or stored) has cosine 0 to everything, so its
distance to every vector is exactly 1.0; it is never NaN.

Computation is in float32 (float64 input is converted, like FAISS). Ties in distance
are broken by the smaller id, so results do not depend on thread count or on the
order in which vectors were added or removed.
"""

from __future__ import annotations

import abc
import os
import threading
import weakref
from collections.abc import Mapping
from typing import IO, Any, ClassVar

import numpy as np

from simdex._validate import (
    DEVICES,
    MAX_ID,
    METRICS,
    as_ids,
    as_matrix,
    canonical_metric,
    check_device,
    check_k,
    check_positive_int,
    lookup_ids,
)
from simdex.index.io import (
    Container,
    CorruptFileError,
    Source,
    check_finite,
    container_bytes,
    field_array,
    field_int,
    field_str,
    load_container,
    write_container,
)

__all__ = ["Index", "load_index", "MAX_FILE_DIM"]

MAX_FILE_DIM = 1 << 24  # largest dimension a loaded file may claim
_ID_MAX = 2**63 - 1


# --------------------------------------------------------------------------- fork
_LIVE_INDEXES: weakref.WeakSet[Index] = weakref.WeakSet()


def _fresh_locks_in_child() -> None:
    # A thread that held an index's writer lock at fork() does not exist in the child;
    # the native stores reset their own locks (pthread_atfork), this is the Python one.
    for index in list(_LIVE_INDEXES):
        index._lock = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_fresh_locks_in_child)


# --------------------------------------------------------------------------- Index contract
class Index(abc.ABC):
    """The contract every simdex index follows (exact, LSH, GPU, or your own).

    Subclasses implement the ``_backend_*`` hooks and ``_state``/``_from_state``;
    id management, validation, locking and save/load live here once.

    Attributes:
        dim: Vector dimension.
        metric: Canonical metric name.
        device: ``"cpu"`` or ``"cuda"``: where searches run (set by the subclass).
    """

    kind: ClassVar[str] = ""
    device: str = "cpu"
    _registry: ClassVar[dict[str, type[Index]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.kind:
            Index._registry[cls.kind] = cls

    def __init__(self, dim: int, metric: str = "cosine", device: str = "cpu") -> None:
        self.dim: int = check_positive_int(dim, "dim")
        self.metric: str = canonical_metric(metric)
        self.device: str = check_device(device)
        self._next_id = 0
        self._lock = threading.RLock()  # serialises writers and save; searches are lock-free here
        self._container: Container | None = None  # the memory-mapped file behind a read-only index
        _LIVE_INDEXES.add(self)

    # -- hooks ----------------------------------------------------------------------------
    # Indexes keep their vectors in a store (``self._store``, made by
    # simdex.index.stores.new_store for the index's device) with one protocol:
    # add(x, ids, replace), remove(ids), get_vectors(ids), contains(ids), export_all(),
    # reset(), len(). The hooks below delegate to it; a backend without such a store
    # overrides them.
    _store: Any

    def _backend_add(self, x: np.ndarray, ids: np.ndarray, replace: bool) -> None:
        self._store.add(x, ids, replace)

    def _backend_remove(self, ids: np.ndarray) -> None:
        self._store.remove(ids)

    @abc.abstractmethod
    def _backend_search(
        self, q: np.ndarray, k: int, options: Mapping[str, Any]
    ) -> tuple[np.ndarray, np.ndarray]:
        """k-NN of the checked float32 matrix ``q`` with the subclass's search ``options``."""

    def _device_search(self, queries: Any, k: int, options: Mapping[str, Any]) -> tuple[Any, Any]:
        """Search with device-array queries (``device="cuda"`` only); results on the device."""
        raise NotImplementedError

    def _backend_len(self) -> int:
        return len(self._store)

    def _backend_export(self) -> tuple[np.ndarray, np.ndarray]:
        return self._store.export_all()

    def _backend_get_vectors(self, ids: np.ndarray) -> np.ndarray:
        return self._store.get_vectors(ids)

    def _backend_contains(self, ids: np.ndarray) -> np.ndarray:
        return self._store.contains(ids)

    def _backend_reset(self) -> None:
        self._store.reset()

    def _params(self) -> dict[str, Any]:
        """Constructor parameters to save (beyond dim and metric)."""
        return {}

    def _extra_arrays(self) -> dict[str, np.ndarray]:
        """Arrays to save beyond vectors and ids."""
        return {}

    # -- public API ---------------------------------------------------------------------
    def add(self, vectors: Any, ids: Any = None, *, replace: bool = False) -> np.ndarray:
        """Add vectors.

        Args:
            vectors: (n, dim) or (dim,) float32/float64.
            ids: n distinct non-negative integer ids, or None to assign fresh ones
                (one more than the largest id ever used).
            replace: If True, an id already present has its vector replaced; if False
                (default), adding an existing id raises ``ValueError``.

        Returns:
            The int64 ids of the added vectors, shape (n,).

        Raises:
            ValueError: bad shape/values, negative or repeated ids, id already present.
            TypeError: non-numeric vectors or non-integer ids.
        """
        x, _ = as_matrix(vectors, "vectors", dim=self.dim)
        with self._lock:
            if ids is None:
                if self._next_id + x.shape[0] - 1 > MAX_ID:
                    raise ValueError(
                        f"no fresh ids left: the next one would be {self._next_id} and ids end at "
                        f"2**63 - 2; pass ids= explicitly"
                    )
                ids_arr = np.arange(self._next_id, self._next_id + x.shape[0], dtype=np.int64)
            else:
                ids_arr = as_ids(ids, x.shape[0])
            self._backend_add(x, ids_arr, bool(replace))
            self._next_id = max(self._next_id, int(ids_arr.max()) + 1)
        return ids_arr

    def search(self, queries: Any, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """k nearest stored vectors of each query.

        Subclasses add their own keyword-only options (``num_threads``, ``num_probes``...).

        Args:
            queries: (q, dim) or (dim,) float32/float64.
            k: Neighbours per query; slots beyond ``len(self)`` hold id -1 and
                distance +inf.

        Returns:
            ``(distances, ids)``, float32 and int64 of shape (q, k) ((k,) for a 1-D
            query), distances ascending.
        """
        return self._search(queries, k, {})

    def _search(self, queries: Any, k: int, options: Mapping[str, Any]) -> tuple[Any, Any]:
        """Check ``queries`` and ``k`` once, then hand them to the backend.

        ``options["filter"]`` (see :mod:`simdex.index.filters`) becomes
        ``options["filter_ids"]`` (sorted distinct int64, or None) and ``"filter_deny"``.
        """
        k = check_k(k)
        if self.device == "cuda":
            from simdex.index.gpu.interop import is_device_array

            if is_device_array(queries):  # stays on the device, results come back there
                if options.get("filter") is not None:
                    raise ValueError("filter= is supported on the CPU path only; pass host queries")
                return self._device_search(queries, k, options)
        q, was_1d = as_matrix(queries, "queries", dim=self.dim)
        D, ids = self._backend_search(q, k, self._resolve_filter(options))
        return (D[0], ids[0]) if was_1d else (D, ids)

    def _resolve_filter(self, options: Mapping[str, Any]) -> dict[str, Any]:
        from simdex.index.filters import resolve_filter

        out = dict(options)
        resolved = resolve_filter(out.pop("filter", None), lambda: self.ids)
        if resolved is not None and self.device != "cpu":
            raise ValueError("filter= is not supported with device='cuda' yet; use a CPU index")
        out["filter_ids"], out["filter_deny"] = resolved if resolved is not None else (None, False)
        return out

    @staticmethod
    def _filter_kwargs(options: Mapping[str, Any]) -> dict[str, Any]:
        """The native store's filter arguments of resolved ``options`` (none without a filter)."""
        if options.get("filter_ids") is None:
            return {}
        return {"filter_ids": options["filter_ids"], "filter_deny": options["filter_deny"]}

    def range_search(
        self, queries: Any, radius: float, *, filter: Any = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every stored vector within distance ``radius`` of each query (like faiss).

        Subclasses add their own keyword-only options (``num_threads``, ``num_probes``...).

        Args:
            queries: (q, dim) or (dim,) float32/float64 (a 1-D query counts as q = 1).
            radius: Largest distance returned (``distance <= radius``), on the
                metric's scale (``"cosine"``: 1 - cos; ``"l2"``: Euclidean; ``"sql2"``:
                squared; ``"ip"``: minus the inner product).
            filter: Restrict the ids returned, as for ``search`` (see
                :mod:`simdex.index.filters`).

        Returns:
            ``(lims, distances, ids)`` in CSR form: the hits of query ``i`` are
            ``distances[lims[i]:lims[i+1]]`` (float32, ascending; ties by id) and
            ``ids[lims[i]:lims[i+1]]`` (int64); ``lims`` has q + 1 entries.

        Raises:
            ValueError: a NaN radius, bad queries.
            TypeError: a radius that is not a number.
        """
        return self._range_search(queries, radius, {"filter": filter})

    def _range_search(
        self, queries: Any, radius: Any, options: Mapping[str, Any]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        try:
            r = float(radius)
        except (TypeError, ValueError):
            raise TypeError(f"radius must be a number, got {type(radius).__name__}") from None
        if np.isnan(r):
            raise ValueError("radius must not be NaN")
        r = float(np.clip(r, -np.finfo(np.float32).max, np.finfo(np.float32).max))
        q, _ = as_matrix(queries, "queries", dim=self.dim)
        return self._backend_range_search(q, r, self._resolve_filter(options))

    def _backend_range_search(
        self, q: np.ndarray, radius: float, options: Mapping[str, Any]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        raise NotImplementedError(f"{type(self).__name__} has no range search")

    def remove(self, ids: Any) -> None:
        """Remove ids (all or nothing).

        Raises:
            KeyError: an id is not in the index (nothing is removed).
        """
        arr, _ = lookup_ids(ids)
        with self._lock:
            self._backend_remove(arr)

    def reset(self) -> None:
        """Remove every vector (the id counter keeps counting)."""
        with self._lock:
            self._backend_reset()

    def get_vectors(self, ids: Any) -> np.ndarray:
        """Stored vectors (float32) of ``ids``: shape (n, dim), or (dim,) for one id.

        Raises:
            KeyError: an id is not in the index.
        """
        arr, scalar = lookup_ids(ids)
        out = self._backend_get_vectors(arr)
        return out[0] if scalar else out

    def contains(self, ids: Any) -> np.ndarray | bool:
        """Whether each id is present (bool array, or a bool for a scalar id)."""
        arr, scalar = lookup_ids(ids)
        out = self._backend_contains(arr)
        return bool(out[0]) if scalar else out

    def __contains__(self, id_: object) -> bool:
        try:
            return bool(self.contains(id_))
        except TypeError:
            return False

    @property
    def ids(self) -> np.ndarray:
        """All stored ids (int64), in storage order."""
        with self._lock:
            return self._backend_export()[1]

    def __len__(self) -> int:
        return self._backend_len()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self.dim}, metric={self.metric!r}, size={len(self)})"

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Everything needed to rebuild this index: JSON-able ``params`` and NumPy ``arrays``.

        Containers that hold an index (a model, a near-duplicate finder) store this
        inside their own file and rebuild the index with :meth:`from_state`, so one
        atomic write saves them all. ``params["kind"]`` names the index class.

        Returns:
            ``(params, arrays)``; ``arrays`` has at least ``"vectors"`` (float32
            (n, dim)) and ``"ids"`` (int64 (n,)).
        """
        with self._lock:
            vectors, ids = self._backend_export()
            params = {
                "kind": self.kind,
                "dim": self.dim,
                "metric": self.metric,
                "next_id": self._next_id,
                **self._params(),
            }
            return params, {"vectors": vectors, "ids": ids, **self._extra_arrays()}

    @staticmethod
    def from_state(
        params: Mapping[str, Any], arrays: Mapping[str, np.ndarray], *, device: str | None = None
    ) -> Index:
        """Rebuild an index from :meth:`state`.

        Args:
            params: The params of :meth:`state` (``params["kind"]`` picks the class).
            arrays: Its arrays.
            device: Put the index on ``"cpu"`` or ``"cuda"`` (default: CPU).

        Raises:
            CorruptFileError: unknown kind, missing or inconsistent contents.
        """
        kind = params.get("kind")
        # Every index class registers itself on definition; simdex.index imports them all.
        cls = Index._registry.get(str(kind))
        if cls is None:
            raise CorruptFileError(f"holds a {kind!r}, which is not an index this simdex knows")
        try:
            if "vectors" not in arrays or "ids" not in arrays:
                raise KeyError("vectors/ids")
            if device is not None and check_device(device) != "cpu":
                params = {**params, "device": device}
            return cls._from_state(params, arrays)
        except (KeyError, TypeError, ValueError, OverflowError, IndexError) as e:
            if isinstance(e, CorruptFileError):
                raise
            raise CorruptFileError(f"has inconsistent index contents: {e}") from e

    def save(self, path: str | os.PathLike[str] | IO[bytes]) -> None:
        """Write the index to ``path`` (versioned, checksummed).

        Args:
            path: A file path, written atomically: the previous file survives any
                failure (full disk, crash), a new file gets ``0o666 & ~umask``, an
                existing one keeps its mode, a symlink keeps pointing at the
                replaced file. Or a binary file object open for writing (written at
                its position, not closed; atomicity is then the caller's).
        """
        with self._lock:
            params, arrays = self.state()
            write_container(path, self.kind, params, arrays)

    def to_bytes(self) -> bytes:
        """The index in the file format, as bytes (see :meth:`from_bytes`)."""
        params, arrays = self.state()
        return container_bytes(self.kind, params, arrays)

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview, *, device: str | None = None) -> Index:
        """Rebuild an index from :meth:`to_bytes` (validated like :func:`load_index`).

        Raises:
            CorruptFileError: the bytes are not a valid index (or, called on a
                subclass, not an index of that class).
        """
        index = _from_container(load_container(data), device)
        if not isinstance(index, cls):
            raise CorruptFileError(f"the bytes hold a {type(index).__name__}, not a {cls.__name__}")
        return index

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # pickle, copy.copy and copy.deepcopy all go through the file format: the copy
        # owns a new native store (never shares this one) and keeps the device.
        return _unpickle_index, (self.to_bytes(), self.device)

    def verify(self) -> None:
        """Check what a memory-mapped load (``load_index(..., mmap=True)``) deferred.

        Reads the whole file: its checksum, NaN/inf in the vectors, ids (>= 0,
        distinct) and the id counter. An index loaded without ``mmap`` was checked
        completely when it was loaded, and this returns at once.

        Raises:
            CorruptFileError: the mapped file is corrupted or invalid.
        """
        c = self._container
        if c is None:
            return
        c.verify()
        vectors, ids = c.arrays["vectors"], c.arrays["ids"]
        check_finite(vectors, "vectors")
        if ids.size:
            if int(ids.min()) < 0:
                raise CorruptFileError(f"{c.name!r}: stored ids must be >= 0, found {int(ids.min())}")
            if np.unique(ids).size != ids.size:
                raise CorruptFileError(f"{c.name!r}: stored ids repeat")
            if self._next_id <= int(ids.max()):
                raise CorruptFileError(f"{c.name!r}: next_id {self._next_id} is not above the largest id")

    @classmethod
    @abc.abstractmethod
    def _from_state(cls, params: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> Index: ...

    @classmethod
    def _check_common(cls, params: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> tuple[int, str]:
        """Validate what every index file holds (dim, metric, vectors, ids, next_id)."""
        dim = field_int(params, "dim", 1, MAX_FILE_DIM)
        metric = field_str(params, "metric", METRICS)
        vectors = field_array(arrays, "vectors", "float32", (None, dim))
        field_array(arrays, "ids", "int64", (vectors.shape[0],))
        field_int(params, "next_id", 0, _ID_MAX, default=0)
        if "device" in params:
            field_str(params, "device", DEVICES)
        return dim, metric

    def _restore_common(self, params: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
        vectors, ids = arrays["vectors"], arrays["ids"]
        check_finite(vectors, "vectors")
        top = int(ids.max()) + 1 if ids.size else 0
        if ids.size and int(ids.min()) < 0:
            raise CorruptFileError(f"stored ids must be >= 0, found {int(ids.min())}")
        next_id = field_int(params, "next_id", top, _ID_MAX, default=top)
        if vectors.shape[0]:
            try:
                self._backend_add(
                    np.ascontiguousarray(vectors, np.float32), np.ascontiguousarray(ids, np.int64), False
                )
            except ValueError as e:  # repeated ids
                raise CorruptFileError(f"stored ids are invalid: {e}") from e
        self._next_id = next_id


def _unpickle_index(data: bytes, device: str = "cpu") -> Index:
    return _from_container(load_container(data), None if device == "cpu" else device)


def _from_container(c: Container, device: str | None) -> Index:
    try:
        return Index.from_state({**c.params, "kind": c.kind}, c.arrays, device=device)
    except CorruptFileError as e:
        raise CorruptFileError(f"{c.name!r} {e}") from e


def load_index(path: Source, *, device: str | None = None, mmap: bool = False) -> Index:
    """Load an index written by ``Index.save``.

    The file is treated as untrusted: every header field and array is validated
    (sizes against the file size, shapes, dtypes, NaN/inf, ids, counters, LSH
    parameters) before anything is built from it.

    Args:
        path: File path, or a binary file object open for reading (read to its end),
            or the bytes of :meth:`Index.to_bytes`.
        device: Move the index to ``"cpu"`` or ``"cuda"`` (default: CPU).
        mmap: :class:`~simdex.ExactIndex` files only (paths, CPU): map the file
            read-only and search the vectors and ids in place instead of reading and
            copying them. Loading takes time and memory independent of the file size,
            and processes that map the same file share one copy in the page cache.
            The header is validated as always, but the checksum and the contents of
            the arrays (NaN, ids) are only checked by :meth:`Index.verify`. The index
            is read-only: ``add``/``remove``/``reset`` raise ``ValueError``;
            ``copy.copy(index)`` gives a writable in-memory copy. The mapping lives as
            long as the index.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CorruptFileError: not a regular file; truncated, corrupted, foreign, invalid
            or newer-format contents.
        ValueError: ``mmap=True`` for a file object, bytes, a non-exact index or
            ``device="cuda"``.
    """
    if not mmap:
        return _from_container(load_container(path), device)
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError("mmap=True needs a file path")
    if device is not None and check_device(device) != "cpu":
        raise ValueError("mmap=True loads a CPU index; copy.copy(index) after loading to move it")
    c = load_container(path, mmap=True)
    cls = Index._registry.get(c.kind)
    from_mapped = getattr(cls, "_from_mapped", None)
    if from_mapped is None:
        raise ValueError(f"mmap=True supports ExactIndex files; {os.fspath(path)!r} holds a {c.kind!r}")
    try:
        return from_mapped(c)
    except CorruptFileError as e:
        raise CorruptFileError(f"{c.name!r}: {e}") from e
