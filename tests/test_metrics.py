"""Tests for simdex.metrics: classification at thresholds and retrieval metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from simdex import metrics
from simdex.metrics import (
    classification_metrics,
    confusion_counts,
    confusion_matrix,
    evaluate_classification,
    evaluate_retrieval,
)

# ----------------------------------------------------------------------------- classification


def test_metrics_from_counts_by_hand():
    # TP=3 FP=1 TN=2 FN=2, n=8
    out = classification_metrics(3, 1, 2, 2, metrics=list(metrics.CLASSIFICATION_METRICS))
    assert out["precision"] == 3 / 4
    assert out["recall"] == 3 / 5
    assert out["f1"] == 6 / 9
    assert out["binary_accuracy"] == 3 / 8
    assert out["accuracy"] == 5 / 8
    assert out["fpr"] == 1 / 3
    assert out["fnr"] == 2 / 5
    assert out["specificity"] == 2 / 3
    assert out["npv"] == 2 / 4
    assert out["match_rate"] == 4 / 8
    assert (out["tp"], out["fp"], out["tn"], out["fn"]) == (3, 1, 2, 2)


def test_zero_division_conventions():
    # nothing matched: precision is 1 (TF Similarity), every other 0/0 is 0
    out = classification_metrics(0, 0, 2, 3, metrics=["precision", "recall", "f1", "fpr", "npv"])
    assert out["precision"] == 1.0
    assert out["recall"] == 0.0
    assert out["f1"] == 0.0
    assert out["fpr"] == 0.0
    assert out["npv"] == 2 / 5
    allzero = classification_metrics(0, 0, 0, 0, metrics=["recall", "fpr", "npv", "binary_accuracy"])
    assert all(v == 0.0 for v in allzero.values())


def test_metric_aliases_and_info():
    out = classification_metrics([1, 2], [0, 1], [1, 0], [1, 0], metrics=["f1_score", "tpr", "FPR"])
    assert sorted(out) == ["f1", "fpr", "recall"]
    np.testing.assert_array_equal(out["recall"], [0.5, 1.0])
    assert metrics.classification_metric_info("precision") == {
        "name": "precision",
        "direction": "max",
        "worsens_with_distance": True,
        "is_ratio": True,
    }
    assert metrics.classification_metric_info("false_positive_rate")["direction"] == "min"
    with pytest.raises(ValueError, match="unknown classification metric"):
        metrics.classification_metric_info("auc")
    with pytest.raises(TypeError):
        classification_metrics(1, 1, 1, 1, metrics=[3])
    with pytest.raises(ValueError, match="non-negative"):
        classification_metrics(-1, 1, 1, 1)


def test_confusion_counts_vs_naive():
    rng = np.random.default_rng(0)
    correct = rng.random(500) < 0.6
    d = np.round(rng.random(500), 2)
    d[rng.random(500) < 0.05] = np.inf
    t = np.unique(np.round(rng.random(50), 2))
    got = confusion_counts(correct, d, t)
    for j, tj in enumerate(t):
        within = d <= tj
        assert got["tp"][j] == np.sum(correct & within)
        assert got["fp"][j] == np.sum(~correct & within)
        assert got["tn"][j] == np.sum(~correct & ~within)
        assert got["fn"][j] == np.sum(correct & ~within)
    with pytest.raises(ValueError, match="NaN"):
        confusion_counts(correct, np.full(500, np.nan), t)
    with pytest.raises(ValueError, match="equal length"):
        confusion_counts(correct[:3], d, t)


def test_evaluate_classification_at_given_thresholds():
    # (distance, right?): (0.1, T) (0.2, T) (0.3, F) (0.4, T) (0.5, F) (0.6, F)
    q = np.arange(6)
    nl = np.array([0, 1, 9, 3, 9, 9])[:, None]
    d = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])[:, None]
    out = evaluate_classification(
        q, nl, d, thresholds=[0.0, 0.25, 0.45, 1.0], metrics=["precision", "recall", "f1", "accuracy", "tp"]
    )
    np.testing.assert_array_equal(out["distance"], [0.0, 0.25, 0.45, 1.0])
    # t=0: nothing matched; 0.25: TP2 FP0 FN1 TN3; 0.45: TP3 FP1 TN2; 1.0: TP3 FP3
    np.testing.assert_allclose(out["precision"], [1.0, 1.0, 3 / 4, 1 / 2])
    np.testing.assert_allclose(out["recall"], [0.0, 2 / 3, 1.0, 1.0])
    np.testing.assert_allclose(out["f1"], [0.0, 4 / 5, 6 / 7, 6 / 9])
    np.testing.assert_allclose(out["accuracy"], [3 / 6, 5 / 6, 5 / 6, 3 / 6])
    np.testing.assert_array_equal(out["tp"], [0, 2, 3, 3])
    # scalar threshold, default metrics
    one = evaluate_classification(q, nl, d, thresholds=0.45)
    assert set(one) == {"distance", *metrics.DEFAULT_CLASSIFICATION_METRICS}
    assert one["f1"].tolist() == [6 / 7]
    # default thresholds = distinct distances
    allt = evaluate_classification(q, nl, d, metrics=["f1"])
    np.testing.assert_allclose(allt["distance"], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    np.testing.assert_allclose(allt["f1"], [2 / 4, 4 / 5, 4 / 6, 6 / 7, 6 / 8, 6 / 9])


def test_evaluate_classification_single_class_is_allowed():
    # evaluation (unlike calibration) accepts all-right input
    out = evaluate_classification([1, 2], [[1], [2]], [[0.1], [0.2]], metrics=["recall", "fpr"])
    np.testing.assert_allclose(out["recall"], [0.5, 1.0])
    np.testing.assert_allclose(out["fpr"], [0.0, 0.0])


def test_evaluate_classification_errors():
    q, nl, d = [1, 2], [[1], [2]], [[0.1], [0.2]]
    with pytest.raises(ValueError, match="NaN"):
        evaluate_classification(q, nl, d, thresholds=[np.nan])
    with pytest.raises(ValueError, match="non-empty"):
        evaluate_classification(q, nl, d, thresholds=[])
    with pytest.raises(ValueError, match="empty"):
        evaluate_classification([], np.zeros((0, 1)), np.zeros((0, 1)))
    with pytest.raises(ValueError, match="unknown classification metric"):
        evaluate_classification(q, nl, d, metrics=["map@r"])
    with pytest.raises(ValueError, match="shape"):
        evaluate_classification(q, nl, [[0.1, 0.2], [0.1, 0.2]])
    with pytest.raises(TypeError, match="k must be an int"):
        evaluate_classification(q, nl, d, k=1.0)


# ----------------------------------------------------------------------------- retrieval

# Hand example. Query 0 (label 1) retrieves labels [1, 0, 1, 1, 0] -> rel 1 0 1 1 0, R=4.
#               Query 1 (label 2) retrieves labels [0, 2, 0, 0, 2] -> rel 0 1 0 0 1, R=2.
Q = np.array([1, 2])
NL = np.array([[1, 0, 1, 1, 0], [0, 2, 0, 0, 2]])
R = np.array([4, 2])


def test_retrieval_hand_example():
    out = evaluate_retrieval(
        Q,
        NL,
        num_relevant=R,
        metrics=[
            "recall@1",
            "recall@2",
            "precision@1",
            "precision@3",
            "precision@5",
            "r_precision",
            "map@r",
            "map@5",
            "ndcg@5",
            "ndcg@2",
        ],
    )
    assert out["recall@1"] == 0.5  # hit at rank 1: q0 yes, q1 no
    assert out["recall@2"] == 1.0
    assert out["precision@1"] == 0.5
    assert out["precision@3"] == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert out["precision@5"] == pytest.approx((3 / 5 + 2 / 5) / 2)
    # R-precision: q0 3 relevant in first 4 -> 3/4; q1 1 in first 2 -> 1/2
    assert out["r_precision"] == pytest.approx((3 / 4 + 1 / 2) / 2)
    # MAP@R: q0 (P@1 + P@3 + P@4) / 4 = (1 + 2/3 + 3/4) / 4 = 29/48; q1 P@2 / 2 = 1/4
    assert out["map@r"] == pytest.approx((29 / 48 + 1 / 4) / 2)
    # MAP@5 (over the relevant items retrieved): q0 (1 + 2/3 + 3/4) / 3; q1 (1/2 + 2/5) / 2
    assert out["map@5"] == pytest.approx((29 / 36 + 9 / 20) / 2)
    # NDCG@5: q0 DCG = 1/log2(2) + 1/log2(4) + 1/log2(5), IDCG = 4 relevant on top
    dcg0 = 1 + 1 / 2 + 1 / math.log2(5)
    idcg0 = 1 + 1 / math.log2(3) + 1 / 2 + 1 / math.log2(5)
    dcg1 = 1 / math.log2(3) + 1 / math.log2(6)
    idcg1 = 1 + 1 / math.log2(3)
    assert out["ndcg@5"] == pytest.approx((dcg0 / idcg0 + dcg1 / idcg1) / 2)
    # NDCG@2: q0 DCG 1, IDCG 1 + 1/log2(3); q1 DCG 1/log2(3), IDCG the same
    assert out["ndcg@2"] == pytest.approx((1 / (1 + 1 / math.log2(3)) + 1 / math.log2(3) / idcg1) / 2)


def test_retrieval_defaults_and_aliases():
    out = evaluate_retrieval(Q, NL)
    assert list(out) == ["recall@1", "recall@5", "precision@1", "precision@5", "ndcg@5"]
    # without num_relevant, NDCG's ideal uses the relevant items retrieved (ordering only)
    dcg0 = 1 + 1 / 2 + 1 / math.log2(5)
    idcg0 = 1 + 1 / math.log2(3) + 1 / 2
    dcg1 = 1 / math.log2(3) + 1 / math.log2(6)
    assert out["ndcg@5"] == pytest.approx((dcg0 / idcg0 + dcg1 / (1 + 1 / math.log2(3))) / 2)
    out = evaluate_retrieval(Q, NL, num_relevant=R, k=3)
    assert list(out) == [
        "recall@1",
        "recall@3",
        "precision@1",
        "precision@3",
        "ndcg@3",
        "map@r",
        "r_precision",
    ]
    # k=3 caps R at 3 (as PyTorch Metric Learning): q0 r=3 -> 2/3; q1 r=2 -> 1/2
    assert out["r_precision"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    pml = evaluate_retrieval(
        Q,
        NL,
        num_relevant=R,
        metrics=["precision_at_1", "mean_average_precision_at_r", "mean_average_precision", "recall@k"],
    )
    assert pml["precision_at_1"] == 0.5
    assert pml["mean_average_precision_at_r"] == pytest.approx((29 / 48 + 1 / 4) / 2)
    # PML 2.9's mean_average_precision divides by R (relevant items in the index), not by
    # the relevant items retrieved: q0 (1 + 2/3 + 3/4) / 4; q1 (1/2 + 2/5) / 2
    assert pml["mean_average_precision"] == pytest.approx((29 / 48 + 9 / 20) / 2)
    with pytest.raises(ValueError, match="num_relevant"):
        evaluate_retrieval(Q, NL, metrics=["mean_average_precision"])
    assert pml["recall@k"] == 1.0


def test_retrieval_lone_queries_missing_neighbours_and_avg_of_avgs():
    q = np.array([1, 1, 2, 3])
    nl = np.array([[1, 0], [0, -1], [2, 2], [-1, -1]])
    r = np.array([1, 1, 2, 0])  # query 3 is lone: left out
    out = evaluate_retrieval(q, nl, num_relevant=r, metrics=["precision@1", "r_precision"])
    assert out["precision@1"] == pytest.approx(2 / 3)
    assert out["r_precision"] == pytest.approx((1 + 0 + 1) / 3)
    per_class = evaluate_retrieval(q, nl, num_relevant=r, metrics=["precision@1"], avg_of_avgs=True)
    assert per_class["precision@1"] == pytest.approx(((1 + 0) / 2 + 1) / 2)
    # a missing neighbour (-1) never counts as relevant, even for query label -1
    assert evaluate_retrieval([-1], [[-1]], metrics=["recall@1"])["recall@1"] == 0.0


def test_retrieval_errors():
    with pytest.raises(ValueError, match="num_relevant"):
        evaluate_retrieval(Q, NL, metrics=["map@r"])
    with pytest.raises(ValueError, match="needs 6 neighbours"):
        evaluate_retrieval(Q, NL, metrics=["recall@6"])
    with pytest.raises(ValueError, match="unknown retrieval metric"):
        evaluate_retrieval(Q, NL, metrics=["auc"])
    with pytest.raises(ValueError, match="0 for all"):
        evaluate_retrieval(Q, NL, num_relevant=[0, 0])
    with pytest.raises(ValueError, match=">= 0"):
        evaluate_retrieval(Q, NL, num_relevant=[1, -1])
    with pytest.raises(ValueError, match="shape"):
        evaluate_retrieval(Q, NL, num_relevant=[1, 2, 3])
    with pytest.raises(ValueError, match="rows"):
        evaluate_retrieval(Q[:1], NL)
    with pytest.raises(ValueError, match="empty"):
        evaluate_retrieval([], np.zeros((0, 3), int))
    with pytest.raises(ValueError, match="metrics is empty"):
        evaluate_retrieval(Q, NL, metrics=[])
    with pytest.raises(ValueError, match="k=9"):
        evaluate_retrieval(Q, NL, k=9)
    with pytest.raises(TypeError, match="integer"):
        evaluate_retrieval(Q, NL.astype(str))


def _naive_retrieval(q, nl, r, k):
    """Per-query loops, straight from the formulas."""
    res = {"map@r": [], "r_precision": [], "ndcg": [], "map": [], "map_pml": [], "mrr": []}
    for lab, row, rr in zip(q.tolist(), nl[:, :k].tolist(), r.tolist()):
        if rr == 0:
            continue
        rel = [1 if (x == lab and x != -1) else 0 for x in row]
        rcap = min(rr, k)
        res["r_precision"].append(sum(rel[:rcap]) / rcap)
        ap = 0.0
        for j in range(rcap):
            if rel[j]:
                ap += sum(rel[: j + 1]) / (j + 1)
        res["map@r"].append(ap / rr)  # PML 2.9 divides by R even when k < R
        ap_all = sum(sum(rel[: j + 1]) / (j + 1) for j in range(k) if rel[j])
        res["map"].append(ap_all / max(1, sum(rel)))
        res["map_pml"].append(ap_all / rr)
        res["mrr"].append(next((1 / (j + 1) for j in range(k) if rel[j]), 0.0))
        dcg = sum(rel[j] / math.log2(j + 2) for j in range(k))
        idcg = sum(1 / math.log2(j + 2) for j in range(min(k, rr)))
        res["ndcg"].append(dcg / idcg)
    return {key: float(np.mean(v)) for key, v in res.items()}


@pytest.mark.parametrize("seed", range(4))
def test_retrieval_vs_naive(seed):
    rng = np.random.default_rng(seed)
    n, k = 200, 12
    q = rng.integers(0, 5, size=n)
    nl = rng.integers(0, 5, size=(n, k))
    nl[rng.random((n, k)) < 0.05] = -1
    r = rng.integers(0, 15, size=n)
    got = evaluate_retrieval(
        q,
        nl,
        num_relevant=r,
        metrics=["map@r", "r_precision", "ndcg@k", "map@k", "mean_average_precision", "mrr"],
    )
    ref = _naive_retrieval(q, nl, r, k)
    assert got["mean_average_precision"] == pytest.approx(ref["map_pml"], rel=1e-12)
    assert got["mrr"] == pytest.approx(ref["mrr"], rel=1e-12)
    assert got["map@r"] == pytest.approx(ref["map@r"], rel=1e-12)
    assert got["r_precision"] == pytest.approx(ref["r_precision"], rel=1e-12)
    assert got["ndcg@k"] == pytest.approx(ref["ndcg"], rel=1e-12)
    assert got["map@k"] == pytest.approx(ref["map"], rel=1e-12)


# ----------------------------------------------------------------------------- confusion matrix


def test_confusion_matrix_with_no_match_row():
    true = [0, 0, 1, 1, 2, 2]
    pred = [0, -1, 1, 0, -1, -1]
    mat, lab = confusion_matrix(true, pred)
    assert lab.tolist() == [0, 1, 2]
    # rows: predicted 0, 1, 2, no match ; columns: true 0, 1, 2
    assert mat.tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 0], [1, 0, 2]]
    mat, lab = confusion_matrix(true, [0, 9, 1, 0, 9, 9], no_match_label=9, labels=[2, 1, 0])
    assert mat.tolist() == [[0, 0, 0], [0, 1, 0], [0, 1, 1], [2, 0, 1]]
    # true label -1 (class not indexed): a column, but no row (only "no match" is right)
    mat, lab = confusion_matrix([0, -1, -1, 1], [0, -1, 1, 1])
    assert lab.tolist() == [-1, 0, 1]
    # rows: predicted 0, 1, no match ; columns: true -1, 0, 1
    assert mat.tolist() == [[0, 1, 0], [1, 0, 1], [1, 0, 0]]
    with pytest.raises(ValueError, match="not in `labels`"):
        confusion_matrix(true, pred, labels=[0, 1])
    with pytest.raises(ValueError, match="differ in shape"):
        confusion_matrix(true, pred[:-1])
    with pytest.raises(ValueError, match="duplicates"):
        confusion_matrix(true, pred, labels=[0, 1, 2, 2])


def test_retrieval_metric_objects():
    from simdex.metrics import MapAtK, MRRAtK, PrecisionAtK, RecallAtK, RPrecision

    got = evaluate_retrieval(
        Q,
        NL,
        num_relevant=R,
        metrics=[RecallAtK(k=1), PrecisionAtK(k=3), MapAtK(k=5), MRRAtK(k=5), RPrecision()],
    )
    assert list(got) == ["recall@1", "precision@3", "map@5", "mrr@5", "r_precision"]
    assert got["precision@3"] == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert got["mrr@5"] == pytest.approx((1 + 1 / 2) / 2)
    with pytest.raises(ValueError, match="k must be"):
        RecallAtK(k=0)
