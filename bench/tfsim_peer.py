"""TensorFlow Similarity 0.17.1 peer for bench/test_bench_model.py (run in its own venv).

TF Similarity needs tf-keras (Keras 2) and numpy<2, so it cannot share the
simdex venv. bench/test_bench_model.py runs this script as a subprocess with
``TF_USE_LEGACY_KERAS=1``::

    /tmp/tfsim-venv/bin/python bench/tfsim_peer.py --data DIR --out results.json
    /tmp/tfsim-venv/bin/python bench/tfsim_peer.py --quality 5 --out quality.json

``DIR`` holds ``base.npy`` (n, d) float32 unit vectors, ``labels.npy`` (n,)
int64, ``queries.npy`` (q, d) float32, ``single.npy`` (s, d) float32. The model
is an identity-plus-L2-normalise network, so the embeddings are the given
vectors; TF Similarity's defaults are used otherwise (cosine distance, NMSLIB
HNSW search, in-memory store). The script writes timings and the neighbour
ids (recovered from the ``data`` field, which holds each item's row number)
to ``results.json``; the caller computes recall against its brute force.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def quality(seeds: int) -> dict[str, object]:
    """k=1 accuracy on unseen digits 7-9 after MultiSimilarityLoss training on 0-6.

    Same setup as ``_unseen_class_accuracy`` in bench/test_bench_model.py.
    """
    import numpy as np
    import tensorflow as tf
    import tensorflow_similarity as tfsim
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    seen = y <= 6
    accs = []
    t0 = time.perf_counter()
    for seed in range(seeds):
        tf.keras.utils.set_random_seed(seed)
        inputs = tf.keras.Input((64,))
        hidden = tf.keras.layers.Dense(128, activation="relu")(inputs)
        model = tfsim.models.SimilarityModel(inputs, tfsim.layers.MetricEmbedding(32)(hidden))
        model.compile(optimizer=tf.keras.optimizers.Adam(1e-3), loss=tfsim.losses.MultiSimilarityLoss())
        sampler = tfsim.samplers.MultiShotMemorySampler(
            x[seen], y[seen], classes_per_batch=7, examples_per_class_per_batch=6, steps_per_epoch=100
        )
        model.fit(sampler, epochs=5, verbose=0)
        rng = np.random.default_rng(seed)
        unseen = rng.permutation(np.flatnonzero(~seen))
        half = len(unseen) // 2
        idx, qry = unseen[:half], unseen[half:]
        model.index(x[idx], y[idx], verbose=0)
        found = model.lookup(x[qry], k=1, verbose=0)
        accs.append(float(np.mean([int(r[0].label) == t for r, t in zip(found, y[qry])])))
    return {
        "accuracy_per_seed": accs,
        "wall_s": time.perf_counter() - t0,
        "peer": f"tensorflow-similarity {tfsim.__version__}",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="directory with base/labels/queries/single .npy")
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3, help="timed lookup rounds (the best is kept)")
    parser.add_argument(
        "--quality", type=int, default=0, help="run the digits quality check with this many seeds"
    )
    args = parser.parse_args(argv)
    if args.quality:
        with open(args.out, "w") as f:
            json.dump(quality(args.quality), f)
        return 0
    if not args.data:
        parser.error("--data is required unless --quality is given")

    import numpy as np
    import tensorflow as tf
    import tensorflow_similarity as tfsim

    base = np.load(os.path.join(args.data, "base.npy"))
    labels = np.load(os.path.join(args.data, "labels.npy"))
    queries = np.load(os.path.join(args.data, "queries.npy"))
    single = np.load(os.path.join(args.data, "single.npy"))
    dim = base.shape[1]

    inputs = tf.keras.Input((dim,))
    outputs = tf.keras.layers.Lambda(lambda x: tf.math.l2_normalize(x, axis=1))(inputs)
    model = tfsim.models.SimilarityModel(inputs, outputs)
    model.compile(optimizer="adam", loss=tfsim.losses.MultiSimilarityLoss(), distance="cosine")

    rows = np.arange(base.shape[0], dtype=np.int64)
    t0 = time.perf_counter()
    model.index(base, labels, data=rows, verbose=0)
    index_s = time.perf_counter() - t0

    # Same statistic as bench/test_bench_model.py: one warm-up, then the best of
    # ``--rounds`` timed rounds (the CPU is shared; the minimum is the least noisy).
    model.lookup(queries[:10], k=args.k, verbose=0)  # warm-up (graph tracing)
    lookup_times = []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        found = model.lookup(queries, k=args.k, verbose=0)
        lookup_times.append(time.perf_counter() - t0)
    lookup_s = min(lookup_times)
    ids = np.full((len(found), args.k), -1, dtype=np.int64)
    for i, row in enumerate(found):
        for j, lk in enumerate(row[: args.k]):
            ids[i, j] = int(np.asarray(lk.data))

    model.single_lookup(single[0], k=args.k)  # warm-up
    single_times = []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        for q in single:
            model.single_lookup(q, k=args.k)
        single_times.append(time.perf_counter() - t0)
    single_s = min(single_times)

    result = {
        "peer": f"tensorflow-similarity {tfsim.__version__} (tf {tf.__version__}, nmslib HNSW)",
        "n": int(base.shape[0]),
        "dim": int(dim),
        "index_s": index_s,
        "index_items_per_s": base.shape[0] / index_s,
        "lookup_queries": int(queries.shape[0]),
        "lookup_s": lookup_s,
        "lookup_s_per_round": lookup_times,
        "lookup_qps": queries.shape[0] / lookup_s,
        "single_lookups": int(single.shape[0]),
        "single_s": single_s,
        "single_s_per_round": single_times,
        "single_qps": single.shape[0] / single_s,
        "ids": ids.tolist(),
    }
    with open(args.out, "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
