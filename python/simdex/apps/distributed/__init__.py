"""Scale-out: one index sharded over Ray actors, with the single-index API and answers.

Needs Ray (``pip install "simdex[ray]"``); the routing hash and the top-k merge are
plain NumPy and import without it.

Example:
    >>> import numpy as np, ray  # doctest: +SKIP
    >>> from simdex.apps.distributed import ShardedIndex  # doctest: +SKIP
    >>> ray.init(num_cpus=2)  # or ray.init(address="ray://head:10001")  # doctest: +SKIP
    >>> index = ShardedIndex(dim=128, num_shards=4, replicas=2)  # doctest: +SKIP
    >>> ids = index.add(np.random.rand(10_000, 128))  # doctest: +SKIP
    >>> D, I = index.search(np.random.rand(3, 128), k=10)  # doctest: +SKIP
    >>> index.save("/shared/my-index")  # doctest: +SKIP
    >>> again = ShardedIndex.load("/shared/my-index", num_shards=8)  # doctest: +SKIP
"""

from simdex.apps.distributed.merge import merge_topk
from simdex.apps.distributed.routing import shard_of, splitmix64
from simdex.apps.distributed.sharded import (
    MANIFEST_NAME,
    ShardedIndex,
    ShardRestoredWarning,
    ShardUnavailableError,
)

__all__ = [
    "MANIFEST_NAME",
    "ShardedIndex",
    "ShardRestoredWarning",
    "ShardUnavailableError",
    "merge_topk",
    "shard_of",
    "splitmix64",
]
