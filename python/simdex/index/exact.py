"""Exact (brute-force) search: the function :func:`knn` and the index :class:`ExactIndex`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from simdex._runtime import core
from simdex._validate import as_matrix, canonical_metric, check_device, check_k, check_num_threads
from simdex.index.base import Index
from simdex.index.stores import new_store

__all__ = ["ExactIndex", "knn"]


# --------------------------------------------------------------------------- functional
def knn(
    queries: Any,
    base: Any,
    k: int = 10,
    metric: str = "cosine",
    *,
    num_threads: int | None = None,
    device: str = "cpu",
) -> tuple[Any, Any]:
    """Exact k nearest neighbours of each query among ``base`` (no index kept).

    Args:
        queries: (q, d) or (d,) float32/float64 array.
        base: (n, d) float32/float64 array.
        k: Neighbours per query. If ``k > n`` the missing slots hold id -1 and
            distance +inf.
        metric: ``"cosine"`` (default), ``"ip"``, ``"l2"`` or ``"sql2"``.
        num_threads: Threads to use (default: :func:`simdex.get_num_threads`).
        device: ``"cpu"`` or ``"cuda"`` (needs the CUDA build and a GPU; the result
            comes back as the same kind of array as ``queries``).

    Returns:
        ``(distances, ids)``: float32 and int64 arrays of shape (q, k) (or (k,) for a
        1-D query), distances ascending; ids are row numbers of ``base``.

    Example:
        >>> import numpy as np
        >>> x = np.eye(3, dtype=np.float32)
        >>> D, I = knn(x[0], x, k=2)
        >>> I.tolist(), D.round(3).tolist()
        ([0, 1], [0.0, 1.0])
    """
    metric = canonical_metric(metric)
    k = check_k(k)
    if check_device(device) == "cuda":
        from simdex.index.gpu import exact as gpu_exact

        return gpu_exact.knn(queries, base, k=k, metric=metric)
    q, was_1d = as_matrix(queries, "queries")
    x, _ = as_matrix(base, "base", dim=q.shape[1])
    D, ids = core().knn(q, x, k, metric, num_threads=check_num_threads(num_threads))
    return (D[0], ids[0]) if was_1d else (D, ids)


class ExactIndex(Index):
    """Exact (brute-force) index: tiled BLAS inner products + SIMD top-k in C++.

    Args:
        dim: Vector dimension.
        metric: ``"cosine"`` (default), ``"ip"``, ``"l2"`` or ``"sql2"``.
        device: ``"cpu"`` (default) or ``"cuda"``.
        fp16_prefilter: CPU only. Also keep every vector's direction in
            float16 (2 bytes per component: +50% memory) so that searches with
            at most 4 queries, which are bound by memory bandwidth, read half
            the bytes: a float16 pass with a guaranteed error bound keeps every
            row that can still be among the ``k`` best, and those rows are
            re-scored in float32. Results are the exact neighbours either way;
            ``False`` saves the memory. Ignored on CPUs without F16C.

    Example:
        >>> import numpy as np
        >>> index = ExactIndex(dim=4)
        >>> ids = index.add(np.eye(4))
        >>> D, I = index.search(np.eye(4)[1], k=2)
        >>> int(I[0]), float(D[0])
        (1, 0.0)
    """

    kind = "ExactIndex"

    def __init__(
        self, dim: int, metric: str = "cosine", *, device: str = "cpu", fp16_prefilter: bool = True
    ) -> None:
        super().__init__(dim, metric, device)
        if not isinstance(fp16_prefilter, (bool, np.bool_)):
            raise TypeError(f"fp16_prefilter must be a bool, got {type(fp16_prefilter).__name__}")
        self.fp16_prefilter = bool(fp16_prefilter)
        self._store = new_store(
            "exact", self.device, self.dim, self.metric, fp16_prefilter=self.fp16_prefilter
        )

    def _params(self) -> dict[str, Any]:
        return {"fp16_prefilter": self.fp16_prefilter}

    def prefilter_stats(self) -> dict[str, int]:
        """How the float16 pre-filter has served this index (CPU) since it was made.

        Returns:
            ``{"active": 0 or 1, "queries": n, "rescored": m}``: whether the
            shadow is kept, the queries answered through it, and the rows those
            queries re-scored in float32 (``m / (n * len(self))`` is the share
            of the data the filter let through).
        """
        if self.device != "cpu":
            return {"active": 0, "queries": 0, "rescored": 0}
        return {"active": int(self._store.fp16_prefilter), **self._store.prefilter_stats()}

    def search(
        self, queries: Any, k: int = 10, *, num_threads: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """k nearest stored vectors of each query (exact).

        Args:
            queries: (q, dim) or (dim,) float32/float64; with ``device="cuda"`` also a
                device array (CuPy, PyTorch...), answered with arrays of the same kind.
            k: Neighbours per query; slots beyond ``len(self)`` hold id -1 and
                distance +inf.
            num_threads: Threads (default: :func:`simdex.get_num_threads`; ignored on
                the GPU).

        Returns:
            ``(distances, ids)``, float32 and int64 of shape (q, k) ((k,) for a 1-D
            query), distances ascending, ties broken by the smaller id.
        """
        return self._search(queries, k, {"num_threads": check_num_threads(num_threads)})

    def _backend_search(
        self, q: np.ndarray, k: int, options: Mapping[str, Any]
    ) -> tuple[np.ndarray, np.ndarray]:
        return self._store.search(q, k, num_threads=options["num_threads"])

    def _device_search(self, queries: Any, k: int, options: Mapping[str, Any]) -> tuple[Any, Any]:
        return self._store.search(queries, k)  # the GpuExactIndex takes device arrays

    @classmethod
    def _from_state(cls, params: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> ExactIndex:
        index = cls(
            int(params["dim"]),
            str(params["metric"]),
            device=str(params.get("device", "cpu")),
            fp16_prefilter=bool(params.get("fp16_prefilter", True)),
        )
        index._restore_common(params, arrays)
        return index
