"""The one place that chooses where an index keeps its vectors: :func:`new_store`.

An index holds one *store* and talks to it through one protocol, whatever the device:
``add(x, ids, replace)``, ``remove(ids)``, ``get_vectors(ids)``, ``contains(ids)``,
``export_all()``, ``reset()``, ``len()`` and ``search(q, k, ...)``; stores that can
answer device-array queries also have ``search_device(queries, k, ...)``.

==========  ===================================  ==========================================
kind        ``device="cpu"``                     ``device="cuda"``
==========  ===================================  ==========================================
``exact``   ``simdex._core.FlatIndex``           :class:`simdex.index.gpu.GpuExactIndex`
``lsh``     ``simdex._core.LshIndex``            :class:`simdex.index.gpu.lsh.GpuLSHStore`
                                                 (host store + GPU tables)
==========  ===================================  ==========================================
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from simdex._runtime import core
from simdex._validate import check_device

__all__ = ["Store", "new_store"]


class Store(Protocol):
    """What every store offers, whatever its kind and device (``search`` differs by kind)."""

    def add(self, vectors: np.ndarray, ids: np.ndarray, replace: bool = False) -> None:
        """Add (n, dim) float32 vectors with n int64 ids (``replace``: overwrite present ids)."""

    def remove(self, ids: np.ndarray) -> None:
        """Remove int64 ids, all or nothing (``KeyError`` for an unknown id)."""

    def reset(self) -> None:
        """Remove everything."""

    def get_vectors(self, ids: np.ndarray) -> np.ndarray:
        """float32 (n, dim) vectors of int64 ids (``KeyError`` for an unknown id)."""

    def contains(self, ids: np.ndarray) -> np.ndarray:
        """bool (n,): whether each id is present."""

    def export_all(self) -> tuple[np.ndarray, np.ndarray]:
        """All vectors (float32 (n, dim)) and ids (int64 (n,)), in storage order."""

    def __len__(self) -> int:
        """Number of stored vectors."""


def new_store(
    kind: str,
    device: str,
    dim: int,
    metric: str,
    *,
    fp16_prefilter: bool = True,
    planes: np.ndarray | None = None,
    num_tables: int = 0,
    hash_bits: int = 0,
    center: np.ndarray | None = None,
    sketch_words: int = 0,
    sketch_planes: np.ndarray | None = None,
    table_sketches: bool = False,
) -> Any:
    """A new, empty store for an index of ``kind`` on ``device``.

    Args:
        kind: ``"exact"`` or ``"lsh"``.
        device: ``"cpu"`` or ``"cuda"`` (raises ``RuntimeError`` when CUDA cannot run).
        dim: Vector dimension.
        metric: Canonical metric name.
        fp16_prefilter: ``exact`` on the CPU: keep the float16 shadow.
        planes: ``lsh``: the float32 hyperplanes, shape (num_tables * hash_bits, dim).
        num_tables: ``lsh``: tables L.
        hash_bits: ``lsh``: bits per table K.
        center: ``lsh`` on the CPU: hash ``x/|x| - center`` (float32 (dim,)), or None.
        sketch_words: ``lsh`` on the CPU: 64-bit sketch words per vector (0 to 8).
        sketch_planes: ``lsh`` on the CPU: float32 (64 * sketch_words, dim) sketch hyperplanes.
        table_sketches: ``lsh`` on the CPU: each table keeps its entries' sketches in bucket
            order (for the partitioned scan, ``scan_fraction < 1``; needs hash_bits <= 16).
    """
    if check_device(device) == "cuda":
        if kind == "exact":
            from simdex.index.gpu.exact import GpuExactIndex

            return GpuExactIndex(dim, metric)
        if kind == "lsh":
            from simdex.index.gpu.lsh import GpuLSHStore

            assert planes is not None
            host = core().LshIndex(dim, num_tables, hash_bits, planes, metric)
            return GpuLSHStore(host, planes, num_tables, metric)
    elif kind == "exact":
        return core().FlatIndex(dim, metric, fp16_prefilter=fp16_prefilter)
    elif kind == "lsh":
        assert planes is not None
        return core().LshIndex(
            dim,
            num_tables,
            hash_bits,
            planes,
            metric,
            center=center,
            sketch_words=sketch_words,
            sketch_planes=sketch_planes,
            table_sketches=table_sketches,
        )
    raise ValueError(f"unknown store kind {kind!r}; expected 'exact' or 'lsh'")
