"""Similarity search: the :class:`Index` contract and its backends.

Where a query goes (``index.search(q, k)``):

* :mod:`simdex.index.base`: :class:`Index` checks ``q`` and ``k`` (:mod:`simdex._validate`)
  and hands the float32 matrix to the backend's ``_backend_search``;
* :mod:`simdex.index.exact` (:class:`ExactIndex`, :func:`knn`) or
  :mod:`simdex.index.lsh` (:class:`LSHIndex`, :func:`tune_lsh`) call the native store
  (``simdex._core``, built from ``cpp/``), or, with ``device="cuda"``,
* :mod:`simdex.index.gpu` (exact search, hashing and LSH tables on ``simdex._cuda``).

:mod:`simdex.index.io` is the checksummed container every ``save`` writes and
:func:`load_index` reads.
"""

from __future__ import annotations

from simdex._validate import METRICS
from simdex.index.base import Index, load_index
from simdex.index.build import build_info
from simdex.index.exact import ExactIndex, knn
from simdex.index.hashing import RandomProjection, hash_vectors
from simdex.index.io import CorruptFileError
from simdex.index.lsh import LSHIndex, TuneResult, tune_lsh

__all__ = [
    "METRICS",
    "CorruptFileError",
    "ExactIndex",
    "Index",
    "LSHIndex",
    "RandomProjection",
    "TuneResult",
    "build_info",
    "hash_vectors",
    "knn",
    "load_index",
    "tune_lsh",
]
