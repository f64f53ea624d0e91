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
from typing import Any, ClassVar

import numpy as np

from simdex._validate import (
    MAX_ID,
    as_ids,
    as_matrix,
    canonical_metric,
    check_device,
    check_k,
    check_positive_int,
    lookup_ids,
)
from simdex.index.io import CorruptFileError, read_container, write_container

__all__ = ["Index", "load_index"]


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
        """Check ``queries`` and ``k`` once, then hand them to the backend."""
        k = check_k(k)
        if self.device == "cuda":
            from simdex.index.gpu.interop import is_device_array

            if is_device_array(queries):  # stays on the device, results come back there
                return self._device_search(queries, k, options)
        q, was_1d = as_matrix(queries, "queries", dim=self.dim)
        D, ids = self._backend_search(q, k, options)
        return (D[0], ids[0]) if was_1d else (D, ids)

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
        except (KeyError, TypeError, ValueError) as e:
            if isinstance(e, CorruptFileError):
                raise
            raise CorruptFileError(f"has inconsistent index contents: {e}") from e

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the index to ``path`` atomically (versioned, checksummed).

        The previous file at ``path`` survives any failure (full disk, crash).
        """
        with self._lock:
            params, arrays = self.state()
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
    try:
        return Index.from_state({**params, "kind": kind}, arrays, device=device)
    except CorruptFileError as e:
        raise CorruptFileError(f"{os.fspath(path)!r} {e}") from e
