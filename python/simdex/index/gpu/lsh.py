"""Sign-random-projection hashing and multi-table LSH on the GPU.

Hash codes follow the float64 in-order rule documented in :func:`hash_vectors_gpu`
and are reproducible bit for bit by :func:`hash_reference`.
"""

from __future__ import annotations

import operator
import threading
from typing import Any

import numpy as np

from simdex._validate import as_matrix, canonical_metric
from simdex.index.gpu.availability import require_cuda
from simdex.index.gpu.exact import check_gpu_k
from simdex.index.gpu.interop import (
    DeviceArray,
    DeviceMatrix,
    device_view,
    empty_like,
    empty_results,
    is_device_array,
    staging,
    to_host,
    upload_like,
)

__all__ = ["MAX_PROBES", "GpuLSHIndex", "GpuLSHStore", "hash_reference", "hash_vectors_gpu"]

MAX_PROBES = 17  # kMaxProbes in cuda/include/simdex/cuda/lsh.h


# --------------------------------------------------------------------------- hashing
def _split_planes(planes_shape: tuple[int, ...], num_tables: int | None) -> tuple[int, int]:
    if len(planes_shape) == 3:
        L, K = int(planes_shape[0]), int(planes_shape[1])
        if num_tables is not None and int(num_tables) != L:
            raise ValueError(f"planes has {L} tables but num_tables={num_tables}")
    elif len(planes_shape) == 2:
        if num_tables is None:
            raise ValueError("planes of shape (L*K, d) need num_tables=L")
        L = operator.index(num_tables)
        if L < 1 or planes_shape[0] % L:
            raise ValueError(f"num_tables={L} must be >= 1 and divide the {planes_shape[0]} planes")
        K = planes_shape[0] // L
    else:
        raise ValueError(f"planes must be (L*K, d) or (L, K, d), got shape {planes_shape}")
    if not 1 <= K <= 64:
        raise ValueError(f"bits per table must be in [1, 64], got {K}")
    return L, K


def _vectors_and_planes(
    xv: DeviceMatrix, planes: Any, num_tables: int | None, mod: Any
) -> tuple[DeviceMatrix, tuple[int, ...]]:
    """``planes`` ((L*K, d) or (L, K, d)) on the device next to ``xv`` (viewed or uploaded), and
    the pointer arguments ``(x, n, x_ld, planes, num_planes, p_ld, d, L, K)`` of the hashing
    and LSH kernels. Keep the returned matrix alive until the kernel has run."""
    shape = tuple(int(s) for s in (planes.shape if is_device_array(planes) else np.shape(planes)))
    L, K = _split_planes(shape, num_tables)
    if is_device_array(planes):
        flat = planes.reshape(L * K, shape[-1]) if len(shape) == 3 else planes
        pv = device_view(flat, "planes", xv.cols, mod)
    else:
        pv = upload_like(as_matrix(np.asarray(planes).reshape(L * K, -1), "planes", dim=xv.cols)[0], xv, mod)
    return pv, (xv.ptr, xv.rows, xv.ld, pv.ptr, pv.rows, pv.ld, xv.cols, L, K)


def hash_reference(x: Any, planes: Any, num_tables: int | None = None) -> np.ndarray:
    """NumPy implementation of the GPU hashing rule (slow; for tests and other backends).

    Projection ``p = sum_c double(x[c]) * double(plane[c])`` accumulated in order
    c = 0, 1, ..., d-1 in float64 (each product is exact); bit j of the code of
    table t is ``p(plane[t*K + j]) > 0``, least significant bit first.

    Args:
        x: (n, d) vectors (float32; other dtypes are converted to float32 first).
        planes: (L*K, d) or (L, K, d) hyperplane normals (float32).
        num_tables: L, needed when ``planes`` is 2-D.

    Returns:
        uint64 codes of shape (n, L).
    """
    xs = np.ascontiguousarray(np.asarray(x, dtype=np.float32).reshape(len(x), -1), dtype=np.float64)
    p_arr = np.asarray(planes, dtype=np.float32)
    L, K = _split_planes(p_arr.shape, num_tables)
    P = p_arr.reshape(L * K, -1).astype(np.float64)
    acc = np.zeros((xs.shape[0], L * K), dtype=np.float64)
    for c in range(xs.shape[1]):  # in-order accumulation: the rule, not np.dot's order
        acc += xs[:, c, None] * P[None, :, c]
    bits = (acc > 0).reshape(xs.shape[0], L, K).astype(np.uint64)
    return (bits << np.arange(K, dtype=np.uint64)).sum(axis=2, dtype=np.uint64)


def hash_vectors_gpu(x: Any, planes: Any, num_tables: int | None = None) -> Any:
    """Sign-random-projection codes on the GPU.

    Bit j (LSB first) of the code of vector i in table t is 1 iff
    ``<x_i, planes[t*K + j]> > 0``. The projection is accumulated in float64 in
    dimension order (see :func:`hash_reference`), so the codes are the same bit
    for bit on every GPU and equal to :func:`hash_reference`. An implementation
    that projects in float32 (e.g. a BLAS) can differ only on bits whose
    projection is within its rounding error of zero.

    Args:
        x: (n, d) vectors: NumPy or a device array (CuPy, torch, CAI, DLPack).
        planes: (L*K, d) or (L, K, d) float32 hyperplane normals, 1 <= K <= 64.
        num_tables: L, needed when ``planes`` is 2-D.

    Returns:
        uint64 codes of shape (n, L), the same kind of array as ``x`` (torch
        input gives an int64 tensor holding the same 64 bits: torch has no uint64).
    """
    mod = require_cuda()
    if is_device_array(x):
        xv = device_view(x, "vectors", None, mod)
        pv, args = _vectors_and_planes(xv, planes, num_tables, mod)
        L = args[-2]
        codes, c_ptr = empty_like(xv, (xv.rows, L), np.uint64)
        mod.hash_vectors_device(*args, c_ptr, stream=xv.stream, device=xv.device)
        return codes[0] if xv.was_1d else codes
    xh, was_1d = as_matrix(x, "vectors")
    p_np = np.asarray(planes)
    L, K = _split_planes(p_np.shape, num_tables)
    ph, _ = as_matrix(p_np.reshape(L * K, -1), "planes", dim=xh.shape[1])
    codes = mod.hash_vectors(xh, ph, L, K)
    return codes[0] if was_1d else codes


class GpuLSHIndex:
    """Multi-table sign-projection LSH built and queried on the GPU.

    Build: the base is hashed with the rule of :func:`hash_vectors_gpu` and each
    table's (code, row) pairs are radix-sorted (CUB), so a bucket is a range.
    Search: each query is hashed; probe 0 of a table is its code, probe p flips the
    p-th least confident bit (smallest |projection|); the union of the probed
    buckets over all tables is re-ranked exactly (duplicates removed) and the k
    best are returned, ties by smaller row. Made for large query batches.

    Args:
        base: (n, d) vectors (host or device array); copied to the index.
        planes: (L*K, d) or (L, K, d) float32 hyperplanes, 1 <= K <= 64.
        num_tables: L, needed when ``planes`` is 2-D.
        metric: ``"cosine"`` (default), ``"ip"``, ``"l2"`` or ``"sql2"`` (for re-ranking).
        ids: Optional int64 id of each base row (host array, n distinct values >= 0);
            searches then return these ids, ties broken by the smaller id, instead of
            row numbers.

    Raises:
        RuntimeError: no CUDA build, driver or device.
        ValueError: ``ids`` of the wrong length, negative or repeated.
    """

    def __init__(
        self,
        base: Any,
        planes: Any,
        num_tables: int | None = None,
        metric: str = "cosine",
        ids: Any = None,
    ) -> None:
        mod = require_cuda()
        self.metric = canonical_metric(metric)
        if is_device_array(base):
            xv = device_view(base, "base", None, mod)
        elif np.ndim(base) == 2 and np.shape(base)[0] == 0 and np.shape(base)[1] >= 1:
            xv = staging(np.empty(np.shape(base), np.float32))  # empty tables: every search finds nothing
        else:
            xv = staging(as_matrix(base, "base")[0])
        pv, args = _vectors_and_planes(xv, planes, num_tables, mod)
        L, K = args[-2:]
        self._device = xv.device
        self._lsh = mod.GpuLSHIndex(*args, self.metric, stream=xv.stream, device=xv.device)
        self.dim, self.num_tables, self.hash_bits = xv.cols, L, K
        self._ids: DeviceArray | None = None
        if ids is not None:
            ids_arr = np.asarray(ids)
            if ids_arr.dtype.kind not in "iu" or ids_arr.shape != (xv.rows,):
                raise ValueError(
                    f"ids must be {xv.rows} integers (one per base row), got {ids_arr.dtype} {ids_arr.shape}"
                )
            ids_arr = np.ascontiguousarray(ids_arr, dtype=np.int64)
            if ids_arr.size and (ids_arr.min() < 0 or np.unique(ids_arr).size != ids_arr.size):
                raise ValueError("ids must be distinct and >= 0")
            if ids_arr.size:
                self._ids = DeviceArray.from_host(ids_arr)

    @property
    def bits(self) -> int:
        """Bits per table: the name before 0.2 of :attr:`hash_bits`."""
        return self.hash_bits

    def __len__(self) -> int:
        return len(self._lsh)

    def table(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """Sorted codes (uint64) of table ``t`` and the base row (int32) of each."""
        return self._lsh.table(int(t), device=self._device)

    def search(self, queries: Any, k: int = 10, num_probes: int = 1) -> tuple[Any, Any]:
        """k best candidates of each query (same contract and array kinds as :func:`knn`).

        Args:
            queries: (q, d) or (d,) host or device array.
            k: Neighbours per query, <= 1024; missing slots hold id -1, distance +inf.
            num_probes: Buckets per table, 1 <= num_probes <= min(17, bits + 1).
        """
        k = check_gpu_k(k)
        num_probes = operator.index(num_probes)
        top = min(MAX_PROBES, self.hash_bits + 1)
        if not 1 <= num_probes <= top:
            raise ValueError(f"num_probes must be in [1, {top}], got {num_probes}")
        mod = require_cuda()
        on_device = is_device_array(queries)
        if on_device:
            qv = device_view(queries, "queries", self.dim, mod)
        else:
            q, was_1d = as_matrix(queries, "queries", dim=self.dim)
            qv = staging(q)
            qv.was_1d = was_1d
        D, d_ptr, ids, i_ptr = empty_results(qv, k)
        self._lsh.search_device(
            qv.ptr,
            qv.rows,
            qv.ld,
            k,
            num_probes,
            d_ptr,
            i_ptr,
            stream=qv.stream,
            device=qv.device,
            ids_ptr=int(self._ids.__cuda_array_interface__["data"][0]) if self._ids is not None else 0,
        )
        if not on_device:
            D, ids = to_host(D), to_host(ids)
        return (D[0], ids[0]) if qv.was_1d else (D, ids)


class GpuLSHStore:
    """The store of ``LSHIndex(device="cuda")``: a host LSH store plus GPU tables built from it.

    Vectors and ids live in the host store (so add / remove / save behave as on the CPU);
    searches run on a :class:`GpuLSHIndex` of the same hyperplanes, rebuilt from the host
    store on the first search after a change. The GPU keeps a second copy of the vectors.

    Args:
        host: The host store (``simdex._core.LshIndex``) this adapter wraps.
        planes: Its float32 hyperplanes, (num_tables * hash_bits, dim).
        num_tables: Tables L.
        metric: The re-ranking metric (the host store's).

    Raises:
        RuntimeError: no CUDA build, driver or device.
    """

    def __init__(self, host: Any, planes: np.ndarray, num_tables: int, metric: str) -> None:
        require_cuda()  # a clear error now rather than at the first search
        self._host = host
        self._metric = canonical_metric(metric)
        self._planes = planes
        self._num_tables = num_tables
        self._hash_bits = planes.shape[0] // num_tables
        self._tables: GpuLSHIndex | None = None
        self._lock = threading.Lock()

    # -- writes go to the host store and drop the GPU tables ------------------------------
    def add(self, x: np.ndarray, ids: np.ndarray, replace: bool) -> None:
        self._host.add(x, ids, replace)
        self._tables = None

    def remove(self, ids: np.ndarray) -> None:
        self._host.remove(ids)
        self._tables = None

    def reset(self) -> None:
        self._host.reset()
        self._tables = None

    # -- reads are the host store's --------------------------------------------------------
    def get_vectors(self, ids: np.ndarray) -> np.ndarray:
        return self._host.get_vectors(ids)

    def contains(self, ids: np.ndarray) -> np.ndarray:
        return self._host.contains(ids)

    def export_all(self) -> tuple[np.ndarray, np.ndarray]:
        return self._host.export_all()

    def table_stats(self, t: int) -> Any:
        return self._host.table_stats(t)

    def memory_bytes(self) -> int:
        return int(self._host.memory_bytes())

    def __len__(self) -> int:
        return len(self._host)

    # -- searches run on the GPU tables -----------------------------------------------------
    def _current_tables(self) -> GpuLSHIndex:
        with self._lock:
            if self._tables is None:
                vectors, ids = self._host.export_all()
                self._tables = GpuLSHIndex(
                    vectors.reshape(-1, self._planes.shape[1]),
                    self._planes,
                    num_tables=self._num_tables,
                    metric=self._metric,
                    ids=ids,
                )
            return self._tables

    def _check_probes(self, num_probes: int) -> int:
        top = min(MAX_PROBES, self._hash_bits + 1)
        if num_probes > top:
            raise ValueError(
                f"num_probes={num_probes} is more than the GPU tables probe (at most {top}: the own "
                f"bucket plus one single-bit flip per bit, up to {MAX_PROBES}); pass "
                f"num_probes <= {top} or use device='cpu'"
            )
        return num_probes

    def search(
        self, q: np.ndarray, k: int, num_probes: int, num_threads: int = 0, refine: int = 0
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Host queries -> host ``(D, ids, candidates)``; the kernel does not count candidates (NaN).

        ``num_threads`` and ``refine`` are accepted for parity with the host store and ignored.
        """
        del num_threads, refine
        D, ids = self._current_tables().search(q, k, num_probes=self._check_probes(num_probes))
        return D, ids, np.full(q.shape[0], np.nan)

    def search_device(self, queries: Any, k: int, num_probes: int) -> tuple[Any, Any]:
        """Device-array queries -> results of the same kind of array."""
        return self._current_tables().search(queries, k, num_probes=self._check_probes(num_probes))
