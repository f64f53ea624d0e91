"""Retrieval quality of every simdex loss on unseen digits, against TF Similarity 0.17.1 in the same run.

Protocol (the one of bench/tfsim_peer.py's quality check): scikit-learn's digits
0-6 train a Dense(128, relu) + MetricEmbedding(32) model with Adam(1e-3) on
balanced batches (7 classes x 6 examples, 100 steps x 5 epochs); for each
seed, half of the digits 7-9 (never seen in training) are indexed and the
other half are queried; the figure is the 1-NN accuracy, averaged over seeds.
The same seeds and splits are used on both sides. Losses that TF Similarity
has (triplet, PN, multi-similarity, circle: 0.17.1 exports no ArcFace or
lifted-structure loss) run there too, with the same hyper-parameters, in its
own venv (bench/tfsim_env.sh).

    KERAS_BACKEND=tensorflow .venv/bin/python bench/loss_quality.py --seeds 3 \
        [--tfsim-python /tmp/tfsim-venv/bin/python] [--out bench/results/loss_quality.json]

Prints a table (mean accuracy, per-seed values, ratio to TF Similarity) and
writes it as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

EPOCHS, STEPS = 5, 100


def make_losses():
    from simdex import losses, miners

    return {
        # TF Similarity's triplet and PN defaults are the soft margin (its margin=None)
        "triplet": lambda: losses.TripletLoss(distance="cosine", soft_margin=True),
        "pn": lambda: losses.PNLoss(distance="cosine", soft_margin=True),
        "triplet_hinge": lambda: losses.TripletLoss(distance="cosine", margin=0.2),
        "multi_similarity": lambda: losses.MultiSimilarityLoss(distance="cosine"),
        "circle": lambda: losses.CircleLoss(distance="cosine", gamma=80.0, margin=0.4),
        "arcface": lambda: losses.ArcFaceLoss(
            num_classes=7, embedding_dim=32, margin=0.5, scale=64.0, seed=0
        ),
        "lifted_structure": lambda: losses.LiftedStructureLoss(),
        "cosface": lambda: losses.CosFaceLoss(num_classes=7, embedding_dim=32, seed=0),
        "contrastive": lambda: losses.ContrastiveLoss(),
        "multiclass_npair": lambda: losses.MultiClassNPairLoss(),
        "angular": lambda: losses.AngularLoss(),
        "triplet_margin_batch_hard": lambda: losses.TripletMarginLoss(
            margin=0.2, miner=miners.BatchHardMiner()
        ),
        "supcon": lambda: losses.SupConLoss(),
        "generalized_lifted_structure": lambda: losses.GeneralizedLiftedStructureLoss(),
        "npair": lambda: losses.NPairLoss(),
        "npair_angular": lambda: losses.NPairAngularLoss(),
        "proxy_anchor": lambda: losses.ProxyAnchorLoss(7, 32, seed=0),
        "proxy_nca": lambda: losses.ProxyNCALoss(7, 32, softmax_scale=10, seed=0),
        "soft_triple": lambda: losses.SoftTripleLoss(7, 32, centers_per_class=3, seed=0),
        "sphereface": lambda: losses.SphereFaceLoss(7, 32, margin=4, scale=1.0, seed=0),
    }


def run_simdex(seeds: int, names: list[str] | None) -> dict[str, dict[str, object]]:
    import keras
    import numpy as np
    from sklearn.datasets import load_digits

    import simdex
    from simdex.samplers import MultiShotMemorySampler

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    seen = y <= 6
    out: dict[str, dict[str, object]] = {}
    for name, make in make_losses().items():
        if names and name not in names:
            continue
        accs = []
        t0 = time.perf_counter()
        for seed in range(seeds):
            keras.utils.set_random_seed(seed)
            inputs = keras.Input((64,))
            hidden = keras.layers.Dense(128, activation="relu")(inputs)
            model = simdex.SimilarityModel(inputs, simdex.MetricEmbedding(32)(hidden))
            model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=make(), distance="cosine")
            # two examples per class per batch would suit N-pair; 6 keeps one protocol for all
            sampler = MultiShotMemorySampler(
                x[seen],
                y[seen],
                classes_per_batch=7,
                examples_per_class_per_batch=6,
                steps_per_epoch=STEPS,
                seed=seed,
            )
            model.fit(sampler, epochs=EPOCHS, verbose=0)
            rng = np.random.default_rng(seed)
            unseen = rng.permutation(np.flatnonzero(~seen))
            half = len(unseen) // 2
            idx, qry = unseen[:half], unseen[half:]
            model.index(x[idx], y[idx], verbose=0)
            found = model.lookup(x[qry], k=1)
            accs.append(float(np.mean([r[0].label == t for r, t in zip(found, y[qry])])))
        out[name] = {"accuracy_per_seed": accs, "wall_s": time.perf_counter() - t0}
        print(f"simdex {name:30s} {accs}", flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--losses", nargs="*")
    parser.add_argument(
        "--tfsim-python", default=os.environ.get("SIMDEX_TFSIM_PYTHON", "/tmp/tfsim-venv/bin/python")
    )
    parser.add_argument("--out", default="bench/results/loss_quality.json")
    args = parser.parse_args()

    peer: dict[str, object] = {}
    proc = None
    tmp = tempfile.NamedTemporaryFile(suffix=".json", delete=False)
    tmp.close()
    if os.path.exists(args.tfsim_python):  # the peer runs alongside (it is another process)
        cmd = [args.tfsim_python, os.path.join(os.path.dirname(__file__), "tfsim_loss_quality.py")]
        cmd += ["--seeds", str(args.seeds), "--out", tmp.name]
        if args.losses:
            cmd += ["--losses", *args.losses]
        proc = subprocess.Popen(cmd, env={**os.environ, "TF_USE_LEGACY_KERAS": "1"})
    else:
        print(
            f"TF Similarity venv not found at {args.tfsim_python} (bench/tfsim_env.sh makes it)",
            file=sys.stderr,
        )
    ours = run_simdex(args.seeds, args.losses)
    if proc is not None:
        if proc.wait() == 0:
            with open(tmp.name) as f:
                peer = json.load(f)
        else:
            print("the TF Similarity run failed", file=sys.stderr)
    os.unlink(tmp.name)

    import numpy as np

    peer_losses = peer.get("losses", {}) if isinstance(peer, dict) else {}
    rows = []
    print(f"\n{'loss':32s} {'simdex':>8s} {'tfsim':>8s} {'ratio':>6s}  per-seed simdex / tfsim")
    for name, rec in ours.items():
        mine = float(np.mean(rec["accuracy_per_seed"]))
        theirs = peer_losses.get(name)
        t = None if theirs is None else float(np.mean(theirs["accuracy_per_seed"]))
        row = {"loss": name, "simdex": mine, "tfsim": t, "simdex_per_seed": rec["accuracy_per_seed"]}
        if theirs is not None:
            row["tfsim_per_seed"] = theirs["accuracy_per_seed"]
            row["ratio"] = mine / t if t else None
        rows.append(row)
        ts = "-" if t is None else f"{t:.4f}"
        ratio = "-" if t is None else f"{mine / t:.3f}"
        print(
            f"{name:32s} {mine:8.4f} {ts:>8s} {ratio:>6s}  {rec['accuracy_per_seed']} / "
            f"{None if theirs is None else theirs['accuracy_per_seed']}"
        )
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(
            {"seeds": args.seeds, "epochs": EPOCHS, "steps": STEPS, "peer": peer.get("peer"), "rows": rows},
            f,
            indent=1,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
