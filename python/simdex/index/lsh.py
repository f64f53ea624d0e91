"""Locality-sensitive hashing for cosine similarity: :class:`LSHIndex`.

The hash family is sign random projections (hyperplane LSH, see
:mod:`simdex.index.hashing` for the bit rule): table ``t`` owns ``hash_bits``
Gaussian hyperplanes and near vectors tend to share buckets.

A search hashes the queries (one BLAS product), probes the ``num_probes`` most
likely buckets of every table (multi-probe: the query's own bucket, then the buckets
reached by flipping the bits whose hyperplanes pass closest to the query, in
increasing order of summed margin ``|<q, plane>|``), takes the union of the stored
vectors found there and re-ranks it by the exact distance. Returned distances are
exact; only the candidate set is approximate.

Example:
    >>> import numpy as np, simdex
    >>> x = np.random.default_rng(0).normal(size=(1000, 16)).astype("float32")
    >>> index = simdex.LSHIndex(16, num_tables=8, hash_bits=6, num_probes=4)
    >>> ids = index.add(x)
    >>> D, I = index.search(x[:3], k=1)
    >>> I[:, 0].tolist()
    [0, 1, 2]
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from simdex._validate import as_matrix, check_int, check_k, check_num_threads
from simdex.index.base import Index
from simdex.index.exact import ExactIndex
from simdex.index.hashing import RandomProjection, hash_vectors
from simdex.index.io import CorruptFileError
from simdex.index.stores import new_store

# RandomProjection and hash_vectors live in simdex.index.hashing; kept here for old imports.
__all__ = ["LSHIndex", "RandomProjection", "hash_vectors", "tune_lsh", "TuneResult"]

MAX_PROBES = 1 << 16  # buckets probed per table at most (the native bound); 2**hash_bits is used when smaller


class LSHIndex(Index):
    """Approximate cosine k-NN: multi-table hyperplane LSH, multi-probe, exact re-rank.

    Same contract as :class:`simdex.ExactIndex` (add / search / remove / save /
    :func:`simdex.load_index` / ``len``); results are approximate (a true neighbour
    may be missed) but the distances returned are exact.

    Args:
        dim: Vector dimension.
        num_tables: Hash tables L (more: higher recall, more memory and time).
        hash_bits: Bits per table K in [1, 64] (more: smaller buckets, fewer candidates).
            A good start is about ``log2(n) - 4``; :meth:`tune` picks it from data.
        num_probes: Buckets probed per table by default (1 = the query's own bucket).
        seed: Seed of the hyperplanes (see :class:`RandomProjection`).
        metric: Re-ranking distance, ``"cosine"`` (default; the hash family is built
            for it), or ``"ip"``, ``"l2"``, ``"sql2"`` (hashing stays angular, so these
            only make sense for roughly normalised data).
        refine: Under ``"cosine"``, when a query has more than ``refine * k``
            candidates, an int8 copy of the unit vectors (one cache line each for
            dim <= 64) ranks them first and only the best ``refine * k`` are re-ranked
            with the float32 vectors; 0 re-ranks every candidate in float32. Returned
            distances are exact either way.
        device: ``"cpu"`` (default) or ``"cuda"``. With ``"cuda"`` the vectors and ids
            stay in the host store (add / remove / save work as on the CPU) and searches
            run on GPU tables (:class:`simdex.gpu.GpuLSHIndex`: same hyperplanes, CUB-sorted
            buckets, probes flipping the least confident bits, exact re-ranking), rebuilt
            from the store on the first search after a change. The GPU keeps a second copy
            of the vectors. Queries may be device arrays (CuPy, PyTorch, ...): results
            come back as the same kind. ``num_probes`` is then at most
            ``min(17, hash_bits + 1)``; ``refine`` and ``num_threads`` are ignored.

    Example:
        >>> import numpy as np
        >>> index = LSHIndex(4, num_tables=4, hash_bits=2)
        >>> _ = index.add(np.eye(4))
        >>> index.search(np.eye(4)[2], k=1)[1].tolist()
        [2]
    """

    kind = "LSHIndex"

    def __init__(
        self,
        dim: int,
        num_tables: int = 16,
        hash_bits: int = 14,
        num_probes: int = 8,
        seed: int = 0,
        metric: str = "cosine",
        refine: int = 16,
        *,
        device: str = "cpu",
    ) -> None:
        super().__init__(dim, metric, device)
        self.num_probes = check_int(num_probes, "num_probes", 1, MAX_PROBES)
        self.refine = check_int(refine, "refine", 0)
        self.projection = RandomProjection(self.dim, num_tables, hash_bits, seed)
        self._store = self._new_store(self.projection)
        self._last_candidates = float("nan")

    def _new_store(self, projection: RandomProjection) -> Any:
        return new_store(
            "lsh",
            self.device,
            self.dim,
            self.metric,
            planes=projection.flat,
            num_tables=projection.num_tables,
            hash_bits=projection.hash_bits,
        )

    @property
    def num_tables(self) -> int:
        return self.projection.num_tables

    @property
    def hash_bits(self) -> int:
        return self.projection.hash_bits

    @property
    def seed(self) -> int:
        return self.projection.seed

    # -- Index hooks ----------------------------------------------------------------------
    def _options(self, num_probes: int | None, num_threads: int | None, refine: int | None) -> dict[str, int]:
        return {
            "num_probes": (
                self.num_probes if num_probes is None else check_int(num_probes, "num_probes", 1, MAX_PROBES)
            ),
            "num_threads": check_num_threads(num_threads),
            "refine": self.refine if refine is None else check_int(refine, "refine", 0),
        }

    def _backend_search(
        self, q: np.ndarray, k: int, options: Mapping[str, Any]
    ) -> tuple[np.ndarray, np.ndarray]:
        D, ids, cand = self._store.search(
            q, k, options["num_probes"], num_threads=options["num_threads"], refine=options["refine"]
        )
        # Distinct candidates re-ranked per query (NaN on the GPU: its kernel does not count them).
        self._last_candidates = float(cand.mean()) if cand.size else 0.0
        return D, ids

    def _device_search(self, queries: Any, k: int, options: Mapping[str, Any]) -> tuple[Any, Any]:
        self._last_candidates = float("nan")
        return self._store.search_device(queries, k, options["num_probes"])

    def _params(self) -> dict[str, Any]:
        return {
            "num_tables": self.num_tables,
            "hash_bits": self.hash_bits,
            "num_probes": self.num_probes,
            "seed": self.seed,
            "refine": self.refine,
        }

    def _extra_arrays(self) -> dict[str, np.ndarray]:
        return {"planes": self.projection.flat}

    @classmethod
    def _from_state(cls, params: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> LSHIndex:
        index = cls(
            int(params["dim"]),
            num_tables=int(params["num_tables"]),
            hash_bits=int(params["hash_bits"]),
            num_probes=int(params["num_probes"]),
            seed=int(params["seed"]),
            metric=str(params["metric"]),
            refine=int(params.get("refine", 16)),
            device=str(params.get("device", "cpu")),
        )
        planes = arrays.get("planes")
        if planes is None or planes.shape != index.projection.flat.shape or planes.dtype != np.float32:
            raise CorruptFileError("LSHIndex file has missing or mis-shaped hyperplanes")
        if not np.array_equal(planes, index.projection.flat):
            # Written by a NumPy whose generator stream differs: trust the file.
            index.projection.use_planes(planes)
            index._store = index._new_store(index.projection)
        index._restore_common(params, arrays)
        return index

    # -- public extras ----------------------------------------------------------------------
    def search(
        self,
        queries: Any,
        k: int = 10,
        *,
        num_probes: int | None = None,
        num_threads: int | None = None,
        refine: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Approximate k nearest neighbours (exact distances of the candidates found).

        Args:
            queries: (q, dim) or (dim,) float32/float64.
            k: Neighbours per query; slots with no candidate hold id -1, distance +inf.
            num_probes: Buckets per table for this call (default: ``self.num_probes``).
            num_threads: Threads (default: :func:`simdex.get_num_threads`).
            refine: int8 pre-filter width for this call (default: ``self.refine``).

        Returns:
            ``(distances, ids)``: float32 / int64 arrays (q, k) ((k,) for a 1-D query),
            distances ascending, ties broken by the smaller id. With ``device="cuda"``
            and device-array queries, arrays of the queries' kind.
        """
        return self._search(queries, k, self._options(num_probes, num_threads, refine))

    def stats(self) -> dict[str, Any]:
        """Bucket occupancy, memory and the candidates of the last search.

        Returns:
            A dict with ``size``, ``num_tables``, ``hash_bits``, ``num_probes``,
            per-table lists ``nonempty_buckets``, ``mean_bucket_size``,
            ``max_bucket_size`` (live vectors only), ``memory_bytes`` (native heap,
            approximate) and ``mean_candidates_last_search`` (distinct candidates
            re-ranked per query in the most recent search; NaN before any search).
        """
        tables = [self._store.table_stats(t) for t in range(self.num_tables)]
        return {
            "size": len(self),
            "num_tables": self.num_tables,
            "hash_bits": self.hash_bits,
            "num_probes": self.num_probes,
            "nonempty_buckets": [int(t["nonempty_buckets"]) for t in tables],
            "mean_bucket_size": [float(t["mean_bucket_size"]) for t in tables],
            "max_bucket_size": [int(t["max_bucket_size"]) for t in tables],
            "memory_bytes": int(self._store.memory_bytes()),
            "mean_candidates_last_search": self._last_candidates,
        }

    def tune(
        self,
        sample_queries: Any,
        target_recall: float = 0.9,
        k: int = 10,
        *,
        num_tables: Sequence[int] | None = None,
        hash_bits: Sequence[int] | None = None,
        max_probes: int = 256,
        num_threads: int | None = None,
    ) -> TuneResult:
        """Pick tables/bits/probes for the stored data and rebuild this index with them.

        Runs :func:`tune_lsh` on the stored vectors (ground truth by
        :class:`simdex.ExactIndex`), then re-hashes the stored vectors with the chosen
        ``num_tables`` / ``hash_bits`` (same seed) and sets ``num_probes``. Ids and
        vectors are unchanged.

        Returns:
            The :class:`TuneResult` (measured recall and QPS of every setting tried).
        """
        with self._lock:
            vectors, ids = self._backend_export()
            if len(ids) == 0:
                raise ValueError("the index is empty; add vectors before tuning")
            result = tune_lsh(
                vectors,
                sample_queries,
                target_recall=target_recall,
                k=k,
                metric=self.metric,
                num_tables=num_tables,
                hash_bits=hash_bits,
                max_probes=max_probes,
                seed=self.seed,
                num_threads=num_threads,
            )
            p = result.params
            projection = RandomProjection(self.dim, p["num_tables"], p["hash_bits"], self.seed)
            store = self._new_store(projection)
            store.add(vectors, ids, False)
            self.projection, self._store, self.num_probes = projection, store, p["num_probes"]
        return result


# --------------------------------------------------------------------------- tuning
@dataclasses.dataclass(frozen=True)
class TuneResult:
    """Outcome of :func:`tune_lsh`: every number in it was measured on the sample.

    Attributes:
        params: The chosen ``num_tables``, ``hash_bits``, ``num_probes`` (pass them to
            :class:`LSHIndex`).
        recall: Mean recall@k measured for the chosen setting.
        qps: Queries per second measured for the chosen setting (sample search only).
        reached_target: Whether any setting reached ``target_recall``; if not, the
            setting with the highest measured recall is chosen.
        target_recall: The target asked for.
        k: The k of recall@k.
        table: One dict per setting tried: num_tables, hash_bits, num_probes, recall,
            qps, mean_candidates.
    """

    params: dict[str, int]
    recall: float
    qps: float
    reached_target: bool
    target_recall: float
    k: int
    table: list[dict[str, float]]


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = 0
    for f, t in zip(found, truth):
        hits += len(np.intersect1d(f[f >= 0], t[t >= 0], assume_unique=True))
    return hits / truth.size


def tune_lsh(
    data: Any,
    sample_queries: Any,
    target_recall: float = 0.9,
    k: int = 10,
    *,
    metric: str = "cosine",
    num_tables: Sequence[int] | None = None,
    hash_bits: Sequence[int] | None = None,
    max_probes: int = 256,
    seed: int = 0,
    num_threads: int | None = None,
) -> TuneResult:
    """Choose LSH parameters for ``data`` by measuring recall and speed on a sample.

    For every (hash_bits, num_tables) in the grid, an :class:`LSHIndex` of ``data`` is
    built and searched with 1, 2, 4, ... probes per table (up to ``max_probes``) until
    it reaches ``target_recall``; recall@k is measured against exact neighbours from
    :class:`simdex.ExactIndex`. The chosen setting is the fastest (measured QPS) that
    reached the target, or else the one with the highest recall. Nothing is
    extrapolated: the returned recall and QPS are the ones measured.

    Args:
        data: (n, d) vectors the index will hold.
        sample_queries: (q, d) representative queries (a few hundred suffice).
        target_recall: Wanted recall@k in (0, 1].
        k: Neighbours per query.
        metric: Re-ranking metric.
        num_tables: Table counts to try (default 4, 8, 16, 32).
        hash_bits: Bits to try (default: three values around ``log2(n) - 4``).
        max_probes: Largest probes per table to try.
        seed: Hyperplane seed.
        num_threads: Threads for the searches being timed.

    Returns:
        A :class:`TuneResult`.
    """
    x, _ = as_matrix(data, "data")
    q, _ = as_matrix(sample_queries, "sample_queries", dim=x.shape[1])
    k = check_k(k)
    if not 0.0 < float(target_recall) <= 1.0:
        raise ValueError(f"target_recall must be in (0, 1], got {target_recall}")
    max_probes = check_int(max_probes, "max_probes", 1)
    n, dim = x.shape
    if hash_bits is None:
        center = max(2, int(round(math.log2(max(n, 4)))) - 4)
        hash_bits = sorted({min(64, max(1, center + off)) for off in (-2, 0, 2)})
    if num_tables is None:
        num_tables = (4, 8, 16, 32)
    bits_list = [check_int(b, "hash_bits", 1, 64) for b in hash_bits]
    tables_list = [check_int(t, "num_tables", 1, 4096) for t in num_tables]

    exact = ExactIndex(dim, metric)
    exact.add(x)
    _, truth = exact.search(q, min(k, n), num_threads=num_threads)
    del exact

    rows: list[dict[str, float]] = []
    ids = np.arange(n, dtype=np.int64)
    for bits in bits_list:
        for tables in tables_list:
            index = LSHIndex(dim, num_tables=tables, hash_bits=bits, seed=seed, metric=metric)
            index.add(x, ids)
            probes = 1
            while True:
                index.search(q[: min(len(q), 8)], k, num_probes=probes, num_threads=num_threads)  # warm
                t0 = time.perf_counter()
                _, found = index.search(q, k, num_probes=probes, num_threads=num_threads)
                dt = time.perf_counter() - t0
                rec = _recall(found[:, : truth.shape[1]], truth)
                rows.append(
                    {
                        "num_tables": tables,
                        "hash_bits": bits,
                        "num_probes": probes,
                        "recall": rec,
                        "qps": len(q) / max(dt, 1e-9),
                        "mean_candidates": index.stats()["mean_candidates_last_search"],
                    }
                )
                if rec >= target_recall or probes >= max_probes or (bits < 63 and probes >= 2**bits):
                    break
                probes *= 2
            del index
    good = [r for r in rows if r["recall"] >= target_recall]
    best = max(good, key=lambda r: r["qps"]) if good else max(rows, key=lambda r: (r["recall"], r["qps"]))
    params = {key: int(best[key]) for key in ("num_tables", "hash_bits", "num_probes")}
    return TuneResult(
        params=params,
        recall=float(best["recall"]),
        qps=float(best["qps"]),
        reached_target=bool(good),
        target_recall=float(target_recall),
        k=k,
        table=rows,
    )
