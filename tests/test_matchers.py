"""Tests for simdex.matchers."""

from __future__ import annotations

import numpy as np
import pytest

from simdex import matchers
from simdex.matchers import Matcher, MatchMajorityVote, MatchNearest


def test_nearest():
    nl = np.array([[3, 5, 5], [-1, -1, -1], [7, 7, 1]])
    d = np.array([[0.1, 0.2, 0.3], [np.inf, np.inf, np.inf], [0.5, 0.6, 0.7]])
    labels, dist = MatchNearest().predict(nl, d)
    assert labels.tolist() == [3, -1, 7]
    assert dist.tolist() == [0.1, np.inf, 0.5]
    assert labels.dtype == np.int64 and dist.dtype == np.float64


def test_majority_vote_hand_cases():
    nl = np.array(
        [
            [3, 5, 5, 1],  # 5 has two votes
            [4, 6, 6, 4],  # tie 4/6: label seen first (4) wins
            [8, 2, 9, 7],  # all one vote: first (8) wins
            [2, -1, -1, -1],  # only one present neighbour
            [-1, -1, -1, -1],  # none
        ]
    )
    d = np.array(
        [
            [0.25, 0.5, 0.75, 1.0],
            [0.5, 0.5, 0.5, 0.5],
            [0.25, 0.5, 0.5, 1.0],
            [0.5, np.inf, np.inf, np.inf],
            [np.inf, np.inf, np.inf, np.inf],
        ]
    )
    labels, dist = MatchMajorityVote().predict(nl, d)
    assert labels.tolist() == [5, 4, 8, 2, -1]
    # mean of the present neighbours' distances (TF Similarity's reduce_mean)
    assert dist.tolist() == [0.625, 0.5, 0.5625, 0.5, np.inf]
    labels, dist = MatchMajorityVote(distance_agg="winner").predict(nl, d)
    assert labels.tolist() == [5, 4, 8, 2, -1]
    # distance of the nearest neighbour that carries the winning label
    assert dist.tolist() == [0.5, 0.5, 0.25, 0.5, np.inf]


def test_weighted_vote_changes_winner():
    # unweighted: 7 has two votes and wins; weighted: 1/0.1 = 10 beats 1/0.8 + 1/0.9 ~ 2.36
    nl = np.array([[1, 7, 7]])
    d = np.array([[0.1, 0.8, 0.9]])
    assert MatchMajorityVote().predict(nl, d)[0].tolist() == [7]
    assert MatchMajorityVote(weighted=True).predict(nl, d)[0].tolist() == [1]
    assert matchers.get("match_weighted_majority_vote").predict(nl, d)[0].tolist() == [1]
    # zero distance gets a large finite weight, not inf/nan
    labels, dist = MatchMajorityVote(weighted=True).predict(np.array([[2, 3]]), np.array([[0.0, 0.0]]))
    assert labels.tolist() == [2] and dist.tolist() == [0.0]


def _naive_vote(labels, dists, weighted, eps=1e-6):
    votes: dict[int, float] = {}
    order: list[int] = []
    for lab, dist in zip(labels, dists):
        if lab == -1:
            continue
        if lab not in votes:
            order.append(lab)
            votes[lab] = 0.0
        votes[lab] += 1.0 / (dist + eps) if weighted else 1.0
    if not votes:
        return -1
    best = max(votes.values())
    return next(lab for lab in order if votes[lab] == best)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_majority_vote_vs_naive(weighted, seed):
    rng = np.random.default_rng(seed)
    n, k = 300, 7
    nl = rng.integers(0, 4, size=(n, k))
    d = np.sort(rng.random((n, k)), axis=1)
    nl[rng.random((n, k)) < 0.1] = -1
    labels, _ = MatchMajorityVote(weighted=weighted).predict(nl, d)
    expected = [_naive_vote(r, s, weighted) for r, s in zip(nl.tolist(), d.tolist())]
    assert labels.tolist() == expected


def test_get_lookup():
    assert isinstance(matchers.get("match_nearest"), MatchNearest)
    assert isinstance(matchers.get("nearest"), MatchNearest)
    assert isinstance(matchers.get("Match_Majority_Vote"), MatchMajorityVote)
    m = MatchMajorityVote(weighted=True, distance_agg="winner")
    assert matchers.get(m) is m
    assert matchers.get(m.get_config()) == m
    assert matchers.get({"name": "match_majority_vote"}) == MatchMajorityVote()
    assert matchers.get("match_weighted_majority_vote") == MatchMajorityVote(weighted=True)
    assert "weighted=True" in repr(m)
    assert hash(m) == hash(MatchMajorityVote(weighted=True, distance_agg="winner"))


def test_get_errors():
    with pytest.raises(ValueError, match="unknown matcher"):
        matchers.get("furthest")
    with pytest.raises(TypeError):
        matchers.get(3)
    with pytest.raises(ValueError, match="name"):
        matchers.get({"weighted": True})
    with pytest.raises(TypeError):
        matchers.get({"name": "match_nearest", "weighted": True})
    with pytest.raises(TypeError):
        matchers.get({"name": "match_majority_vote", "bogus": 1})
    with pytest.raises(ValueError, match="distance_agg"):
        MatchMajorityVote(distance_agg="median")
    with pytest.raises(ValueError, match="eps"):
        MatchMajorityVote(eps=0)


def test_shape_errors():
    with pytest.raises(ValueError, match="2-D"):
        MatchNearest().predict(np.array([1, 2]), np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="shape"):
        MatchMajorityVote().predict(np.ones((2, 3), int), np.ones((2, 2)))
    with pytest.raises(ValueError, match="at least one"):
        MatchNearest().predict(np.ones((2, 0), int), np.ones((2, 0)))


def test_custom_matcher_plugs_into_calibration():
    from simdex.calibration import calibrate

    class MatchSecond(Matcher):
        name = "match_second"

        def predict(self, neighbour_labels, distances):
            return neighbour_labels[:, 1].astype(np.int64), distances[:, 1].astype(np.float64)

    d = np.array([[0.1, 0.2], [0.1, 0.3], [0.1, 0.4]])
    nl = np.array([[9, 1], [9, 2], [9, 8]])
    q = np.array([1, 2, 3])
    res = calibrate(d, nl, q, k=2, matcher=MatchSecond())
    # second neighbours: right at 0.2 and 0.3, wrong at 0.4 -> best F1 (1.0) at 0.3
    assert res.cutpoints["optimal"]["distance"] == 0.3
    assert res.matcher == {"name": "match_second"}
