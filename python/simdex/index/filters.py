"""Search-time id filters: which stored ids a search may return.

``index.search(q, k, filter=...)`` and ``index.range_search(q, radius, filter=...)``
accept:

* a sequence or integer array of ids: an allow-list (only these may be returned);
* :class:`IdFilter` ``.allow(ids)`` / ``.deny(ids)`` (the deny-list excludes ids);
* a boolean array ``mask`` over ids: id ``i`` may be returned iff ``mask[i]`` (ids at
  or past ``len(mask)`` may not);
* a callable ``f(ids) -> bool array``: called once per search with the int64 array of
  every stored id, it returns which may be returned (vectorised, like a NumPy
  ufunc; wrap a per-id predicate in ``np.vectorize``).

The filter is applied inside the native scan, where each candidate row is scored:
filtered-out vectors are never ranked, so a search returns the ``k`` nearest
*allowed* vectors (fewer, padded with id -1 and distance +inf, when fewer are
allowed), exactly what post-filtering an exhaustive search would give.

Example:
    >>> import numpy as np, simdex
    >>> index = simdex.ExactIndex(2)
    >>> _ = index.add(np.eye(2).repeat(3, axis=0) + np.arange(6)[:, None] * 0.01)
    >>> index.search([1, 0], k=2, filter=[4, 5])[1].tolist()
    [4, 5]
    >>> index.search([1, 0], k=2, filter=simdex.IdFilter.deny([0]))[1].tolist()
    [1, 2]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["IdFilter", "resolve_filter"]


class IdFilter:
    """An allow-list or deny-list of ids for a search.

    Args:
        ids: Integer ids (any order, repeats allowed).
        exclude: False (default): only ``ids`` may be returned (allow-list); True:
            ``ids`` may not (deny-list).

    Attributes:
        ids: The ids, sorted and distinct (int64).
        exclude: Whether this is a deny-list.
    """

    __slots__ = ("ids", "exclude")

    def __init__(self, ids: Any, *, exclude: bool = False) -> None:
        self.ids: np.ndarray = _unique_ids(ids)
        self.exclude: bool = bool(exclude)

    @classmethod
    def allow(cls, ids: Any) -> IdFilter:
        """Only ``ids`` may be returned."""
        return cls(ids)

    @classmethod
    def deny(cls, ids: Any) -> IdFilter:
        """``ids`` may not be returned."""
        return cls(ids, exclude=True)

    def __repr__(self) -> str:
        return f"IdFilter.{'deny' if self.exclude else 'allow'}({self.ids.size} ids)"


def _unique_ids(ids: Any) -> np.ndarray:
    arr = np.asarray(ids)
    if arr.size == 0:
        return np.zeros(0, np.int64)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"filter ids must be integers, got dtype {arr.dtype}")
    if arr.dtype.kind == "u" and arr.max() > np.iinfo(np.int64).max:
        arr = arr[arr <= np.iinfo(np.int64).max]  # cannot be stored ids anyway
    arr = arr.astype(np.int64, copy=False).reshape(-1)
    if arr.size < 2 or bool(np.all(arr[1:] > arr[:-1])):
        return np.ascontiguousarray(arr)  # already sorted and distinct: no sort, no copy
    return np.unique(arr)


def resolve_filter(filter: Any, stored_ids: Callable[[], np.ndarray]) -> tuple[np.ndarray, bool] | None:
    """``(sorted distinct int64 ids, deny)`` for the native search, or None for no filter.

    Args:
        filter: See the module docstring.
        stored_ids: Returns every stored id (only called for a callable filter).

    Raises:
        TypeError: a filter of another kind, non-integer ids.
        ValueError: a callable that does not return one bool per id.
    """
    if filter is None:
        return None
    if isinstance(filter, IdFilter):
        return filter.ids, filter.exclude
    if callable(filter) and not isinstance(filter, np.ndarray):
        ids = stored_ids()
        keep = np.asarray(filter(ids))
        if keep.shape != ids.shape or keep.dtype != np.bool_:
            raise ValueError(
                f"a filter callable must return a bool array of shape {ids.shape} (one per id), "
                f"got {keep.dtype} {keep.shape}"
            )
        return np.sort(ids[keep]), False
    arr = np.asarray(filter)
    if arr.dtype == np.bool_:
        if arr.ndim != 1:
            raise ValueError(f"a boolean filter mask must be 1-D (one entry per id), got shape {arr.shape}")
        return np.flatnonzero(arr).astype(np.int64), False
    if arr.dtype.kind in "iu" or arr.size == 0:
        return _unique_ids(arr), False
    raise TypeError(
        "filter must be integer ids, a boolean mask over ids, simdex.IdFilter or a callable over ids, "
        f"got {type(filter).__name__} of dtype {arr.dtype}"
    )
