"""TensorFlow Similarity's CIFAR-10 "hello world" tutorial, ported to simdex on scikit-learn's digits.

The flow and the calls are the tutorial's, with ``import simdex as tfsim`` in place of
``import tensorflow_similarity as tfsim`` and the 8x8 digits (shipped with
scikit-learn, no download) in place of CIFAR-10:

1. data: train on classes 0-6; classes 7-9 stay unseen until indexing;
2. a balanced sampler (its summary is printed);
3. a small convnet ending in ``MetricEmbedding``, trained with the
   multi-similarity loss, with ``EvalCallback`` metrics in the history;
4. indexing 20 examples of *every* class (seen and unseen);
5. lookups drawn as neighbour grids (``viz_neigbors_imgs``);
6. calibration (the cutpoint table is printed; the metric curves are saved);
7. matching with the calibrated threshold and a confusion matrix with a
   "no match" row;
8. a 2-D projector of the test embeddings (PNG, and an HTML page when plotly
   is installed);
9. saving as ``.keras`` and reloading (Keras loads the network,
   ``load_index`` the index).

Run:
    KERAS_BACKEND=tensorflow python examples/tfsim_tutorial_digits.py --out tutorial_out [--epochs 8]
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import keras
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import simdex as tfsim

CLASSES = list(range(10))
NUM_KNOWN = 7  # classes 0-6 are seen in training; 7-9 are not
CLASS_LIST = CLASSES[:NUM_KNOWN]
NO_MATCH = 10  # the tutorial's no_match_label
CLASS_MAPPING = {c: f"digit {c}" for c in CLASSES}


def load_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32").reshape(-1, 8, 8, 1)
    return tuple(train_test_split(x, y, test_size=0.4, random_state=seed, stratify=y))  # type: ignore[return-value]


def build_model(embedding_size: int = 32) -> Any:
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(32, 3, activation="relu", padding="same")(inputs)
    x = keras.layers.Conv2D(32, 3, activation="relu")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(64, activation="relu")(x)
    outputs = tfsim.layers.MetricEmbedding(embedding_size)(x)
    return tfsim.models.SimilarityModel(inputs, outputs)


def main(
    out_dir: str,
    epochs: int = 8,
    steps_per_epoch: int = 60,
    seed: int = 0,
    verbose: int = 1,
    projector_method: str = "auto",
    projector_points: int | None = None,
) -> dict[str, Any]:
    """Run the tutorial; write its figures to ``out_dir``; return the figures' numbers."""
    os.makedirs(out_dir, exist_ok=True)
    keras.utils.set_random_seed(seed)
    x_train, x_test, y_train, y_test = load_data(seed)
    results: dict[str, Any] = {}

    # --- 2. sampler (TF Similarity prints this summary when it builds the sampler)
    sampler = tfsim.samplers.MultiShotMemorySampler(
        x_train,
        y_train,
        classes_per_batch=NUM_KNOWN,
        examples_per_class_per_batch=6,
        class_list=CLASS_LIST,
        steps_per_epoch=steps_per_epoch,
        seed=seed,
        verbose=verbose,
    )
    results["sampler"] = sampler.summary()

    # --- 3. model, loss, training (with held-out retrieval / calibrated metrics each epoch)
    model = build_model()
    distance = "cosine"
    loss = tfsim.losses.MultiSimilarityLoss(distance=distance)
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss=loss, distance=distance)
    known_test = np.isin(y_test, CLASS_LIST)
    x_q, y_q = x_test[known_test][::2], y_test[known_test][::2]
    x_t, y_t = tfsim.samplers.select_examples(x_train, y_train, CLASS_LIST, 20)
    eval_cb = tfsim.callbacks.EvalCallback(x_q, y_q, x_t, y_t, retrieval_metrics=["recall@1"])
    history = model.fit(
        sampler,
        epochs=epochs,
        validation_data=(x_test[known_test], y_test[known_test]),
        callbacks=[eval_cb],
        verbose=verbose,
    )
    results["history"] = {k: [float(v) for v in vals] for k, vals in history.history.items()}

    # --- 4. indexing: 20 examples of every class, seen and unseen
    x_index, y_index = tfsim.samplers.select_examples(x_train, y_train, CLASSES, 20)
    model.reset_index()
    model.index(x_index, y_index, data=x_index, verbose=verbose)
    results["index"] = model.index_summary(print_fn=print if verbose else None)

    # --- 5. lookups, drawn as neighbour grids
    x_display, y_display = tfsim.samplers.select_examples(x_test, y_test, CLASSES, 1)
    nns = model.lookup(x_display, k=5)
    for idx in range(len(x_display)):
        fig = tfsim.visualization.viz_neigbors_imgs(
            x_display[idx],
            y_display[idx],
            nns[idx],
            class_mapping=CLASS_MAPPING,
            fig_size=(8, 1.8),
            cmap="Greys",
        )
        fig.savefig(os.path.join(out_dir, f"neighbours_{y_display[idx]}.png"))
    results["lookup_labels"] = [[r.label for r in row] for row in nns]

    # --- 6. calibration on training data of the seen classes (as the tutorial)
    x_cal, y_cal = tfsim.samplers.select_examples(x_train, y_train, CLASS_LIST, 40)
    calibration = model.calibrate(
        x_cal,
        y_cal,
        calibration_metric="f1",
        matcher="match_nearest",
        extra_metrics=["precision", "recall", "binary_accuracy"],
        verbose=verbose,
    )
    results["calibration"] = calibration.cutpoints
    tfsim.plots.plot_calibration(calibration).savefig(os.path.join(out_dir, "calibration.png"))

    # --- 7. matching and the confusion matrix (unseen classes should get "no match")
    x_confusion, y_confusion = tfsim.samplers.select_examples(x_test, y_test, CLASSES, 20)
    matches = model.match(x_confusion, cutpoint="optimal", no_match_label=NO_MATCH)
    fig = tfsim.visualization.confusion_matrix(
        y_true=y_confusion,
        y_pred=matches,
        class_names=CLASS_MAPPING,
        no_match_label=NO_MATCH,
        title="confusion matrix (cutpoint: optimal)",
    )
    fig.savefig(os.path.join(out_dir, "confusion_matrix.png"))
    seen = np.isin(y_confusion, CLASS_LIST)
    results["match_accuracy_seen"] = float(np.mean(matches[seen] == y_confusion[seen]))
    results["no_match_rate_unseen"] = float(np.mean(matches[~seen] == NO_MATCH))
    results["retrieval"] = model.evaluate_retrieval(
        x_test, y_test, retrieval_metrics=["recall@1", "precision@5", "map@r"]
    )

    # --- 8. projector of the test embeddings
    html = os.path.join(out_dir, "projector.html")
    try:
        import plotly  # noqa: F401
    except ImportError:
        html = None
    x_proj, y_proj = x_test[:projector_points], y_test[:projector_points]
    fig = tfsim.visualization.projector(
        model.predict(x_proj, verbose=0),
        labels=y_proj,
        class_mapping=CLASS_MAPPING,
        html_path=html,
        method=projector_method,
        seed=seed,
    )
    fig.savefig(os.path.join(out_dir, "projector.png"))

    # --- 9. save and reload: Keras reads the network, load_index restores the index
    save_path = os.path.join(out_dir, "digits_model.keras")
    model.save(save_path, save_index=True)
    reloaded = keras.models.load_model(save_path)
    reloaded.load_index(save_path)
    results["reloaded_index"] = reloaded.index_summary(print_fn=print if verbose else None)
    same = [[r.id for r in row] for row in reloaded.lookup(x_display, k=5)] == [
        [r.id for r in row] for row in nns
    ]
    results["reloaded_lookups_equal"] = same
    if verbose:
        print(f"retrieval on the test split: {results['retrieval']}")
        print(
            f"match accuracy (seen classes) {results['match_accuracy_seen']:.3f}; "
            f"no-match rate (unseen classes) {results['no_match_rate_unseen']:.3f}"
        )
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="tutorial_out")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    main(args.out, epochs=args.epochs, steps_per_epoch=args.steps)
