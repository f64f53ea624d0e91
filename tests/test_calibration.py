"""Tests for simdex.calibration: hand-computed curves, tie rules, errors, naive reference."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from simdex import calibration, matchers
from simdex.calibration import CalibrationResult, calibrate, match


def _pairs(pairs):
    """(distance, right?) pairs -> k=1 inputs: right ones get the query's label, wrong ones 99."""
    d = np.array([[p[0]] for p in pairs], dtype=np.float64)
    q = np.arange(len(pairs), dtype=np.int64)
    nl = np.where(np.array([p[1] for p in pairs]), q, 99)[:, None]
    return d, nl, q


# Case A: six queries, one neighbour each, no ties.
#   distance  0.1  0.2  0.3  0.4  0.5  0.6
#   right?    T    T    F    T    F    F
# 3 right, 3 wrong. At threshold t (TP: right & d<=t, FP: wrong & d<=t):
#   t    TP FP FN TN  precision recall  f1    binary_acc accuracy fpr
#   0.1  1  0  2  3   1         1/3     2/4   1/6        4/6      0
#   0.2  2  0  1  3   1         2/3     4/5   2/6        5/6      0
#   0.3  2  1  1  2   2/3       2/3     4/6   2/6        4/6      1/3
#   0.4  3  1  0  2   3/4       1       6/7   3/6        5/6      1/3
#   0.5  3  2  0  1   3/5       1       6/8   3/6        4/6      2/3
#   0.6  3  3  0  0   1/2       1       6/9   3/6        3/6      1
CASE_A = [(0.1, True), (0.2, True), (0.3, False), (0.4, True), (0.5, False), (0.6, False)]
A_DIST = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
A_PRECISION = [1.0, 1.0, 2 / 3, 3 / 4, 3 / 5, 1 / 2]
A_RECALL = [1 / 3, 2 / 3, 2 / 3, 1.0, 1.0, 1.0]
A_F1 = [2 / 4, 4 / 5, 4 / 6, 6 / 7, 6 / 8, 6 / 9]
A_BINACC = [1 / 6, 2 / 6, 2 / 6, 3 / 6, 3 / 6, 3 / 6]
A_ACC = [4 / 6, 5 / 6, 4 / 6, 5 / 6, 4 / 6, 3 / 6]
A_FPR = [0.0, 0.0, 1 / 3, 1 / 3, 2 / 3, 1.0]


def test_case_a_curves_and_optimal():
    d, nl, q = _pairs(CASE_A)
    res = calibrate(d, nl, q, extra_metrics=("precision", "recall", "binary_accuracy", "accuracy", "fpr"))
    th = res.thresholds
    np.testing.assert_allclose(th["distance"], A_DIST)
    np.testing.assert_allclose(th["precision"], A_PRECISION)
    np.testing.assert_allclose(th["recall"], A_RECALL)
    np.testing.assert_allclose(th["f1"], A_F1)
    np.testing.assert_allclose(th["binary_accuracy"], A_BINACC)
    np.testing.assert_allclose(th["accuracy"], A_ACC)
    np.testing.assert_allclose(th["fpr"], A_FPR)
    # Best F1 is 6/7 at 0.4; reported rounded to 2 decimals, distance exact.
    opt = res.cutpoints["optimal"]
    assert opt["distance"] == 0.4
    assert opt["f1"] == 0.86
    assert opt["precision"] == 0.75
    assert opt["recall"] == 1.0
    assert opt["binary_accuracy"] == 0.5
    assert res.distance == 0.4
    assert res.optimal is res.cutpoints["optimal"]


def test_case_a_targets():
    d, nl, q = _pairs(CASE_A)
    res = calibrate(
        d,
        nl,
        q,
        thresholds_targets={"precision": 0.9, "recall": 0.6, "fpr": 0.4, "f1": 0.95},
        extra_metrics=None,
    )
    cps = res.cutpoints
    # precision >= 0.9 holds at 0.1 and 0.2: the LAST one (largest distance).
    assert cps["0.9 precision"]["distance"] == 0.2
    assert cps["0.9 precision"]["precision"] == 1.0
    # recall >= 0.6 first holds at 0.2.
    assert cps["0.6 recall"]["distance"] == 0.2
    assert cps["0.6 recall"]["recall"] == 0.67
    # fpr is minimised: target met where fpr <= 0.4 (0.1..0.4), the last one.
    assert cps["0.4 fpr"]["distance"] == 0.4
    assert cps["0.4 fpr"]["fpr"] == 0.33
    # no threshold reaches F1 0.95: left out.
    assert "0.95 f1" not in cps
    assert list(cps) == ["optimal", "0.9 precision", "0.6 recall", "0.4 fpr"]
    # every cutpoint holds every computed metric
    for cp in cps.values():
        assert set(cp) == {"distance", "f1", "precision", "recall", "fpr"}
    assert res.targets == {"precision": 0.9, "recall": 0.6, "fpr": 0.4, "f1": 0.95}


def test_minimised_calibration_metric():
    d, nl, q = _pairs(CASE_A)
    res = calibrate(d, nl, q, calibration_metric="false_positive_rate")
    # fpr is 0 at 0.1 and 0.2: the optimum is the last of them.
    assert res.calibration_metric == "fpr"
    assert res.cutpoints["optimal"]["distance"] == 0.2
    assert res.cutpoints["optimal"]["fpr"] == 0.0


def test_ties_in_distance():
    # distance 0.1 0.2 0.2 0.3 0.3 ; right? T T F F T  (3 right, 2 wrong)
    #   t    TP FP FN TN  f1          precision  recall
    #   0.1  1  0  2  2   2/4         1          1/3
    #   0.2  2  1  1  1   4/6         2/3        2/3
    #   0.3  3  2  0  0   6/8         3/5        1
    pairs = [(0.1, True), (0.2, True), (0.2, False), (0.3, False), (0.3, True)]
    d, nl, q = _pairs(pairs)
    res = calibrate(d, nl, q, rounding=None)
    np.testing.assert_allclose(res.thresholds["distance"], [0.1, 0.2, 0.3])
    np.testing.assert_allclose(res.thresholds["f1"], [0.5, 4 / 6, 0.75])
    np.testing.assert_allclose(res.thresholds["precision"], [1.0, 2 / 3, 0.6])
    np.testing.assert_allclose(res.thresholds["recall"], [1 / 3, 2 / 3, 1.0])
    assert res.cutpoints["optimal"] == {
        "distance": 0.3,
        "f1": 0.75,
        "precision": 0.6,
        "recall": 1.0,
        "binary_accuracy": 0.6,
    }
    # order of tied rows does not matter
    perm = [4, 3, 2, 1, 0]
    res2 = calibrate(d[perm], nl[perm], q[perm], rounding=None)
    for key in res.thresholds:
        np.testing.assert_array_equal(res.thresholds[key], res2.thresholds[key])


def test_tie_in_best_value_goes_to_larger_distance():
    # distance 0.1 0.2 0.3 0.4 0.5 ; right? T F F T F  (2 right, 3 wrong)
    #   t    TP FP FN  f1
    #   0.1  1  0  1   2/3
    #   0.2  1  1  1   2/4
    #   0.3  1  2  1   2/5
    #   0.4  2  2  0   4/6 = 2/3   <- same best value with other counts
    #   0.5  2  3  0   4/7
    pairs = [(0.1, True), (0.2, False), (0.3, False), (0.4, True), (0.5, False)]
    d, nl, q = _pairs(pairs)
    res = calibrate(d, nl, q)
    np.testing.assert_allclose(res.thresholds["f1"], [2 / 3, 0.5, 0.4, 2 / 3, 4 / 7])
    assert res.cutpoints["optimal"]["distance"] == 0.4
    assert res.cutpoints["optimal"]["f1"] == 0.67


def test_plateau_from_unused_columns_goes_to_larger_distance():
    # k=2 with match_nearest: thresholds include the 2nd column's distances (TF Similarity),
    # which do not change the counts, so the best F1 plateau extends to 0.5.
    d = np.array([[0.1, 0.5], [0.2, 0.6], [0.3, 0.7]])
    nl = np.array([[1, 7], [9, 7], [3, 7]])
    q = np.array([1, 2, 3])  # right, wrong, right
    #   t    TP FP FN f1
    #   0.1  1  0  1  2/3
    #   0.2  1  1  1  1/2
    #   0.3  2  1  0  4/5
    #   0.5, 0.6, 0.7: same counts -> 4/5
    res = calibrate(d, nl, q, k=2)
    np.testing.assert_allclose(res.thresholds["distance"], [0.1, 0.2, 0.3, 0.5, 0.6, 0.7])
    np.testing.assert_allclose(res.thresholds["f1"], [2 / 3, 0.5, 0.8, 0.8, 0.8, 0.8])
    assert res.cutpoints["optimal"]["distance"] == 0.7
    # with k=1 only the first column gives thresholds
    res1 = calibrate(d, nl, q, k=1)
    np.testing.assert_allclose(res1.thresholds["distance"], [0.1, 0.2, 0.3])
    assert res1.cutpoints["optimal"]["distance"] == 0.3


def test_missing_neighbours_never_thresholds_or_matches():
    inf = np.inf
    d = np.array([[0.1, inf], [inf, inf], [0.3, inf], [0.2, 0.4]])
    nl = np.array([[1, -1], [-1, -1], [5, -1], [4, 4]])
    q = np.array([1, 2, 3, 4])  # right, no neighbour (wrong), wrong, right
    res = calibrate(d, nl, q, k=2, rounding=None)
    np.testing.assert_allclose(res.thresholds["distance"], [0.1, 0.2, 0.3, 0.4])
    # at 0.4: TP=2 (q1, q4), FP=1 (q3), TN=1 (q2 never matched), FN=0
    assert res.thresholds["recall"][-1] == 1.0
    assert res.thresholds["precision"][-1] == 2 / 3
    assert res.thresholds["binary_accuracy"][-1] == 0.5


def test_unknown_class_queries():
    # query label -1: its class is not in the index; any match is wrong.
    d, nl, q = _pairs([(0.1, True), (0.2, True), (0.3, True)])
    q = q.copy()
    q[2] = -1
    res = calibrate(d, nl, q, rounding=None)
    np.testing.assert_allclose(res.thresholds["precision"], [1.0, 1.0, 2 / 3])
    assert res.cutpoints["optimal"]["distance"] == 0.2


def test_precision_is_one_without_positive_prediction():
    # majority vote with mean distance: the smallest neighbour distance threshold (0.125)
    # is below every query's mean distance, so nothing is matched there. (Distances are
    # exact binary fractions so the means are exact.)
    d = np.array([[0.125, 0.375], [0.25, 0.5]])
    nl = np.array([[1, 1], [2, 5]])
    q = np.array([1, 9])
    res = calibrate(d, nl, q, k=2, matcher="match_majority_vote", rounding=None)
    # matched: q0 -> label 1 at mean 0.25 (right); q1 -> tie 2 vs 5 -> 2 at 0.375 (wrong)
    np.testing.assert_allclose(res.thresholds["distance"], [0.125, 0.25, 0.375, 0.5])
    np.testing.assert_allclose(res.thresholds["precision"], [1.0, 1.0, 0.5, 0.5])
    np.testing.assert_allclose(res.thresholds["recall"], [0.0, 1.0, 1.0, 1.0])


def test_rounding():
    d, nl, q = _pairs(CASE_A)
    assert calibrate(d, nl, q, rounding=None).cutpoints["optimal"]["f1"] == 6 / 7
    assert calibrate(d, nl, q, rounding=4).cutpoints["optimal"]["f1"] == 0.8571
    assert calibrate(d, nl, q, rounding=0).cutpoints["optimal"]["f1"] == 1.0
    # the distance itself is never rounded
    d2 = d + 0.0012345
    assert calibrate(d2, nl, q, rounding=1).cutpoints["optimal"]["distance"] == d2[3, 0]
    with pytest.raises(ValueError, match="rounding"):
        calibrate(d, nl, q, rounding=-1)
    with pytest.raises(TypeError, match="rounding"):
        calibrate(d, nl, q, rounding=1.5)


# ----------------------------------------------------------------------------- errors


def test_empty_input():
    with pytest.raises(ValueError, match="empty"):
        calibrate(np.zeros((0, 1)), np.zeros((0, 1), dtype=int), np.zeros(0, dtype=int))


def test_perfect_model_calibrates():
    # Every match right: a result, not an error; precision 1 everywhere, optimum matches all.
    d, nl, q = _pairs([(0.1, True), (0.2, True), (0.4, True)])
    res = calibrate(d, nl, q, thresholds_targets={"precision": 0.99})
    assert res.cutpoints["optimal"]["distance"] == pytest.approx(0.4)
    assert res.cutpoints["optimal"]["f1"] == 1.0
    assert res.cutpoints["optimal"]["recall"] == 1.0
    np.testing.assert_array_equal(res.thresholds["precision"], [1.0, 1.0, 1.0])
    np.testing.assert_allclose(res.thresholds["recall"], [1 / 3, 2 / 3, 1.0])
    assert res.cutpoints["0.99 precision"]["distance"] == pytest.approx(0.4)
    np.testing.assert_array_equal(match(d, nl, res), q)


def test_all_wrong_input():
    d, nl, q = _pairs([(0.1, False), (0.2, False), (0.3, False)])
    with pytest.raises(ValueError, match="all 3 matches are wrong"):
        calibrate(d, nl, q)


def test_bad_inputs():
    d, nl, q = _pairs(CASE_A)
    with pytest.raises(ValueError, match="NaN"):
        calibrate(np.where(d > 0.5, np.nan, d), nl, q)
    with pytest.raises(ValueError, match="rows"):
        calibrate(d, nl, q[:-1])
    with pytest.raises(ValueError, match="shape"):
        calibrate(d[:, 0], nl, q)
    with pytest.raises(ValueError, match="only 1 neighbours"):
        calibrate(d, nl, q, k=2)
    with pytest.raises(ValueError, match=">= 1"):
        calibrate(d, nl, q, k=0)
    with pytest.raises(ValueError, match="unknown classification metric"):
        calibrate(d, nl, q, calibration_metric="bogus")
    with pytest.raises(ValueError, match="unknown classification metric"):
        calibrate(d, nl, q, extra_metrics=("recall", "bogus"))
    with pytest.raises(ValueError, match="raw count"):
        calibrate(d, nl, q, calibration_metric="tp")
    with pytest.raises(TypeError, match="integer labels"):
        calibrate(d, nl + 0.5, q)
    with pytest.raises(TypeError, match="integer labels"):
        calibrate(d, nl, q.astype(str))
    with pytest.raises(TypeError, match="dict"):
        calibrate(d, nl, q, thresholds_targets=[("precision", 0.9)])
    with pytest.raises(TypeError, match="number"):
        calibrate(d, nl, q, thresholds_targets={"precision": "high"})
    with pytest.raises(ValueError, match="finite"):
        calibrate(d, nl, q, thresholds_targets={"precision": float("nan")})
    with pytest.raises(ValueError, match="unknown matcher"):
        calibrate(d, nl, q, matcher="match_furthest")
    with pytest.raises(ValueError, match="ascending along each row"):
        calibrate(np.array([[0.2, 0.1], [0.1, 0.3]]), np.array([[1, 1], [2, 2]]), np.array([1, 3]))
    with pytest.raises(ValueError, match="no finite distance"):
        calibrate(np.full((2, 1), np.inf), np.array([[1], [2]]), np.array([1, 3]))


def test_integral_float_labels_accepted():
    d, nl, q = _pairs(CASE_A)
    a = calibrate(d, nl, q)
    b = calibrate(d, nl.astype(np.float32), q.astype(np.float64))
    assert a.cutpoints == b.cutpoints


# ----------------------------------------------------------------------------- naive reference


def _naive_predict(nl, d, k, matcher):
    """Slow per-row matcher reference (majority vote: first-seen label wins ties)."""
    out_l, out_d = [], []
    for labels, dists in zip(nl[:, :k].tolist(), d[:, :k].tolist()):
        present = [(lab, dist) for lab, dist in zip(labels, dists) if lab != -1]
        if not present:
            out_l.append(-1)
            out_d.append(np.inf)
            continue
        if matcher == "match_nearest":
            out_l.append(labels[0])
            out_d.append(dists[0] if labels[0] != -1 else np.inf)
            continue
        votes: dict[int, int] = {}
        for lab, _ in present:
            votes[lab] = votes.get(lab, 0) + 1
        best = max(votes.values())
        winner = next(lab for lab, _ in present if votes[lab] == best)
        out_l.append(winner)
        out_d.append(sum(x for _, x in present) / len(present))
    return np.array(out_l), np.array(out_d)


def _naive_calibrate(d, nl, q, k, matcher):
    pred, pdist = _naive_predict(nl, d, k, matcher)
    right = (pred == q) & (pred != -1)
    cands = sorted({x for x in d[:, :k].ravel().tolist() if np.isfinite(x)})
    rows = []
    for t in cands:
        tp = fp = tn = fn = 0
        for r, x in zip(right.tolist(), pdist.tolist()):
            if r and x <= t:
                tp += 1
            elif r:
                fn += 1
            elif x <= t:
                fp += 1
            else:
                tn += 1
        n = tp + fp + tn + fn
        rows.append(
            {
                "distance": t,
                "precision": tp / (tp + fp) if tp + fp else 1.0,
                "recall": tp / (tp + fn) if tp + fn else 0.0,
                "f1": 2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else 0.0,
                "binary_accuracy": tp / n,
                "fpr": fp / (fp + tn) if fp + tn else 0.0,
            }
        )
    f1 = [r["f1"] for r in rows]
    best = max(f1)
    opt = max(i for i, v in enumerate(f1) if v == best)
    prec_ok = [i for i, r in enumerate(rows) if r["precision"] >= 0.8]
    rec_ok = [i for i, r in enumerate(rows) if r["recall"] >= 0.5]
    fpr_ok = [i for i, r in enumerate(rows) if r["fpr"] <= 0.2]
    return (
        rows,
        opt,
        (prec_ok[-1] if prec_ok else None),
        (rec_ok[0] if rec_ok else None),
        (fpr_ok[-1] if fpr_ok else None),
    )


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(
    ("k", "matcher"),
    [(1, "match_nearest"), (3, "match_nearest"), (3, "match_majority_vote"), (4, "match_majority_vote")],
)
def test_random_vs_naive(seed, k, matcher):
    rng = np.random.default_rng(seed)
    n, kk = int(rng.integers(20, 120)), 5
    # coarse distances so that ties are frequent
    d = np.sort(np.round(rng.random((n, kk)), 2), axis=1)
    nl = rng.integers(0, 4, size=(n, kk))
    # some rows lose their last neighbours (an index smaller than k): label -1, distance inf
    num_missing = np.where(rng.random(n) < 0.1, rng.integers(1, kk + 1, size=n), 0)
    missing = np.arange(kk)[None, :] >= (kk - num_missing)[:, None]
    nl[missing] = -1
    d[missing] = np.inf
    q = rng.integers(0, 4, size=n)
    try:
        rows, opt, ip, ir, ifpr = _naive_calibrate(d, nl, q, k, matcher)
    except ValueError:  # no candidates
        pytest.skip("degenerate draw")
    targets = {"precision": 0.8, "recall": 0.5, "fpr": 0.2}
    res = calibrate(
        d,
        nl,
        q,
        k=k,
        matcher=matcher,
        thresholds_targets=targets,
        rounding=None,
        extra_metrics=("precision", "recall", "binary_accuracy", "fpr"),
    )
    for key in rows[0]:
        np.testing.assert_array_equal(res.thresholds[key], [r[key] for r in rows], err_msg=key)
    assert res.cutpoints["optimal"] == rows[opt]
    for name, idx in (("0.8 precision", ip), ("0.5 recall", ir), ("0.2 fpr", ifpr)):
        if idx is None:
            assert name not in res.cutpoints
        else:
            assert res.cutpoints[name] == rows[idx]


# ----------------------------------------------------------------------------- result I/O


def test_result_round_trip_json():
    d, nl, q = _pairs(CASE_A)
    res = calibrate(
        d,
        nl,
        q,
        thresholds_targets={"precision": 0.9},
        matcher=matchers.MatchMajorityVote(weighted=True),
        k=1,
    )
    text = json.dumps(res.to_dict())
    back = CalibrationResult.from_dict(json.loads(text))
    assert back.cutpoints == res.cutpoints
    assert back.calibration_metric == "f1"
    assert back.k == 1
    assert back.targets == {"precision": 0.9}
    assert back.num_queries == 6
    assert matchers.get(back.matcher) == matchers.MatchMajorityVote(weighted=True)
    for key, arr in res.thresholds.items():
        np.testing.assert_array_equal(back.thresholds[key], arr)
    assert "optimal" in repr(back)
    assert "0.9 precision" in back.summary()


def test_result_from_dict_errors():
    d, nl, q = _pairs(CASE_A)
    good = calibrate(d, nl, q).to_dict()
    with pytest.raises(TypeError):
        CalibrationResult.from_dict([1, 2])
    with pytest.raises(ValueError, match="format"):
        CalibrationResult.from_dict({**good, "format": "other"})
    with pytest.raises(ValueError, match="newer"):
        CalibrationResult.from_dict({**good, "version": 99})
    with pytest.raises(ValueError, match="missing"):
        CalibrationResult.from_dict({k: v for k, v in good.items() if k != "thresholds"})
    bad = json.loads(json.dumps(good))
    bad["thresholds"]["f1"] = bad["thresholds"]["f1"][:-1]
    with pytest.raises(ValueError, match="shape"):
        CalibrationResult.from_dict(bad)
    bad = json.loads(json.dumps(good))
    del bad["cutpoints"]["optimal"]
    with pytest.raises(ValueError, match="optimal"):
        CalibrationResult.from_dict(bad)
    with pytest.raises(ValueError, match="unknown matcher"):
        CalibrationResult.from_dict({**good, "matcher": {"name": "nope"}})


# ----------------------------------------------------------------------------- match


def test_match_threshold_forms():
    d, nl, q = _pairs(CASE_A)
    expected_04 = [0, 1, 99, 3, -1, -1]  # d <= 0.4 keeps its label (99 = wrong one)
    assert match(d, nl, 0.4).tolist() == expected_04
    assert match(d, nl, 0.4, no_match_label=-7).tolist() == [0, 1, 99, 3, -7, -7]
    res = calibrate(d, nl, q, thresholds_targets={"precision": 0.9})
    assert match(d, nl, res).tolist() == expected_04  # optimal = 0.4
    assert match(d, nl, res.cutpoints["0.9 precision"]).tolist() == [0, 1, -1, -1, -1, -1]
    assert match(d, nl, 0.39999).tolist() == [0, 1, 99, -1, -1, -1]
    assert match(d, nl, np.inf).tolist() == [0, 1, 99, 3, 99, 99]
    assert match(d, nl, 0).tolist() == [-1] * 6


def test_match_missing_neighbours_and_k():
    d = np.array([[0.1, 0.2, 0.3], [np.inf, np.inf, np.inf], [0.1, 0.15, 0.9]])
    nl = np.array([[1, 2, 2], [-1, -1, -1], [3, 4, 4]])
    assert match(d, nl, np.inf, no_match_label=-5).tolist() == [1, -5, 3]
    # majority vote, mean distance: row 0 -> 2 at 0.2, row 2 -> 4 at (0.1 + 0.15 + 0.9) / 3
    assert match(d, nl, 0.3, k=3, matcher="match_majority_vote").tolist() == [2, -1, -1]
    assert match(d, nl, 0.4, k=3, matcher="match_majority_vote").tolist() == [2, -1, 4]
    # "winner" distance: nearest neighbour carrying the winning label
    mv = matchers.MatchMajorityVote(distance_agg="winner")
    assert match(d, nl, 0.16, k=3, matcher=mv).tolist() == [-1, -1, 4]


def test_match_errors():
    d, nl, _ = _pairs(CASE_A)
    with pytest.raises(ValueError, match="NaN"):
        match(d, nl, float("nan"))
    with pytest.raises(TypeError, match="threshold"):
        match(d, nl, "0.3")
    with pytest.raises(TypeError, match="threshold"):
        match(d, nl, True)
    with pytest.raises(ValueError, match="distance"):
        match(d, nl, {"f1": 0.3})
    with pytest.raises(ValueError, match="shape"):
        match(d[:3], nl, 0.3)
    with pytest.raises(TypeError, match="no_match_label"):
        match(d, nl, 0.3, no_match_label=None)
    assert match(np.zeros((0, 2)), np.zeros((0, 2), dtype=int), 0.5).shape == (0,)


# ----------------------------------------------------------------------------- verbose


def test_verbose_prints_table_and_progress(capsys):
    d, nl, q = _pairs(CASE_A)
    calibrate(d, nl, q, verbose=1, thresholds_targets={"f1": 0.99})
    out, err = capsys.readouterr()
    assert "optimal" in out
    assert "targets not met by any threshold: 0.99 f1" in out
    try:
        import tqdm  # noqa: F401
    except ImportError:  # progress is optional: no bar, no error
        return
    assert "calibrating" in err  # tqdm writes to stderr


def test_verbose_without_tqdm(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # makes `import tqdm.auto` fail
    d, nl, q = _pairs(CASE_A)
    res = calibrate(d, nl, q, verbose=1)
    out, err = capsys.readouterr()
    assert "optimal" in out and "calibrating" not in err
    assert res.cutpoints["optimal"]["distance"] == 0.4
    assert calibration._progress(3, 1, "x") is None


# ----------------------------------------------------------------------------- packaging


def test_top_level_exports():
    import simdex

    assert simdex.calibrate is calibrate
    assert simdex.match is match
    assert simdex.CalibrationResult is CalibrationResult
    assert simdex.metrics.evaluate_retrieval is not None
    assert simdex.plots.plot_calibration is not None


def test_imports_need_only_numpy():
    import subprocess

    code = (
        "import sys, simdex.calibration, simdex.metrics, simdex.matchers, simdex.plots\n"
        "bad = [m for m in ('matplotlib', 'tqdm', 'tensorflow', 'keras', 'sklearn') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    env = {"PYTHONPATH": str(__import__("pathlib").Path(__file__).parents[1] / "python")}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
