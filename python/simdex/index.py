"""Exact nearest-neighbour search: :func:`knn`, the :class:`Index` contract and :class:`ExactIndex`.

Distances are always "smaller is closer":

============  ===============================================  ==================
metric        distance                                          aliases
============  ===============================================  ==================
``"cosine"``  ``1 - cos(q, x)`` in [0, 2]                       ``"cos"``
``"ip"``      ``-<q, x>`` (so the largest product comes first)  ``"dot"``, ``"inner_product"``
``"l2"``      ``|q - x|`` (Euclidean)                           ``"euclidean"``
``"sql2"``    ``|q - x|^2``                                     ``"squared_l2"``, ``"sqeuclidean"``
============  ===============================================  ==================

Under ``"cosine"`` a zero vector (query or stored) has cosine 0 to everything, so its
distance to every vector is exactly 1.0; it is never NaN.

Computation is in float32 (float64 input is converted, like FAISS). Ties in distance
are broken by the smaller id, so results do not depend on thread count or on the
order in which vectors were added or removed.
"""

from __future__ import annotations

import abc
import operator
import os
import threading
import weakref
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from simdex._io import CorruptFileError, read_container, write_container
from simdex._runtime import core

__all__ = ["METRICS", "Index", "ExactIndex", "knn", "load_index"]

MAX_ID = 2**63 - 2  # the largest id; 2**63 - 1 is the native "no result" marker

METRICS: tuple[str, ...] = ("cosine", "ip", "l2", "sql2")
_ALIASES = {
    "cosine": "cosine",
    "cos": "cosine",
    "ip": "ip",
    "dot": "ip",
    "inner_product": "ip",
    "l2": "l2",
    "euclidean": "l2",
    "sql2": "sql2",
    "squared_l2": "sql2",
    "sqeuclidean": "sql2",
}
DEVICES = ("cpu", "cuda")


# --------------------------------------------------------------------------- validation
def canonical_metric(metric: str) -> str:
    """Return the canonical metric name for ``metric`` (see the module docstring)."""
    if not isinstance(metric, str):
        raise TypeError(f"metric must be a string, got {type(metric).__name__}")
    try:
        return _ALIASES[metric.lower()]
    except KeyError:
        raise ValueError(f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}") from None


def check_positive_int(value: Any, name: str) -> int:
    """Validate a positive integer argument (``k``, ``dim``, ``batch_size``...)."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer, got bool")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}") from None
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def check_k(k: Any) -> int:
    """Validate ``k`` (a positive integer)."""
    return check_positive_int(k, "k")


def check_device(device: str) -> str:
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; expected 'cpu' or 'cuda'")
    return device


_TINY = 2.0**-60  # smallest largest-|component| of a nonzero row (squares stay normal float32)


def as_matrix(x: Any, name: str, dim: int | None = None) -> tuple[np.ndarray, bool]:
    """Convert ``x`` to a C-contiguous float32 matrix, checking everything.

    Accepts NumPy arrays (any memory order), sequences, objects with ``__array__``
    (CPU PyTorch tensors) and GPU arrays that offer ``.get()`` (CuPy), which are
    copied to the host.

    Args:
        x: (n, d) or (d,) numbers.
        name: The argument's name, for error messages.
        dim: The expected d, or None.

    Returns:
        ``(array, was_1d)``; a 1-D input becomes one row.

    Raises:
        TypeError: non-numeric dtype (strings, objects, complex, bool).
        ValueError: wrong number of dimensions, wrong d, no rows, NaN or infinity,
            a row whose float32 squares overflow or underflow (see the README conventions).
    """
    if hasattr(x, "__cuda_array_interface__") and hasattr(x, "get"):
        x = x.get()  # CuPy array -> NumPy for the CPU path
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiu":
        raise TypeError(
            f"{name} must hold real numbers (float32, float64 or integers), got dtype {arr.dtype}"
        )
    was_1d = arr.ndim == 1
    if was_1d:
        arr = arr.reshape(1, -1)
    elif arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n, d) or a single 1-D vector, got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape}); pass at least one vector")
    if arr.shape[1] == 0:
        raise ValueError(f"{name} has dimension 0 (shape {arr.shape})")
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(f"{name} has dimension {arr.shape[1]}, expected {dim} (shape {arr.shape})")
    with np.errstate(over="ignore", invalid="ignore"):  # reported just below, with the position
        out = np.ascontiguousarray(arr, dtype=np.float32)
    # Magnitude rule (README "Conventions"): computing in float32, a row's squares and
    # products must neither overflow nor underflow. The largest |component| of each
    # nonzero row must lie in [_TINY, sqrt(FLT_MAX / (4 d))]; NaN/inf fail too. One
    # native pass (no temporaries, one GIL release at most).
    hi = float(np.sqrt(np.finfo(np.float32).max / (4.0 * arr.shape[1])))
    row, code, zero_rows = core()._check_rows(out, hi, _TINY)
    if code == 2:
        col = int(np.argmax(~np.isfinite(out[row])))
        what = "NaN" if np.isnan(out[row, col]) else "infinity"
        extra = " (a float64 value out of float32 range becomes infinity)" if arr.dtype != np.float32 else ""
        raise ValueError(f"{name} contains {what} at row {row}, column {col}{extra}")
    if code == 1:
        raise ValueError(
            f"{name} row {row} has a component of magnitude {float(np.abs(out[row]).max()):.3g}; simdex "
            f"computes in float32 and accepts |values| <= {hi:.3g} for dimension {arr.shape[1]} (larger "
            "squares overflow): scale the data down"
        )
    if code == 0 and zero_rows and arr.dtype.kind == "f" and arr.dtype.itemsize > 4:
        zero = np.flatnonzero(~out.any(axis=1))  # float64 rows float32 flushed to zero?
        lost = zero[np.abs(arr[zero]).max(axis=1) > 0]
        if lost.size:
            row, code = int(lost[0]), 3
    if code == 3:
        m = float(np.abs(arr[row]).max())
        raise ValueError(
            f"{name} row {row} is nonzero but its largest |component| is {m:.3g} < {_TINY:.3g}: its "
            "float32 squares underflow, so its direction and norm would be lost; scale the data up "
            "or set the row to zero"
        )
    return out, was_1d


def as_ids(ids: Any, n: int, name: str = "ids") -> np.ndarray:
    """Convert ``ids`` to a 1-D int64 array of length ``n`` of non-negative integers."""
    arr = np.asarray(ids)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.size == 0 and arr.dtype.kind == "f":
        arr = arr.astype(np.int64)  # [] is float64 to NumPy
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must be integers, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.shape[0] != n:
        raise ValueError(f"got {n} vectors but {arr.shape[0]} {name}")
    if arr.dtype.kind == "u" and arr.size and arr.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{name} must fit in int64, got {int(arr.max())}")
    out = np.ascontiguousarray(arr, dtype=np.int64)
    if out.size and out.min() < 0:
        raise ValueError(f"{name} must be >= 0 (-1 marks a missing neighbour), got {int(out.min())}")
    if out.size and out.max() > MAX_ID:
        raise ValueError(f"{name} must be <= 2**63 - 2 (2**63 - 1 is reserved), got {int(out.max())}")
    return out


def _lookup_ids(ids: Any) -> tuple[np.ndarray, bool]:
    arr = np.asarray(ids)
    scalar = arr.ndim == 0
    if arr.size == 0 and arr.dtype.kind == "f":
        arr = arr.astype(np.int64)  # [] is float64 to NumPy
    if arr.dtype.kind not in "iu":
        raise TypeError(f"ids must be integers, got dtype {arr.dtype}")
    if arr.dtype.kind == "u" and arr.size and arr.max() > np.iinfo(np.int64).max:
        raise ValueError(f"ids must fit in int64, got {int(arr.max())}")
    return np.ascontiguousarray(arr.reshape(-1), dtype=np.int64), scalar


# --------------------------------------------------------------------------- functional
def knn(
    queries: Any,
    base: Any,
    k: int = 10,
    metric: str = "cosine",
    *,
    num_threads: int | None = None,
    device: str = "cpu",
) -> tuple[Any, Any]:
    """Exact k nearest neighbours of each query among ``base`` (no index kept).

    Args:
        queries: (q, d) or (d,) float32/float64 array.
        base: (n, d) float32/float64 array.
        k: Neighbours per query. If ``k > n`` the missing slots hold id -1 and
            distance +inf.
        metric: ``"cosine"`` (default), ``"ip"``, ``"l2"`` or ``"sql2"``.
        num_threads: Threads to use (default: :func:`simdex.get_num_threads`).
        device: ``"cpu"`` or ``"cuda"`` (needs the CUDA build and a GPU; the result
            comes back as the same kind of array as ``queries``).

    Returns:
        ``(distances, ids)``: float32 and int64 arrays of shape (q, k) (or (k,) for a
        1-D query), distances ascending; ids are row numbers of ``base``.

    Example:
        >>> import numpy as np
        >>> x = np.eye(3, dtype=np.float32)
        >>> D, I = knn(x[0], x, k=2)
        >>> I.tolist(), D.round(3).tolist()
        ([0, 1], [0.0, 1.0])
    """
    metric = canonical_metric(metric)
    k = check_k(k)
    if check_device(device) == "cuda":
        from simdex import gpu

        return gpu.knn(queries, base, k=k, metric=metric)
    q, was_1d = as_matrix(queries, "queries")
    x, _ = as_matrix(base, "base", dim=q.shape[1])
    D, ids = core().knn(q, x, k, metric, num_threads=_threads(num_threads))
    return (D[0], ids[0]) if was_1d else (D, ids)


def _threads(num_threads: int | None) -> int:
    if num_threads is None:
        return 0
    n = operator.index(num_threads)
    if n < 1:
        raise ValueError(f"num_threads must be >= 1 or None, got {n}")
    return n


# --------------------------------------------------------------------------- Index contract
_LIVE_INDEXES: weakref.WeakSet[Index] = weakref.WeakSet()


def _fresh_locks_in_child() -> None:
    # A thread that held an index's writer lock at fork() does not exist in the child;
    # the native stores reset their own locks (pthread_atfork), this is the Python one.
    for index in list(_LIVE_INDEXES):
        index._lock = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_fresh_locks_in_child)


class Index(abc.ABC):
    """The contract every simdex index follows (exact, LSH, GPU, or your own).

    Subclasses implement the ``_backend_*`` hooks and ``_state``/``_from_state``;
    id management, validation, locking and save/load live here once.

    Attributes:
        dim: Vector dimension.
        metric: Canonical metric name.
    """

    kind: ClassVar[str] = ""
    _registry: ClassVar[dict[str, type[Index]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.kind:
            Index._registry[cls.kind] = cls

    def __init__(self, dim: int, metric: str = "cosine") -> None:
        self.dim: int = check_positive_int(dim, "dim")
        self.metric: str = canonical_metric(metric)
        self._next_id = 0
        self._lock = threading.RLock()  # serialises writers and save; searches are lock-free here
        _LIVE_INDEXES.add(self)

    # -- hooks ----------------------------------------------------------------------------
    # Indexes keep their vectors in a native store (``self._store``: C++ FlatIndex,
    # LshIndex or the GPU store) with one protocol: add(x, ids, replace), remove(ids),
    # get_vectors(ids), contains(ids), export_all(), reset(), len(). The hooks below
    # delegate to it; a backend without such a store overrides them.
    _store: Any

    def _backend_add(self, x: np.ndarray, ids: np.ndarray, replace: bool) -> None:
        self._store.add(x, ids, replace)

    def _backend_remove(self, ids: np.ndarray) -> None:
        self._store.remove(ids)

    @abc.abstractmethod
    def _backend_search(self, q: np.ndarray, k: int, **kwargs: Any) -> tuple[np.ndarray, np.ndarray]: ...

    def _device_search(self, queries: Any, k: int, **kwargs: Any) -> tuple[Any, Any]:
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

    def search(self, queries: Any, k: int = 10, **kwargs: Any) -> tuple[np.ndarray, np.ndarray]:
        """k nearest stored vectors of each query.

        Args:
            queries: (q, dim) or (dim,) float32/float64.
            k: Neighbours per query; slots beyond ``len(self)`` hold id -1 and
                distance +inf.
            **kwargs: Backend-specific options (e.g. ``num_threads``).

        Returns:
            ``(distances, ids)``, float32 and int64 of shape (q, k) ((k,) for a 1-D
            query), distances ascending.
        """
        k = check_k(k)
        if getattr(self, "device", "cpu") == "cuda":
            from simdex import gpu

            if gpu.is_device_array(queries):  # stays on the device, results come back there
                return self._device_search(queries, k, **kwargs)
        q, was_1d = as_matrix(queries, "queries", dim=self.dim)
        D, ids = self._backend_search(q, k, **kwargs)
        return (D[0], ids[0]) if was_1d else (D, ids)

    def remove(self, ids: Any) -> None:
        """Remove ids (all or nothing).

        Raises:
            KeyError: an id is not in the index (nothing is removed).
        """
        arr, _ = _lookup_ids(ids)
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
        arr, scalar = _lookup_ids(ids)
        out = self._backend_get_vectors(arr)
        return out[0] if scalar else out

    def contains(self, ids: Any) -> np.ndarray | bool:
        """Whether each id is present (bool array, or a bool for a scalar id)."""
        arr, scalar = _lookup_ids(ids)
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

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the index to ``path`` atomically (versioned, checksummed).

        The previous file at ``path`` survives any failure (full disk, crash).
        """
        with self._lock:
            vectors, ids = self._backend_export()
            params = {"dim": self.dim, "metric": self.metric, "next_id": self._next_id, **self._params()}
            arrays = {"vectors": vectors, "ids": ids, **self._extra_arrays()}
            write_container(path, self.kind, params, arrays)

    @classmethod
    @abc.abstractmethod
    def _from_state(cls, params: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> Index: ...

    def _restore_common(self, params: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
        vectors, ids = arrays["vectors"], arrays["ids"]
        if vectors.ndim != 2 or vectors.shape[1] != self.dim or ids.shape != (vectors.shape[0],):
            raise CorruptFileError(f"stored arrays have inconsistent shapes {vectors.shape} / {ids.shape}")
        if vectors.shape[0]:
            self._backend_add(
                np.ascontiguousarray(vectors, np.float32), np.ascontiguousarray(ids, np.int64), False
            )
        self._next_id = int(params.get("next_id", 0))


class ExactIndex(Index):
    """Exact (brute-force) index: tiled BLAS inner products + SIMD top-k in C++.

    Args:
        dim: Vector dimension.
        metric: ``"cosine"`` (default), ``"ip"``, ``"l2"`` or ``"sql2"``.
        device: ``"cpu"`` (default) or ``"cuda"``.
        fp16_prefilter: CPU only. Also keep every vector's direction in
            float16 (2 bytes per component: +50% memory) so that searches with
            at most 4 queries, which are bound by memory bandwidth, read half
            the bytes: a float16 pass with a guaranteed error bound keeps every
            row that can still be among the ``k`` best, and those rows are
            re-scored in float32. Results are the exact neighbours either way;
            ``False`` saves the memory. Ignored on CPUs without F16C.

    Example:
        >>> import numpy as np
        >>> index = ExactIndex(dim=4)
        >>> ids = index.add(np.eye(4))
        >>> D, I = index.search(np.eye(4)[1], k=2)
        >>> int(I[0]), float(D[0])
        (1, 0.0)
    """

    kind = "ExactIndex"

    def __init__(
        self, dim: int, metric: str = "cosine", *, device: str = "cpu", fp16_prefilter: bool = True
    ) -> None:
        super().__init__(dim, metric)
        self.device = check_device(device)
        if not isinstance(fp16_prefilter, (bool, np.bool_)):
            raise TypeError(f"fp16_prefilter must be a bool, got {type(fp16_prefilter).__name__}")
        self.fp16_prefilter = bool(fp16_prefilter)
        if self.device == "cuda":
            from simdex import gpu

            self._store = gpu.GpuFlatIndex(self.dim, self.metric)
        else:
            self._store = core().FlatIndex(self.dim, self.metric, fp16_prefilter=self.fp16_prefilter)

    def _params(self) -> dict[str, Any]:
        return {"fp16_prefilter": self.fp16_prefilter}

    def prefilter_stats(self) -> dict[str, int]:
        """How the float16 pre-filter has served this index (CPU) since it was made.

        Returns:
            ``{"active": 0 or 1, "queries": n, "rescored": m}``: whether the
            shadow is kept, the queries answered through it, and the rows those
            queries re-scored in float32 (``m / (n * len(self))`` is the share
            of the data the filter let through).
        """
        if self.device != "cpu":
            return {"active": 0, "queries": 0, "rescored": 0}
        return {"active": int(self._store.fp16_prefilter), **self._store.prefilter_stats()}

    def _backend_search(
        self, q: np.ndarray, k: int, num_threads: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        return self._store.search(q, k, num_threads=_threads(num_threads))

    def _device_search(self, queries: Any, k: int, **kwargs: Any) -> tuple[Any, Any]:
        return self._store.search(queries, k, **kwargs)  # the GpuFlatIndex

    @classmethod
    def _from_state(cls, params: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> ExactIndex:
        index = cls(
            int(params["dim"]),
            str(params["metric"]),
            device=str(params.get("device", "cpu")),
            fp16_prefilter=bool(params.get("fp16_prefilter", True)),
        )
        index._restore_common(params, arrays)
        return index


def load_index(path: str | os.PathLike[str], *, device: str | None = None) -> Index:
    """Load an index written by ``Index.save``.

    Args:
        path: File to read.
        device: Move the index to ``"cpu"`` or ``"cuda"`` (default: CPU).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CorruptFileError: truncated, corrupted, foreign or newer-format file.
    """
    kind, params, arrays = read_container(path)
    if kind not in Index._registry:
        try:
            import simdex.lsh  # noqa: F401  (registers LSHIndex)
        except ImportError:
            pass
    cls = Index._registry.get(kind)
    if cls is None:
        raise CorruptFileError(
            f"{os.fspath(path)!r} holds a {kind!r}, which is not an index this simdex knows"
        )
    try:
        if "vectors" not in arrays or "ids" not in arrays:
            raise KeyError("vectors/ids")
        if device is not None and check_device(device) != "cpu":
            params = {**params, "device": device}
        return cls._from_state(params, arrays)
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, CorruptFileError):
            raise
        raise CorruptFileError(f"{os.fspath(path)!r} has inconsistent index contents: {e}") from e
