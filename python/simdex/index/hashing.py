"""Sign random projections (hyperplane LSH): :class:`RandomProjection` and :func:`hash_vectors`.

Table ``t`` owns ``K = hash_bits`` Gaussian hyperplanes; the code of a vector ``x`` in that
table is the K-bit integer whose **bit j (least significant first) is 1 iff
``<x, planes[t, j]> > 0``** (computed in float32; a projection of exactly 0, or -0,
gives 0). Two vectors at angle ``theta`` share a bit with probability
``1 - theta / pi``, so near vectors tend to share buckets (:class:`simdex.LSHIndex`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from simdex._runtime import core
from simdex._validate import as_matrix, check_int, check_num_threads

__all__ = ["RandomProjection", "hash_vectors"]


def _make_planes(dim: int, num_tables: int, hash_bits: int, seed: int) -> np.ndarray:
    # Row t*K + j is hyperplane j of table t. Generated in NumPy so users can inspect
    # and reproduce them: np.random.default_rng(seed).standard_normal((L*K, dim), float32).
    rng = np.random.default_rng(seed)
    return rng.standard_normal((num_tables * hash_bits, dim), dtype=np.float32)


class RandomProjection:
    """The hyperplanes of an LSH family, generated deterministically from a seed.

    ``planes`` has shape (num_tables, hash_bits, dim) and equals
    ``np.random.default_rng(seed).standard_normal((num_tables * hash_bits, dim),
    dtype=np.float32).reshape(num_tables, hash_bits, dim)``.

    Args:
        dim: Vector dimension.
        num_tables: Number of hash tables L.
        hash_bits: Bits per table K, in [1, 64].
        seed: Seed of the NumPy generator.

    Example:
        >>> rp = RandomProjection(dim=3, num_tables=2, hash_bits=4, seed=0)
        >>> rp.hash([[1.0, 2.0, 3.0]]).shape
        (1, 2)
    """

    def __init__(self, dim: int, num_tables: int = 16, hash_bits: int = 14, seed: int = 0) -> None:
        self.dim = check_int(dim, "dim", 1)
        self.num_tables = check_int(num_tables, "num_tables", 1, 4096)
        self.hash_bits = check_int(hash_bits, "hash_bits", 1, 64)
        self.seed = check_int(seed, "seed", 0)
        self._flat = _make_planes(self.dim, self.num_tables, self.hash_bits, self.seed)

    @property
    def flat(self) -> np.ndarray:
        """float32 array (num_tables * hash_bits, dim), C order: the planes as the native code takes them.

        Row ``t * hash_bits + j`` is hyperplane ``j`` of table ``t``. Do not modify it.
        """
        return self._flat

    def use_planes(self, planes: np.ndarray) -> None:
        """Replace the hyperplanes by ``planes`` (same shape as :attr:`flat`), e.g. ones read from a file.

        Raises:
            ValueError: another shape or dtype.
        """
        if planes.shape != self._flat.shape or planes.dtype != np.float32:
            raise ValueError(f"planes must be float32 {self._flat.shape}, got {planes.dtype} {planes.shape}")
        self._flat = np.ascontiguousarray(planes)

    @property
    def planes(self) -> np.ndarray:
        """float32 array (num_tables, hash_bits, dim) (a read-only view)."""
        view = self._flat.reshape(self.num_tables, self.hash_bits, self.dim).view()
        view.flags.writeable = False
        return view

    def hash(self, x: Any, *, num_threads: int | None = None) -> np.ndarray:
        """Codes of ``x``: uint64 array (n, num_tables); see :func:`hash_vectors`."""
        return hash_vectors(x, self, num_threads=num_threads)

    def __repr__(self) -> str:
        return (
            f"RandomProjection(dim={self.dim}, num_tables={self.num_tables}, "
            f"hash_bits={self.hash_bits}, seed={self.seed})"
        )


def hash_vectors(x: Any, planes: Any, *, num_threads: int | None = None) -> np.ndarray:
    """Sign-random-projection codes of ``x``.

    Bit ``j`` (LSB first) of ``codes[i, t]`` is 1 iff ``<x[i], planes[t, j]> > 0``,
    with the product computed in float32 by one blocked BLAS sgemm.

    Args:
        x: (n, d) or (d,) float32/float64 vectors (finite).
        planes: A :class:`RandomProjection`, or an array (L, K, d) with K <= 64.
        num_threads: Threads (default: :func:`simdex.get_num_threads`).

    Returns:
        uint64 array (n, L), or (L,) for a 1-D ``x``.

    Raises:
        ValueError: shapes disagree, K > 64, NaN/inf in ``x`` or ``planes``.
        TypeError: non-numeric input.
    """
    if isinstance(planes, RandomProjection):
        flat, L, K = planes._flat, planes.num_tables, planes.hash_bits
    else:
        p = np.asarray(planes)
        if p.dtype.kind not in "fiu":
            raise TypeError(f"planes must hold real numbers, got dtype {p.dtype}")
        if p.ndim != 3:
            raise ValueError(f"planes must have shape (num_tables, hash_bits, dim), got {p.shape}")
        L, K = int(p.shape[0]), int(p.shape[1])
        if L < 1 or not 1 <= K <= 64:
            raise ValueError(f"planes must have >= 1 table and 1..64 bits per table, got shape {p.shape}")
        flat, _ = as_matrix(p.reshape(L * K, p.shape[2]), "planes")
    xm, was_1d = as_matrix(x, "x", dim=flat.shape[1])
    codes = core().lsh_hash(xm, flat, L, K, num_threads=check_num_threads(num_threads))
    return codes[0] if was_1d else codes
