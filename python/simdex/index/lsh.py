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

from simdex._validate import as_matrix, check_int, check_k, check_num_threads, check_positive_number
from simdex.index.base import Index
from simdex.index.exact import ExactIndex
from simdex.index.hashing import RandomProjection, hash_vectors
from simdex.index.io import CorruptFileError, check_finite, field_array, field_bool, field_int
from simdex.index.stores import new_store

# RandomProjection and hash_vectors live in simdex.index.hashing; kept here for old imports.
__all__ = ["LSHIndex", "RandomProjection", "hash_vectors", "tune_lsh", "TuneResult"]

MAX_FILE_PROBES = 1 << 16  # largest num_probes / refine a loaded file may claim
_MAX_SCAN_BITS = 16  # partitioned scan: the native bound on hash_bits
MAX_PROBES = 1 << 16  # buckets probed per table at most (the native bound); 2**hash_bits is used when smaller


class LSHIndex(Index):
    """Approximate cosine k-NN: multi-table hyperplane LSH, multi-probe, exact re-rank.

    Same contract as :class:`simdex.ExactIndex` (add / search / remove / save /
    :func:`simdex.load_index` / ``len``); results are approximate (a true neighbour
    may be missed) but the distances returned are exact.

    **Self-configuring by default.** ``LSHIndex(dim)`` (no tuning argument, or only
    ``target_recall``) chooses its own structure at the first search after the data
    grew (or shrank) by more than 2x: it centres the hashing on the data's mean
    direction and measures recall@10 on up to 300 of its own vectors (200 from 200,000
    vectors on; as queries, their own ids removed) for (a) centred buckets over a
    probe grid, (b) the sketch scan over a re-rank grid and, from 50,000 vectors,
    (c) the partitioned sketch scan (3 tables, 512-bit sketches) over a grid of
    scanned shares and re-rank widths, and keeps the cheapest setting (modelled cache
    lines, popcounts and candidates per query) that reaches ``target_recall`` + 0.015
    on that sample. The choice is deterministic (no timings); ``stats()["autoconfig"]``
    says what was chosen, the sample recall and the seconds it took. Passing any of
    ``num_tables``, ``hash_bits``, ``num_probes``, ``sketch_bits`` or ``rerank`` gives
    a fixed configuration instead (unset ones take 16, 14, 8, 0, 0).

    Args:
        dim: Vector dimension.
        num_tables: Hash tables L (more: higher recall, more memory and time).
        hash_bits: Bits per table K in [1, 64] (more: smaller buckets, fewer candidates).
            A good start is about ``log2(n) - 4``; :meth:`tune` picks it from data.
        num_probes: Buckets probed per table by default (1 = the query's own bucket).
        seed: Seed of the hyperplanes (see :class:`RandomProjection`) and sketches.
        metric: Re-ranking distance, ``"cosine"`` (default; the hash family is built
            for it), or ``"ip"``, ``"l2"``, ``"sql2"`` (hashing stays angular, so these
            only make sense for roughly normalised data).
        refine: Under ``"cosine"``, when more than ``refine * k`` candidates reach the
            exact stage, an int8 copy of the unit vectors (one cache line each for
            dim <= 60) ranks them first and only the best ``refine * k`` are re-ranked
            with the float32 vectors; 0 re-ranks every candidate in float32. Returned
            distances are exact either way.
        target_recall: Recall@10 the self-configuration aims at (default 0.9); only
            for a self-configuring index.
        sketch_bits: Sign bits of further random projections kept per vector (a
            multiple of 64, at most 512; default 128 when ``rerank`` is given, else 0).
            Word 0 is also stored beside every bucket entry.
        rerank: With sketches: only the ``rerank`` candidates nearest in sketch Hamming
            distance go on to the int8 / exact stage (bucket entries farther than the
            running threshold are dropped without touching their vectors); 0 = every
            candidate (classic).
        scan: With ``rerank``: rank stored sketches by a sequential, batched popcount
            scan instead of probing buckets entry by entry.
        scan_fraction: With ``scan``: the share of the stored sketches compared per
            query, summed over the tables. 1 (default) compares all of them; below 1 each
            table compares only the sketches of its best buckets for the query (least
            summed |margin| of the flipped bits first, multi-probe order) until it has
            covered ``scan_fraction * len(index) / num_tables`` entries. Each table then
            keeps its entries' sketches in bucket order (``sketch_bits / 8`` bytes per
            vector per table), so needs ``hash_bits <= 16``.
        center: Hash ``x/|x| - c`` with ``c`` the mean direction of the first batch
            added (the self-configuration always centres). Balances the buckets of
            data that lies in one cone, e.g. word embeddings.
        device: ``"cpu"`` (default) or ``"cuda"``. With ``"cuda"`` the vectors and ids
            stay in the host store (add / remove / save work as on the CPU) and searches
            run on GPU tables (:class:`simdex.gpu.GpuLSHIndex`: same hyperplanes, CUB-sorted
            buckets, probes flipping the least confident bits, exact re-ranking), rebuilt
            from the store on the first search after a change. The GPU keeps a second copy
            of the vectors. Queries may be device arrays (CuPy, PyTorch, ...): results
            come back as the same kind. ``num_probes`` is then at most
            ``min(17, hash_bits + 1)``; ``refine`` and ``num_threads`` are ignored. A
            CUDA index does not configure itself (no tuning argument gives the classic
            16 tables x 14 bits x 8 probes) and has no sketches.

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
        num_tables: int | None = None,
        hash_bits: int | None = None,
        num_probes: int | None = None,
        seed: int = 0,
        metric: str = "cosine",
        refine: int = 16,
        *,
        target_recall: float | None = None,
        sketch_bits: int | None = None,
        rerank: int | None = None,
        scan: bool = False,
        scan_fraction: float = 1.0,
        center: bool = False,
        device: str = "cpu",
    ) -> None:
        super().__init__(dim, metric, device)
        explicit = any(v is not None for v in (num_tables, hash_bits, num_probes, rerank, sketch_bits))
        if target_recall is not None and explicit:
            raise ValueError(
                "target_recall applies to a self-configuring index: leave num_tables, hash_bits, "
                "num_probes, sketch_bits and rerank unset (or call tune() for an explicit grid)"
            )
        self.auto = not explicit and self.device == "cpu"
        self.target_recall = 0.9 if target_recall is None else float(target_recall)
        if not 0.0 < self.target_recall <= 1.0:
            raise ValueError(f"target_recall must be in (0, 1], got {target_recall}")
        self.refine = check_int(refine, "refine", 0)
        if self.auto:  # placeholders until the first search configures the index
            num_tables, hash_bits, num_probes = 1, 1, 1
        self.num_probes = check_int(8 if num_probes is None else num_probes, "num_probes", 1, MAX_PROBES)
        self.rerank = check_int(0 if rerank is None else rerank, "rerank", 0)
        if sketch_bits is None:
            sketch_bits = 128 if self.rerank else 0
        sketch_bits = check_int(sketch_bits, "sketch_bits", 0, 512)
        if sketch_bits % 64:
            raise ValueError(f"sketch_bits must be a multiple of 64 in [0, 512], got {sketch_bits}")
        if self.rerank and not sketch_bits:
            raise ValueError("rerank > 0 ranks candidates by their sketches: pass sketch_bits >= 64")
        self.scan = bool(scan)
        if self.scan and not self.rerank:
            raise ValueError("scan=True ranks every sketch and re-ranks the best: pass rerank >= 1")
        self.scan_fraction = _check_fraction(scan_fraction)
        if self.scan_fraction < 1.0 and not self.scan:
            raise ValueError("scan_fraction < 1 applies to the sketch scan: pass scan=True and rerank >= 1")
        if self.scan_fraction < 1.0 and not self.auto and (hash_bits or 14) > _MAX_SCAN_BITS:
            raise ValueError(f"scan_fraction < 1 needs hash_bits <= {_MAX_SCAN_BITS}, got {hash_bits}")
        if self.device == "cuda":
            if sketch_bits or center:
                raise ValueError("sketches and centring are CPU features; use device='cpu'")
        self.projection = RandomProjection(
            self.dim, 16 if num_tables is None else num_tables, 14 if hash_bits is None else hash_bits, seed
        )
        self.sketch_bits = sketch_bits
        self._center: np.ndarray | None = None
        self._center_wanted = bool(center)
        self._configured_size = 0
        self.autoconfig: dict[str, Any] = {}
        self._store = self._new_store(self.projection)
        if self._center_wanted and not self.auto:
            self._center = np.zeros(self.dim, np.float32)  # set from the data at the first add
        self._last_candidates = float("nan")
        self._last_scanned = float("nan")

    def _sketch_planes(self) -> np.ndarray | None:
        """The sketch hyperplanes: Gaussian draws from the seed, orthonormalised in groups
        of ``dim`` (super-bit LSH, Ji et al. 2012). Orthogonal directions estimate the angle
        with less variance than independent ones: on GloVe-50 (partitioned scan, 512 bits)
        recall@10 at re-rank 80 / 120 went from 0.866 / 0.899 to 0.899 / 0.921, and on
        MiniLM (full scan) at re-rank 30 from 0.890 to 0.925."""
        if not self.sketch_bits:
            return None
        rng = np.random.default_rng([self.seed, 1])
        g = rng.standard_normal((self.sketch_bits, self.dim), dtype=np.float32).astype(np.float64)
        out = np.empty_like(g)
        for s in range(0, len(g), self.dim):
            block = g[s : s + self.dim]
            q, r = np.linalg.qr(block.T)  # (dim, m), m <= dim
            out[s : s + len(block)] = (q * np.where(np.diag(r) < 0, -1.0, 1.0)).T
        return np.ascontiguousarray(out, dtype=np.float32)

    def _new_store(self, projection: RandomProjection) -> Any:
        return new_store(
            "lsh",
            self.device,
            self.dim,
            self.metric,
            planes=projection.flat,
            num_tables=projection.num_tables,
            hash_bits=projection.hash_bits,
            center=self._center,
            sketch_words=self.sketch_bits // 64,
            sketch_planes=self._sketch_planes(),
            table_sketches=self._table_sketches(projection.hash_bits),
        )

    def _table_sketches(self, hash_bits: int) -> bool:
        return bool(
            self.scan and self.scan_fraction < 1.0 and self.sketch_bits and hash_bits <= _MAX_SCAN_BITS
        )

    def _backend_add(self, x: np.ndarray, ids: np.ndarray, replace: bool) -> None:
        super()._backend_add(x, ids, replace)
        if self._center_wanted and self._center is not None and not self._center.any() and len(self._store):
            # center=True: the mean direction of the first batch, fixed from then on.
            self._center = self._store.mean_unit()
            self._rebuild(self.num_tables, self.hash_bits)

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
    def _options(
        self,
        num_probes: int | None,
        num_threads: int | None,
        refine: int | None,
        rerank: int | None = None,
        scan_fraction: float | None = None,
    ) -> dict[str, Any]:
        return {
            "scan_fraction": None if scan_fraction is None else _check_fraction(scan_fraction),
            "num_probes": None if num_probes is None else check_int(num_probes, "num_probes", 1, MAX_PROBES),
            "num_threads": check_num_threads(num_threads),
            "refine": self.refine if refine is None else check_int(refine, "refine", 0),
            "rerank": None if rerank is None else check_int(rerank, "rerank", 0),
        }

    def _backend_search(
        self, q: np.ndarray, k: int, options: Mapping[str, Any]
    ) -> tuple[np.ndarray, np.ndarray]:
        if self.device == "cuda":
            probes = self.num_probes if options["num_probes"] is None else options["num_probes"]
            D, ids, cand = self._store.search(q, k, probes)
            self._last_candidates = self._last_scanned = float("nan")  # the kernel does not count them
            return D, ids
        if self.auto:
            self._maybe_configure()  # chooses num_probes / rerank: read them after this
        probes = self.num_probes if options["num_probes"] is None else options["num_probes"]
        rer = self.rerank if options["rerank"] is None else options["rerank"]
        if rer and not self.sketch_bits:
            raise ValueError("rerank > 0 needs sketches: build the index with sketch_bits >= 64")
        D, ids, cand, scanned = self._store.search(
            q,
            k,
            probes,
            num_threads=options["num_threads"],
            refine=options["refine"],
            rerank=rer,
            scan=self.scan and rer > 0,
            scan_fraction=self._scan_fraction(options),
            **self._filter_kwargs(options),
        )
        # Distinct candidates per query, and bucket entries (or sketches) examined.
        self._last_candidates = float(cand.mean()) if cand.size else 0.0
        self._last_scanned = float(scanned.mean()) if scanned.size else 0.0
        return D, ids

    def _backend_range_search(
        self, q: np.ndarray, radius: float, options: Mapping[str, Any]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.device != "cpu":
            raise NotImplementedError("range_search runs on the CPU tables only (device='cpu')")
        if self.auto:
            self._maybe_configure()  # chooses num_probes / rerank: read them after this
        probes = self.num_probes if options["num_probes"] is None else options["num_probes"]
        rer = self.rerank if options.get("rerank") is None else options["rerank"]
        lims, D, ids, cand = self._store.range_search(
            q,
            radius,
            probes,
            num_threads=options["num_threads"],
            rerank=rer,
            scan=self.scan and rer > 0,
            scan_fraction=self._scan_fraction(options),
            **self._filter_kwargs(options),
        )
        self._last_candidates = float(cand.mean()) if cand.size else 0.0
        return lims, D, ids

    def _scan_fraction(self, options: Mapping[str, Any]) -> float:
        f = self.scan_fraction if options.get("scan_fraction") is None else options["scan_fraction"]
        if f < 1.0 and not self._store.table_sketches:
            raise ValueError(
                "scan_fraction < 1 needs the per-table sketches of an index built with scan=True, "
                f"scan_fraction < 1 and hash_bits <= {_MAX_SCAN_BITS}"
            )
        return float(f)

    def _device_search(self, queries: Any, k: int, options: Mapping[str, Any]) -> tuple[Any, Any]:
        self._last_candidates = self._last_scanned = float("nan")
        probes = self.num_probes if options["num_probes"] is None else options["num_probes"]
        return self._store.search_device(queries, k, probes)

    # -- self-configuration ---------------------------------------------------------------
    def _rebuild(self, num_tables: int, hash_bits: int) -> None:
        projection = RandomProjection(self.dim, num_tables, hash_bits, self.seed)
        self._store.rebuild(
            num_tables,
            hash_bits,
            projection.flat,
            center=self._center,
            sketch_words=self.sketch_bits // 64,
            sketch_planes=self._sketch_planes(),
            table_sketches=self._table_sketches(hash_bits),
        )
        self.projection = projection

    def _needs_configure(self) -> bool:
        n, done = len(self._store), self._configured_size
        return n > 0 and (done == 0 or n > 2 * done or 4 * n < done)

    def _maybe_configure(self) -> None:
        if not self._needs_configure():  # the common case: no lock taken
            return
        with self._lock:
            if self._needs_configure():
                self._configure()

    def _configure(self, k: int = 10) -> None:
        """Choose the structure and search knobs for the stored data (self-configuration).

        Deterministic: a function of the data and the seed, never of timings. Recall@k
        is measured on a sample of up to 300 (from 200,000 vectors on, 200) stored
        vectors used as queries (each one's own id removed from its answers) against
        exact neighbours over the store, for
        three structures: (1) centred hyperplane buckets, ``hash_bits = round(log2 n) - 1``
        and 16 / 24 / 32 tables for n below 20k / 100k / above, probes 1 .. 256 with the
        int8 pre-rank; (2) where the sketches take at most 256 MiB, the sketch scan (256
        bits for dim <= 128, else 512) with re-rank widths 10 .. 4096 (steps ~1.4x);
        (3) from 50,000 vectors, the partitioned scan (from 200,000 vectors instead of
        the full scan: on GloVe-50, 400k vectors, the full scan took twice as long at
        recall@10 0.92; and there the buckets are tried only when it misses the goal):
        3 centred tables of about 100
        entries per bucket, 512-bit sketches, shares 0.03 .. 0.45 of the sketches
        compared, re-rank widths from 40 up (per share, widening stops when the goal is
        met, when it costs more than the cheapest setting found, or when recall stops
        rising: the buckets scanned limit it). The
        setting of least modelled cost (cache lines, popcounts and bucket look-ups per
        query, constants measured on this code) whose sample recall reaches
        ``target_recall + 0.015`` wins (else the highest recall), and the index is left
        built that way. Cost at build: one or two re-hashes of the data plus a few
        hundred sample searches per setting tried (``stats()["autoconfig"]["seconds"]``).
        """
        t0 = time.perf_counter()
        store = self._store
        n, dim = len(store), self.dim
        self._center = store.mean_unit()
        rng = np.random.default_rng([self.seed, 2])
        # 300 sample queries; 200 from 200k vectors on, where each trial costs more (the
        # recall estimate's standard error is then ~0.007, under the 0.015 margin).
        size = min(n, 200 if n >= _FULL_SCAN_MAX_SIZE else 300)
        sample = np.sort(rng.choice(store.live_ids(), size=size, replace=False))
        qs = store.get_vectors(sample)
        kk = min(k, n - 1)
        rows: list[dict[str, Any]] = []
        goal = min(1.0, self.target_recall + 0.015)
        row_lines = math.ceil(dim * 4 / 64)
        int8_lines = math.ceil((dim + 4) / 64)
        bits = int(min(24, max(4, round(math.log2(max(n, 16))) - 1)))
        tables = 32 if n >= 100_000 else 24 if n >= 20_000 else 16
        scan_words = 4 if dim <= 128 else 8

        def scan_cost(tables: int, scanned: float, words: int, admitted: float, rer: int) -> float:
            # ns per query: per table (probe order, fixed work), per sketch word compared,
            # per candidate under the running threshold, and the re-rank (int8 lines
            # then float rows for dim <= 64, else float rows).
            if dim <= 64:
                rerank = rer * 8 * int8_lines + min(rer, self.refine * kk) * 8 * row_lines
            else:
                rerank = rer * 8 * row_lines
            return (
                tables * _SCAN_TABLE_NS + scanned * words * _SCAN_WORD_NS + admitted * _SCAN_ADMIT_NS + rerank
            )

        structures: list[tuple[str, int, int, int]] = []  # (mode, tables, bits, sketch words)
        pscan = n >= _PSCAN_MIN_SIZE and n * 8 * 8 * (_PSCAN_TABLES + 1) <= 768 << 20
        # The full scan, unless the collection is so large that the partitioned scan
        # (whose widest share, 0.45, costs less than a full scan) is tried instead.
        if n * scan_words * 8 <= 256 << 20 and not (pscan and n >= _FULL_SCAN_MAX_SIZE):
            structures.append(("scan", 1, 1, scan_words))
        if pscan:
            pbits = int(min(_MAX_SCAN_BITS, max(4, round(math.log2(n / _PSCAN_BUCKET)))))
            structures.append(("pscan", _PSCAN_TABLES, pbits, 8))
        structures.append(("buckets", tables, bits, 0))
        if kk < 1:
            structures = structures[:1]
        truth = None
        built: tuple[str, int, int, int] | None = None
        for mode, L, K, W in structures:
            if mode == "buckets" and n >= _FULL_SCAN_MAX_SIZE and any(r["recall"] >= goal for r in rows):
                break  # a large collection: the partitioned scan reached the goal, skip the 32-table build
            self.sketch_bits = 64 * W
            self.scan, self.scan_fraction = mode != "buckets", 0.5 if mode == "pscan" else 1.0
            self._rebuild(L, K)
            built = (mode, L, K, W)
            if kk < 1:
                rows.append(
                    {
                        "mode": mode,
                        "num_probes": 1,
                        "rerank": 1,
                        "scan_fraction": 1.0,
                        "recall": 1.0,
                        "cost": 0.0,
                    }
                )
                break
            if truth is None:
                _, truth = store.search_exact(qs, kk + 1)
                truth = _drop_self(truth, sample, kk)
            if mode == "scan":
                for rer in [r for r in _RERANK_GRID if r >= kk]:
                    _, found, cand, _ = store.search(qs, kk + 1, 1, refine=self.refine, rerank=rer, scan=True)
                    rec = _recall(_drop_self(found, sample, kk), truth)
                    cost = scan_cost(1, n, W, float(np.mean(cand)), rer)
                    rows.append(
                        {
                            "mode": mode,
                            "num_probes": 1,
                            "rerank": rer,
                            "scan_fraction": 1.0,
                            "recall": rec,
                            "cost": cost,
                        }
                    )
                    if rec >= goal or rer >= n:
                        break
            elif mode == "pscan":
                for frac in _FRACTION_GRID:
                    last = -1.0
                    for rer in [r for r in _RERANK_GRID if r >= max(kk, 40)]:
                        _, found, cand, scanned = store.search(
                            qs, kk + 1, 1, refine=self.refine, rerank=rer, scan=True, scan_fraction=frac
                        )
                        rec = _recall(_drop_self(found, sample, kk), truth)
                        cost = scan_cost(L, float(np.mean(scanned)), W, float(np.mean(cand)), rer)
                        rows.append(
                            {
                                "mode": mode,
                                "num_probes": 1,
                                "rerank": rer,
                                "scan_fraction": frac,
                                "recall": rec,
                                "cost": cost,
                            }
                        )
                        cheapest = min((r["cost"] for r in rows if r["recall"] >= goal), default=math.inf)
                        # Stop widening when the goal is met, when it cannot pay, or when the
                        # buckets scanned (not the re-rank width) limit the recall.
                        if rec >= goal or cost > cheapest or rec < last + 0.003:
                            break
                        last = rec
            else:
                for probes in _PROBE_GRID:
                    _, found, cand, _ = store.search(qs, kk + 1, probes, refine=self.refine)
                    rec = _recall(_drop_self(found, sample, kk), truth)
                    c = float(np.mean(cand))
                    cost = (
                        L * probes * 90
                        + c * (15 + 8 * int8_lines)
                        + min(c, self.refine * kk) * (15 + 8 * row_lines)
                    )
                    rows.append(
                        {
                            "mode": mode,
                            "num_probes": probes,
                            "rerank": 0,
                            "scan_fraction": 1.0,
                            "recall": rec,
                            "cost": cost,
                        }
                    )
                    cheapest = min((r["cost"] for r in rows if r["recall"] >= goal), default=math.inf)
                    if rec >= goal or cost > cheapest:  # more probes only cost more
                        break
        good = [r for r in rows if r["recall"] >= goal]
        best = (
            min(good, key=lambda r: r["cost"]) if good else max(rows, key=lambda r: (r["recall"], -r["cost"]))
        )
        mode = best["mode"]
        chosen = next(st for st in structures if st[0] == mode)
        self.scan, self.num_probes, self.rerank = (
            mode != "buckets",
            int(best["num_probes"]),
            int(best["rerank"]),
        )
        self.scan_fraction = float(best["scan_fraction"])
        if chosen != built:
            self.sketch_bits = 64 * chosen[3]
            self._rebuild(chosen[1], chosen[2])
        self._configured_size = n
        self.autoconfig = {
            "size": n,
            "mode": mode,
            "num_tables": self.num_tables,
            "hash_bits": self.hash_bits,
            "sketch_bits": self.sketch_bits,
            "num_probes": self.num_probes,
            "rerank": self.rerank,
            "scan_fraction": self.scan_fraction,
            "sample_recall": float(best["recall"]),
            "reached_target": bool(good),
            "seconds": time.perf_counter() - t0,
            "tried": rows,
        }

    def _params(self) -> dict[str, Any]:
        if self.auto and len(self._store):
            self._maybe_configure()  # save the configured index, not the placeholder
        return {
            "num_tables": self.num_tables,
            "hash_bits": self.hash_bits,
            "num_probes": self.num_probes,
            "seed": self.seed,
            "refine": self.refine,
            "sketch_bits": self.sketch_bits,
            "rerank": self.rerank,
            "scan": self.scan,
            "scan_fraction": self.scan_fraction,
            "auto": self.auto,
            "target_recall": self.target_recall,
            "configured_size": self._configured_size,
            "center": self._center is not None,
            "center_wanted": self._center_wanted,
        }

    def _extra_arrays(self) -> dict[str, np.ndarray]:
        arrays = {"planes": self.projection.flat}
        if self._center is not None:
            arrays["center"] = self._center
        return arrays

    @classmethod
    def _from_state(cls, params: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> LSHIndex:
        dim, metric = cls._check_common(params, arrays)
        tables = field_int(params, "num_tables", 1, 4096)
        bits = field_int(params, "hash_bits", 1, 64)
        # Checked against the file before anything is generated or allocated: the
        # planes are in the file, so their claimed size is bounded by its size.
        planes = field_array(arrays, "planes", "float32", (tables * bits, dim))
        check_finite(planes, "planes")
        sketch_bits = field_int(params, "sketch_bits", 0, 512, default=0)
        rerank = field_int(params, "rerank", 0, MAX_FILE_PROBES, default=0)
        scan = field_bool(params, "scan", default=False)
        fraction = params.get("scan_fraction", 1.0)
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 < fraction <= 1.0:
            raise CorruptFileError(
                f"field 'scan_fraction' must be a number in (0, 1], got {str(fraction)[:40]}"
            )
        if fraction < 1.0 and (not scan or bits > _MAX_SCAN_BITS):
            raise CorruptFileError(
                f"LSHIndex file has scan_fraction={fraction} with scan={scan}, hash_bits={bits}"
            )
        if sketch_bits % 64 or (rerank and not sketch_bits) or (scan and not rerank):
            raise CorruptFileError(
                f"LSHIndex file has an inconsistent sketch configuration (sketch_bits={sketch_bits}, "
                f"rerank={rerank}, scan={scan})"
            )
        try:
            index = cls(
                dim,
                num_tables=tables,
                hash_bits=bits,
                num_probes=field_int(params, "num_probes", 1, MAX_FILE_PROBES),
                seed=field_int(params, "seed", 0, 2**64 - 1),
                metric=metric,
                refine=field_int(params, "refine", 0, MAX_FILE_PROBES, default=16),
                sketch_bits=sketch_bits,
                rerank=rerank,
                scan=scan,
                scan_fraction=float(fraction),
                device=params.get("device", "cpu"),
            )
        except ValueError as e:  # a combination the constructor refuses
            raise CorruptFileError(f"LSHIndex file has invalid parameters: {e}") from e
        index.auto = field_bool(params, "auto", default=False)
        target = params.get("target_recall", 0.9)
        if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0.0 < target <= 1.0:
            raise CorruptFileError(
                f"field 'target_recall' must be a number in (0, 1], got {str(target)[:40]}"
            )
        index.target_recall = float(target)
        index._configured_size = field_int(params, "configured_size", 0, 2**63 - 1, default=0)
        index._center_wanted = field_bool(params, "center_wanted", default=False)
        if field_bool(params, "center", default=False):
            center = field_array(arrays, "center", "float32", (dim,))
            check_finite(center, "center")
            index._center = np.ascontiguousarray(center)
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
        rerank: int | None = None,
        scan_fraction: float | None = None,
        filter: Any = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Approximate k nearest neighbours (exact distances of the candidates found).

        Args:
            queries: (q, dim) or (dim,) float32/float64.
            k: Neighbours per query; slots with no candidate hold id -1, distance +inf.
            num_probes: Buckets per table for this call (default: ``self.num_probes``).
            num_threads: Threads (default: :func:`simdex.get_num_threads`).
            refine: int8 pre-filter width for this call (default: ``self.refine``).
            filter: Ids the search may return (see :meth:`simdex.Index.search`);
                checked for each candidate before it is ranked (CPU only).
            rerank: Sketch-filter width for this call (default: ``self.rerank``).
            scan_fraction: Share of the sketches scanned for this call (default:
                ``self.scan_fraction``; below 1 only on an index built with it below 1).

        Returns:
            ``(distances, ids)``: float32 / int64 arrays (q, k) ((k,) for a 1-D query),
            distances ascending, ties broken by the smaller id. With ``device="cuda"``
            and device-array queries, arrays of the queries' kind.
        """
        return self._search(
            queries,
            k,
            {**self._options(num_probes, num_threads, refine, rerank, scan_fraction), "filter": filter},
        )

    def range_search(
        self,
        queries: Any,
        radius: float,
        *,
        filter: Any = None,
        num_probes: int | None = None,
        num_threads: int | None = None,
        rerank: int | None = None,
        scan_fraction: float | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Candidates within distance ``radius`` of each query, CSR ``(lims, distances, ids)``.

        Approximate like :meth:`search`: every vector returned is within ``radius``
        (exact distance), but one that is not a candidate (shares no probed bucket with
        the query; with sketches, is not among the ``rerank`` nearest in sketch distance)
        is missed. A self-configuring index configures itself first, as for
        :meth:`search`. See :meth:`simdex.Index.range_search` for the layout and ``filter``.
        """
        return self._range_search(
            queries,
            radius,
            {**self._options(num_probes, num_threads, None, rerank, scan_fraction), "filter": filter},
        )

    def stats(self) -> dict[str, Any]:
        """Bucket occupancy, memory and the candidates of the last search.

        Returns:
            A dict with ``size``, ``num_tables``, ``hash_bits``, ``num_probes``,
            per-table lists ``nonempty_buckets``, ``mean_bucket_size``,
            ``max_bucket_size`` (live vectors only), ``memory_bytes`` (native heap,
            approximate), ``bytes_per_vector`` (memory_bytes / size),
            ``mean_candidates_last_search`` (distinct candidates per query in the most
            recent search -- with sketches, those that passed the sketch threshold; NaN
            before any search), ``mean_scanned_last_search`` (bucket entries or
            sketches examined per query), ``sketch_bits``, ``rerank``, ``scan``,
            ``auto`` and ``autoconfig`` (what self-configuration chose and measured).
        """
        if self.auto and len(self._store):
            self._maybe_configure()
        tables = [self._store.table_stats(t) for t in range(self.num_tables)]
        mem = int(self._store.memory_bytes())
        return {
            "size": len(self),
            "num_tables": self.num_tables,
            "hash_bits": self.hash_bits,
            "num_probes": self.num_probes,
            "nonempty_buckets": [int(t["nonempty_buckets"]) for t in tables],
            "mean_bucket_size": [float(t["mean_bucket_size"]) for t in tables],
            "max_bucket_size": [int(t["max_bucket_size"]) for t in tables],
            "memory_bytes": mem,
            "bytes_per_vector": mem / max(1, len(self)),
            "mean_candidates_last_search": self._last_candidates,
            "mean_scanned_last_search": self._last_scanned,
            "sketch_bits": self.sketch_bits,
            "rerank": self.rerank,
            "scan": self.scan,
            "scan_fraction": self.scan_fraction,
            "auto": self.auto,
            "autoconfig": {k: v for k, v in self.autoconfig.items() if k != "tried"},
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
            self.auto, self.sketch_bits, self.rerank, self.scan, self._center = False, 0, 0, False, None
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


# Grids of the self-configuration (steps of about 1.4x: the choice lands near the target).
# Partitioned scan in the self-configuration: from this size on, 3 tables of about 100
# entries per bucket, 512-bit sketches.
_PSCAN_MIN_SIZE = 50_000
_FULL_SCAN_MAX_SIZE = 200_000  # from here on, only the partitioned scan is tried
_PSCAN_TABLES = 3
_PSCAN_BUCKET = 100
_FRACTION_GRID = (0.05, 0.1, 0.15, 0.2, 0.3, 0.45)
# Cost model of both sketch scans (ns per query): per table, per sketch word compared,
# per candidate under the running threshold: a least-squares fit of 19 timings (GloVe-50,
# 1 thread: partitioned scan 3 x 12 bits x 512-bit sketches, shares 0.03-0.35, re-rank
# 40-640; full scan of 256-bit sketches, re-rank 40-480; predictions within 20%).
_SCAN_TABLE_NS = 13_000.0
_SCAN_WORD_NS = 0.07
_SCAN_ADMIT_NS = 45.0
_RERANK_GRID = (10, 15, 20, 30, 40, 60, 80, 120, 160, 240, 320, 480, 640, 960, 1280, 1920, 2560, 4096)
_PROBE_GRID = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)


def _check_fraction(value: Any) -> float:
    f = check_positive_number(value, "scan_fraction")
    if f > 1.0:
        raise ValueError(f"scan_fraction must be in (0, 1], got {value}")
    return f


def _drop_self(found: np.ndarray, own: np.ndarray, k: int) -> np.ndarray:
    """Rows of k+1 ids without each query's own id (or without the last, if absent)."""
    out = np.empty((len(found), k), dtype=found.dtype)
    for i, (row, me) in enumerate(zip(found, own)):
        keep = row[row != me]
        out[i] = keep[:k]
    return out


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
