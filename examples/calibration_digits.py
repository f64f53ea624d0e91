"""Calibrate a distance threshold on scikit-learn's digits and test it on held-out data.

No training and no downloads: the embedding is fixed (an LDA projection fit on
the index split, or raw pixels), L2-normalised and searched with cosine
distance in a ``simdex.ExactIndex`` (NumPy brute force if the native core is
not built).

The 1,797 digits are split (stratified, seed 0) into an index (50%), a
calibration split (25%) and a test split (25%). Two settings:

* closed set: every class is in the index;
* open set: classes 8 and 9 are left out of the index, so their queries should
  get "no match" (their label is -1 for calibration); the threshold is what
  tells them apart.

For each, the threshold maximising F1 on the calibration split is applied to
the test split, which reports F1 at that threshold, match accuracy (a query
counts as right when its thresholded prediction equals its label, "no match"
being right only for an unknown class) and retrieval metrics.

Run:
    PYTHONPATH=python python examples/calibration_digits.py [--embedding lda|pixels] [--plots DIR]
"""

from __future__ import annotations

import argparse
import os

import numpy as np
from sklearn.datasets import load_digits
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.model_selection import train_test_split

import simdex
from simdex import calibrate, match, metrics

K = 100  # neighbours retrieved: >= the largest class in the index, so MAP@R is exact


def _normalise(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _search(base: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        index = simdex.ExactIndex(dim=base.shape[1], metric="cosine")
    except ImportError:  # native core not built: brute force with NumPy
        dist = 1.0 - queries @ base.T
        order = np.argsort(dist, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(dist, order, axis=1), order
    index.add(base, ids=np.arange(len(base)))
    return index.search(queries, k=k)


def _labels_of(ids: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return np.where(ids >= 0, labels[np.clip(ids, 0, None)], -1)


def run(embedding: str, unknown: tuple[int, ...], plots_dir: str | None) -> dict[str, float]:
    x, y = load_digits(return_X_y=True)
    x_idx, x_rest, y_idx, y_rest = train_test_split(x, y, test_size=0.5, stratify=y, random_state=0)
    x_cal, x_test, y_cal, y_test = train_test_split(
        x_rest, y_rest, test_size=0.5, stratify=y_rest, random_state=0
    )
    keep = ~np.isin(y_idx, unknown)
    x_idx, y_idx = x_idx[keep], y_idx[keep]
    if embedding == "lda":
        lda = LinearDiscriminantAnalysis().fit(x_idx, y_idx)
        emb = lda.transform
    else:
        emb = np.asarray
    base = _normalise(emb(x_idx))
    y_cal = np.where(np.isin(y_cal, unknown), -1, y_cal)
    y_test = np.where(np.isin(y_test, unknown), -1, y_test)

    d_cal, i_cal = _search(base, _normalise(emb(x_cal)), K)
    res = calibrate(
        d_cal, _labels_of(i_cal, y_idx), y_cal, thresholds_targets={"precision": 0.99}, rounding=None
    )
    thr = res.cutpoints["optimal"]["distance"]

    d_test, i_test = _search(base, _normalise(emb(x_test)), K)
    nl_test = _labels_of(i_test, y_idx)
    pred = match(d_test, nl_test, thr)
    at_thr = metrics.evaluate_classification(
        y_test, nl_test, d_test, thresholds=[thr], metrics=["f1", "precision", "recall", "match_rate"]
    )
    counts = {int(c): int(np.sum(y_idx == c)) for c in np.unique(y_idx)}
    known = y_test != -1
    num_rel = np.array([counts.get(int(c), 0) for c in y_test[known]])
    retrieval = metrics.evaluate_retrieval(
        y_test[known],
        nl_test[known],
        num_relevant=num_rel,
        metrics=["recall@1", "precision@5", "map@r", "r_precision", "ndcg@10"],
    )
    out = {
        "index_size": float(len(base)),
        "calibration_queries": float(len(y_cal)),
        "test_queries": float(len(y_test)),
        "threshold": thr,
        "calibration_f1": res.cutpoints["optimal"]["f1"],
        "test_f1": float(at_thr["f1"][0]),
        "test_precision": float(at_thr["precision"][0]),
        "test_recall": float(at_thr["recall"][0]),
        "test_match_rate": float(at_thr["match_rate"][0]),
        "test_match_accuracy": float(np.mean(pred == y_test)),
        "test_top1_accuracy_no_threshold": float(np.mean(nl_test[:, 0] == y_test)),
    }
    if "0.99 precision" in res.cutpoints:
        out["precision_0.99_threshold"] = res.cutpoints["0.99 precision"]["distance"]
    out.update({f"test_{k}": v for k, v in retrieval.items()})
    if plots_dir:
        from simdex import plots

        os.makedirs(plots_dir, exist_ok=True)
        tag = f"{embedding}_{'open' if unknown else 'closed'}"
        plots.plot_calibration(res).savefig(os.path.join(plots_dir, f"calibration_{tag}.png"))
        plots.plot_confusion_matrix(y_test, pred).savefig(os.path.join(plots_dir, f"confusion_{tag}.png"))
        shown = np.arange(4)
        imgs = x_test.reshape(-1, 8, 8)
        plots.plot_neighbours(
            imgs[shown],
            x_idx.reshape(-1, 8, 8)[i_test[shown, :6]],
            query_labels=y_test[shown],
            neighbour_labels=nl_test[shown, :6],
            distances=d_test[shown, :6],
        ).savefig(os.path.join(plots_dir, f"neighbours_{tag}.png"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--embedding", choices=("lda", "pixels", "both"), default="both")
    parser.add_argument("--plots", metavar="DIR", help="also save figures to DIR")
    args = parser.parse_args()
    embeddings = ("lda", "pixels") if args.embedding == "both" else (args.embedding,)
    for emb in embeddings:
        for unknown in ((), (8, 9)):
            setting = "open set (8, 9 not indexed)" if unknown else "closed set"
            print(f"== embedding={emb}, {setting}")
            for key, value in run(emb, unknown, args.plots).items():
                print(f"  {key:34s} {value:.4f}" if isinstance(value, float) else f"  {key} {value}")


if __name__ == "__main__":
    main()
