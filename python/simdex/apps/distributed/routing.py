"""Which shard holds an id: a stable hash of the int64 id, modulo the shard count.

The hash is splitmix64's finaliser (Steele, Lea and Flood, "Fast splittable
pseudorandom number generators", 2014) applied to the id's 64-bit two's
complement pattern. It is fixed arithmetic on uint64, so the shard of an id is
the same in every process, machine, NumPy and Python version (unlike Python's
``hash()``, which is salted per process for strings and may change between
versions), and consecutive ids spread evenly over the shards.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["HASH_NAME", "splitmix64", "shard_of"]

#: Name of the routing hash, written into saved manifests so a reader can check it.
HASH_NAME = "splitmix64-mod"

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def splitmix64(ids: Any) -> np.ndarray:
    """splitmix64 of each id (its int64 bit pattern read as uint64).

    Args:
        ids: Integer array-like (any shape).

    Returns:
        uint64 array of the same shape.

    Example:
        >>> int(splitmix64([0])[0])
        16294208416658607535
    """
    arr = np.asarray(ids)
    # On 1-D arrays: NumPy wraps array arithmetic mod 2**64 silently, but warns on scalars.
    z = np.ascontiguousarray(arr.reshape(-1), dtype=np.int64).view(np.uint64) + _GAMMA
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return (z ^ (z >> np.uint64(31))).reshape(arr.shape)


def shard_of(ids: Any, num_shards: int) -> np.ndarray:
    """Shard (0 .. num_shards - 1) of each id: ``splitmix64(id) % num_shards``.

    Args:
        ids: int64 ids, any shape.
        num_shards: Number of shards (>= 1).

    Returns:
        int64 array of the same shape as ``ids``.
    """
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    return (splitmix64(ids) % np.uint64(num_shards)).astype(np.int64)
