"""Exact k-NN on the GPU: the function :func:`knn` and the store :class:`GpuExactIndex`.

Precision: exact search is full FP32 by default; ``precision="tf32x3"`` / ``"tf32"``
use tensor cores (see :func:`knn`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from simdex._validate import as_matrix, canonical_metric, check_k, optional_positive_int
from simdex.index.gpu.availability import require_cuda
from simdex.index.gpu.interop import device_view, empty_results, is_device_array, to_host, upload_like

__all__ = ["MAX_K", "PRECISIONS", "GpuExactIndex", "GpuFlatIndex", "check_gpu_k", "check_precision", "knn"]

MAX_K = 1024  # kMaxK in cuda/include/simdex/cuda/knn.h
PRECISIONS = ("fp32", "tf32x3", "tf32")


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    return precision


def check_gpu_k(k: Any) -> int:
    k = check_k(k)
    if k > MAX_K:
        raise ValueError(f"k={k} is larger than the GPU top-k supports ({MAX_K}); use device='cpu'")
    return k


# --------------------------------------------------------------------------- exact search
def knn(
    queries: Any,
    base: Any,
    k: int = 10,
    metric: str = "cosine",
    *,
    query_block: int | None = None,
    base_block: int | None = None,
    precision: str = "fp32",
) -> tuple[Any, Any]:
    """Exact k nearest neighbours on the GPU (same contract as :func:`simdex.knn`).

    Args:
        queries: (q, d) or (d,) array: NumPy, CuPy, PyTorch CUDA tensor, or any
            ``__cuda_array_interface__`` / DLPack device array.
        base: (n, d) array of the same kinds.
        k: Neighbours per query, 1 <= k <= 1024; slots beyond n hold id -1 and
            distance +inf.
        metric: ``"cosine"``, ``"ip"``, ``"l2"`` or ``"sql2"``.
        query_block: Queries per tile (default 4096).
        base_block: Base vectors per tile (default 4096); two tiles of
            ``4 * query_block * base_block`` bytes each live in device memory.
        precision: ``"fp32"`` (default; SIMT FP32, matches the CPU to ~1e-6),
            ``"tf32x3"`` (tensor cores with a 3xTF32 split: about FP32 accuracy) or
            ``"tf32"`` (tensor cores, ~1e-3 relative error: near-ties may reorder).
            The TF32 modes need compute capability >= 8.0.

    Returns:
        ``(distances, ids)``: float32 and int64 of shape (q, k) ((k,) for a 1-D
        query), distances ascending, ties by smaller id; the same kind of array as
        ``queries``.

    Raises:
        RuntimeError: no CUDA build, driver or device.
        ValueError: bad shapes, NaN / infinity, k out of range, unknown metric.
        TypeError: non-numeric input.
    """
    metric = canonical_metric(metric)
    k = check_gpu_k(k)
    qb, bb = (
        optional_positive_int(query_block, "query_block"),
        optional_positive_int(base_block, "base_block"),
    )
    precision = check_precision(precision)
    mod = require_cuda()
    q_dev, x_dev = is_device_array(queries), is_device_array(base)
    if not q_dev and not x_dev:
        q, was_1d = as_matrix(queries, "queries")
        x, _ = as_matrix(base, "base", dim=q.shape[1])
        D, ids = mod.knn(q, x, k, metric, query_block=qb, base_block=bb, precision=precision)
        return (D[0], ids[0]) if was_1d else (D, ids)

    if q_dev:
        qv = device_view(queries, "queries", None, mod)
        if x_dev:
            xv = device_view(base, "base", qv.cols, mod)
        else:
            xv = upload_like(as_matrix(base, "base", dim=qv.cols)[0], qv, mod)
    else:
        xv = device_view(base, "base", None, mod)
        q_host, was_1d_host = as_matrix(queries, "queries", dim=xv.cols)
        qv = upload_like(q_host, xv, mod)
        qv.was_1d = was_1d_host
    if qv.device != xv.device:
        raise ValueError(f"queries are on CUDA device {qv.device} but base is on device {xv.device}")
    D, d_ptr, ids, i_ptr = empty_results(qv, k)
    mod.knn_device(
        qv.ptr,
        qv.rows,
        qv.ld,
        xv.ptr,
        xv.rows,
        xv.ld,
        qv.cols,
        k,
        metric,
        d_ptr,
        i_ptr,
        stream=qv.stream,
        query_block=qb,
        base_block=bb,
        device=qv.device,
        precision=precision,
    )
    if not q_dev:  # host queries -> host results
        D, ids = to_host(D), to_host(ids)
    return (D[0], ids[0]) if qv.was_1d else (D, ids)


# --------------------------------------------------------------------------- flat index
class GpuExactIndex:
    """Vectors in device memory with exact search; the GPU twin of ``simdex._core.FlatIndex``.

    :class:`simdex.ExactIndex` (``device="cuda"``) builds one and handles ids,
    validation and saving; use that unless you need device arrays in and out.
    The saved format is the CPU one (``export_all`` returns host arrays), so an
    index saved from the GPU loads on the CPU and the reverse.

    Args:
        dim: Vector dimension.
        metric: ``"cosine"``, ``"ip"``, ``"l2"`` or ``"sql2"``.
        device: CUDA device ordinal.

    Raises:
        RuntimeError: no CUDA build, driver or device.
    """

    def __init__(self, dim: int, metric: str = "cosine", device: int = 0) -> None:
        self._mod = require_cuda()
        self.metric = canonical_metric(metric)
        self._index = self._mod.GpuExactIndex(int(dim), self.metric, int(device))
        self.dim = int(dim)
        self.device = int(device)

    def add(self, vectors: Any, ids: np.ndarray, replace: bool = False) -> None:
        """Add (n, dim) vectors with n int64 ids (host); vectors may be a device array."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if is_device_array(vectors):
            v = device_view(vectors, "vectors", self.dim, self._mod)
            if v.device != self.device:
                raise ValueError(f"vectors are on CUDA device {v.device}, the index on {self.device}")
            self._index.add_device(v.ptr, v.rows, v.ld, ids, bool(replace), stream=v.stream)
        else:
            x, _ = as_matrix(vectors, "vectors", dim=self.dim)
            self._index.add(x, ids, bool(replace))

    def remove(self, ids: np.ndarray) -> None:
        """Remove ids (all or nothing). Raises KeyError for an unknown id."""
        self._index.remove(np.ascontiguousarray(ids, dtype=np.int64))

    def search(
        self,
        queries: Any,
        k: int,
        num_threads: int = 0,
        *,
        query_block: int | None = None,
        base_block: int | None = None,
        precision: str = "fp32",
    ) -> tuple[Any, Any]:
        """k-NN of (q, dim) queries; results are the same kind of array as ``queries``.

        ``num_threads`` is accepted for parity with the CPU index and ignored; the
        other options are those of :func:`knn`.
        """
        del num_threads
        k = check_gpu_k(k)
        qb, bb = (
            optional_positive_int(query_block, "query_block"),
            optional_positive_int(base_block, "base_block"),
        )
        precision = check_precision(precision)
        if is_device_array(queries):
            qv = device_view(queries, "queries", self.dim, self._mod)
            if qv.device != self.device:
                raise ValueError(f"queries are on CUDA device {qv.device}, the index on {self.device}")
            D, d_ptr, ids, i_ptr = empty_results(qv, k)
            self._index.search_device(
                qv.ptr,
                qv.rows,
                qv.ld,
                k,
                d_ptr,
                i_ptr,
                query_block=qb,
                base_block=bb,
                stream=qv.stream,
                precision=precision,
            )
            return (D[0], ids[0]) if qv.was_1d else (D, ids)
        q, was_1d = as_matrix(queries, "queries", dim=self.dim)
        D, ids = self._index.search(q, k, query_block=qb, base_block=bb, precision=precision)
        return (D[0], ids[0]) if was_1d else (D, ids)

    def get_vectors(self, ids: np.ndarray) -> np.ndarray:
        """Stored vectors (host float32, (n, dim)) of int64 ids. Raises KeyError."""
        return self._index.get_vectors(np.ascontiguousarray(ids, dtype=np.int64))

    def contains(self, ids: np.ndarray) -> np.ndarray:
        """Bool array: whether each id is present."""
        return self._index.contains(np.ascontiguousarray(ids, dtype=np.int64))

    def export_all(self) -> tuple[np.ndarray, np.ndarray]:
        """All vectors (host float32 (n, dim)) and ids (host int64 (n,)) in storage order."""
        return self._index.export_all()

    def reset(self) -> None:
        """Remove everything."""
        self._index.reset()

    def __len__(self) -> int:
        return len(self._index)


GpuFlatIndex = GpuExactIndex  # the name before 0.2
