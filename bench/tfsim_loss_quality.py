"""TF Similarity 0.17.1 side of bench/loss_quality.py (run in the venv of bench/tfsim_env.sh).

    TF_USE_LEGACY_KERAS=1 /tmp/tfsim-venv/bin/python bench/tfsim_loss_quality.py --seeds 3 --out tfsim.json

For each TF Similarity loss that simdex also has (0.17.1 exports no ArcFace
or lifted-structure loss), the protocol of
bench/loss_quality.py: digits 0-6 train a Dense(128)+MetricEmbedding(32)
model (Adam 1e-3, 7 classes x 6 examples per batch, 100 steps x 5 epochs);
half of the digits 7-9 are indexed, the other half queried; 1-NN accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

EPOCHS, STEPS = 5, 100


def make_losses(tfsim):  # TF Similarity's defaults; bench/loss_quality.py uses the same values
    return {
        "triplet": lambda: tfsim.losses.TripletLoss(distance="cosine"),  # margin=None: soft margin
        "pn": lambda: tfsim.losses.PNLoss(distance="cosine"),
        "multi_similarity": lambda: tfsim.losses.MultiSimilarityLoss(distance="cosine"),
        "circle": lambda: tfsim.losses.CircleLoss(distance="cosine", gamma=80.0, margin=0.4),
    }


def run(seeds: int, names: list[str] | None) -> dict[str, object]:
    import numpy as np
    import tensorflow as tf
    import tensorflow_similarity as tfsim
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    seen = y <= 6
    out: dict[str, object] = {"peer": f"tensorflow-similarity {tfsim.__version__}", "losses": {}}
    for name, make in make_losses(tfsim).items():
        if names and name not in names:
            continue
        accs = []
        t0 = time.perf_counter()
        for seed in range(seeds):
            tf.keras.utils.set_random_seed(seed)
            inputs = tf.keras.Input((64,))
            hidden = tf.keras.layers.Dense(128, activation="relu")(inputs)
            model = tfsim.models.SimilarityModel(inputs, tfsim.layers.MetricEmbedding(32)(hidden))
            model.compile(optimizer=tf.keras.optimizers.Adam(1e-3), loss=make(), distance="cosine")
            sampler = tfsim.samplers.MultiShotMemorySampler(
                x[seen], y[seen], classes_per_batch=7, examples_per_class_per_batch=6, steps_per_epoch=STEPS
            )
            model.fit(sampler, epochs=EPOCHS, verbose=0)
            rng = np.random.default_rng(seed)
            unseen = rng.permutation(np.flatnonzero(~seen))
            half = len(unseen) // 2
            idx, qry = unseen[:half], unseen[half:]
            model.index(x[idx], y[idx], verbose=0)
            found = model.lookup(x[qry], k=1, verbose=0)
            accs.append(float(np.mean([int(r[0].label) == t for r, t in zip(found, y[qry])])))
        out["losses"][name] = {"accuracy_per_seed": accs, "wall_s": time.perf_counter() - t0}
        print(name, accs, flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--losses", nargs="*")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    with open(args.out, "w") as f:
        json.dump(run(args.seeds, args.losses), f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
