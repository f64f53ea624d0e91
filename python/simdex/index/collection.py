"""A :class:`Collection`: an index plus what was indexed with each vector (labels, data).

:class:`simdex.SimilarityModel` and :class:`simdex.NearDuplicateFinder` both hold one:
the model or finder turns inputs into vectors, the collection stores them with their
labels and data, answers lookups, and saves itself inside its owner's file through
:meth:`Collection.state` / :meth:`Collection.from_state` (nested index state, no
temporary file).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from simdex.index.base import Index

__all__ = ["Collection"]

_NOTHING = object()


class Collection:
    """An index with a label and a data item per stored vector, keyed by id.

    Args:
        index: The index to fill, or None to create one with ``new_index(dim)`` when the
            first vectors arrive.
        new_index: Makes the index from the vector dimension (needed when ``index`` is None).

    Attributes:
        labels: id -> label of the items added with one.
        data: id -> data item of the items added with one.
    """

    def __init__(self, index: Index | None = None, new_index: Callable[[int], Index] | None = None) -> None:
        if index is None and new_index is None:
            raise ValueError("pass an index or a function that makes one (new_index)")
        self._index = index
        self._new_index = new_index
        self.labels: dict[int, Any] = {}
        self.data: dict[int, Any] = {}
        self._lock = threading.Lock()

    @property
    def index(self) -> Index | None:
        """The index (None until the first :meth:`add` when it is created lazily)."""
        return self._index

    def ensure_index(self, dim: int) -> Index:
        """The index, created for ``dim``-d vectors if there is none yet.

        Raises:
            ValueError: the index holds vectors of another dimension.
        """
        with self._lock:
            if self._index is None:
                assert self._new_index is not None
                self._index = self._new_index(dim)
        if int(self._index.dim) != dim:
            raise ValueError(f"got {dim}-d vectors but the index holds {self._index.dim}-d vectors")
        return self._index

    def add(
        self,
        vectors: np.ndarray,
        ids: Any = None,
        labels: Sequence[Any] | None = None,
        data: Sequence[Any] | None = None,
    ) -> np.ndarray:
        """Index ``vectors`` (n, d) and record a label and a data item for each.

        Args:
            vectors: (n, d) float32 vectors.
            ids: n ids, or None for fresh ones (see :meth:`simdex.Index.add`).
            labels: n labels, or None.
            data: n data items, or None.

        Returns:
            The int64 ids, shape (n,).
        """
        n = len(vectors)
        for name, values in (("labels", labels), ("data", data)):
            if values is not None and len(values) != n:
                raise ValueError(f"got {len(values)} {name} for {n} vectors")
        new_ids = np.asarray(self.ensure_index(int(vectors.shape[1])).add(vectors, ids), dtype=np.int64)
        id_list = new_ids.tolist()
        if labels is not None:
            self.labels.update(zip(id_list, labels))
        if data is not None:
            self.data.update(zip(id_list, data))
        return new_ids

    def labels_of(self, ids: np.ndarray, missing: Any = None, dtype: Any = object) -> np.ndarray:
        """Labels of ``ids`` (any shape; id -1 or an unlabelled item gives ``missing``)."""
        get = self.labels.get
        flat = [get(i, missing) for i in np.asarray(ids).ravel().tolist()]
        out = np.empty(len(flat), dtype=dtype)
        out[:] = flat
        return out.reshape(np.shape(ids))

    def reset(self) -> None:
        """Remove every vector, label and data item (the index's id counter keeps counting)."""
        if self._index is not None:
            self._index.reset()
        self.labels.clear()
        self.data.clear()

    def __len__(self) -> int:
        return 0 if self._index is None else len(self._index)

    # -- state ------------------------------------------------------------------------------
    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """JSON-able params and NumPy arrays of the index, labels and data (see :meth:`from_state`).

        Raises:
            TypeError: labels or data that are neither same-shape arrays nor JSON values.
        """
        params: dict[str, Any] = {"index": None}
        arrays: dict[str, np.ndarray] = {}
        if self._index is not None:
            index_params, index_arrays = self._index.state()
            params["index"] = index_params
            arrays.update({f"index/{k}": v for k, v in index_arrays.items()})
        for name in ("labels", "data"):
            enc_params, enc_arrays = _encode_values(getattr(self, name), name)
            params[name] = enc_params
            arrays.update({f"{name}/{k}": v for k, v in enc_arrays.items()})
        return params, arrays

    @classmethod
    def from_state(
        cls,
        params: Mapping[str, Any],
        arrays: Mapping[str, np.ndarray],
        new_index: Callable[[int], Index] | None = None,
        device: str | None = None,
    ) -> Collection:
        """Rebuild a collection from :meth:`state` (``new_index`` as in the constructor).

        Raises:
            CorruptFileError: inconsistent index contents.
            KeyError, TypeError, ValueError: malformed labels or data.
        """
        index = None
        if params.get("index") is not None:
            index_arrays = {k[len("index/") :]: v for k, v in arrays.items() if k.startswith("index/")}
            index = Index.from_state(params["index"], index_arrays, device=device)
        out = cls(index, new_index if new_index is not None else _no_new_index)
        for name in ("labels", "data"):
            prefix = f"{name}/"
            sub = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
            getattr(out, name).update(_decode_values(params.get(name, {"kind": "none"}), sub))
        return out


def _no_new_index(dim: int) -> Index:
    raise ValueError("this collection was saved without an index; it cannot take vectors")


def _encode_values(values: Mapping[int, Any], what: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """id -> value, for saving: same-shape NumPy values as one raw array, anything else as JSON."""
    if not values:
        return {"kind": "none"}, {}
    ids = np.array(sorted(values), dtype=np.int64)
    items = [values[i] for i in ids.tolist()]
    if all(isinstance(v, (np.ndarray, np.generic)) for v in items):
        first = np.asarray(items[0])
        if first.dtype.kind not in "O" and all(
            np.asarray(v).shape == first.shape and np.asarray(v).dtype == first.dtype for v in items
        ):
            stacked = np.ascontiguousarray(np.stack([np.asarray(v) for v in items]))
            raw = stacked.reshape(-1).view(np.uint8) if stacked.size else np.empty(0, np.uint8)
            return (
                {"kind": "array", "dtype": stacked.dtype.str, "shape": list(stacked.shape)},
                {"ids": ids, "bytes": raw},
            )
    try:
        encoded = json.dumps(items)
    except (TypeError, ValueError) as e:
        raise TypeError(
            f"{what} cannot be saved ({e}); use same-shape NumPy arrays or JSON-serialisable values"
        ) from e
    return {"kind": "json", "values": json.loads(encoded)}, {"ids": ids}


def _decode_values(params: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> dict[int, Any]:
    kind = params.get("kind", "none")
    if kind == "none":
        return {}
    ids = arrays["ids"].tolist()
    if kind == "array":
        dtype = np.dtype(params["dtype"])
        shape = tuple(int(s) for s in params["shape"])
        stacked = arrays["bytes"].view(dtype).reshape(shape)
        return {i: stacked[j] for j, i in enumerate(ids)}
    if kind == "json":
        values = params["values"]
        if len(values) != len(ids):
            raise ValueError("ids and values differ in length")
        return dict(zip(ids, values))
    raise ValueError(f"unknown value encoding {kind!r}")
