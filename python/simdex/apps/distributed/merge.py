"""Merge per-shard top-k lists into one global top-k with the single-index tie rule."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["merge_topk"]

_NO_ID = np.iinfo(np.int64).max  # sorts padding (id -1) after every real id


def merge_topk(
    distances: Sequence[np.ndarray], ids: Sequence[np.ndarray], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The k best of several top-k lists, ordered by distance, then by the smaller id.

    This is the order every simdex index returns, so merging the per-shard answers
    of an exact search gives exactly the single index's answer: a row of the global
    top-k is in its shard's top-k, and ties at the cut are settled the same way on
    both sides. Missing results (id -1, distance +inf) go last, as in one index.

    Args:
        distances: One float32 array (q, k_s) per shard, each row ascending.
        ids: One int64 array (q, k_s) per shard; -1 marks a missing result.
        k: Neighbours to keep per query.

    Returns:
        ``(D, I)``: float32 (q, k) and int64 (q, k); slots with no result hold
        distance +inf and id -1.
    """
    if len(distances) != len(ids) or not distances:
        raise ValueError(f"need one id array per distance array, got {len(distances)} and {len(ids)}")
    D = np.concatenate([np.asarray(d, dtype=np.float32) for d in distances], axis=1)
    I = np.concatenate([np.asarray(i, dtype=np.int64) for i in ids], axis=1)
    if D.shape != I.shape:
        raise ValueError(f"distance and id arrays disagree in shape: {D.shape} vs {I.shape}")
    missing = I < 0
    D = np.where(missing, np.float32(np.inf), D)
    key = np.where(missing, _NO_ID, I)
    order = np.lexsort((key, D), axis=-1)[:, :k]  # last key is primary: distance, then id
    D = np.take_along_axis(D, order, axis=1)
    I = np.take_along_axis(I, order, axis=1)
    if D.shape[1] < k:  # fewer candidates than k over all shards
        pad = k - D.shape[1]
        D = np.concatenate([D, np.full((D.shape[0], pad), np.inf, np.float32)], axis=1)
        I = np.concatenate([I, np.full((I.shape[0], pad), -1, np.int64)], axis=1)
    return np.ascontiguousarray(D), np.ascontiguousarray(I)
