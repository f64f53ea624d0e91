"""Record PyTorch Metric Learning 2.9.0 reference values for simdex's PML-style building blocks.

Runs in the venv made by ``bench/pml_env.sh`` (torch CPU + pytorch-metric-learning):

    bench/pml_env.sh /tmp/pml-venv
    /tmp/pml-venv/bin/python bench/pml_compare.py [tests/data/pml_reference.npz]

It builds fixed float64 inputs, evaluates PML's losses (value and gradient
with respect to the embeddings), miners (as dense masks), reducers,
regularizers, distances and ``AccuracyCalculator`` on them, and saves
everything, inputs included, to one small ``.npz``. ``tests/test_pml_reference.py``
recomputes each entry with simdex and compares; it skips when the file is
absent. Trainable state (proxies, class weights) is recorded so simdex can
start from the same values.
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from pytorch_metric_learning import distances, losses, miners, reducers, regularizers
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from pytorch_metric_learning.utils.inference import CustomKNN

torch.manual_seed(0)
rng = np.random.default_rng(0)
OUT: dict[str, np.ndarray] = {}

N, D, C = 16, 6, 4
X = rng.normal(size=(N, D))
Y = np.repeat(np.arange(C), N // C)
rng.shuffle(Y)
OUT["x"], OUT["y"] = X, Y
# one pair per class for N-pair (paper's batches): 2 examples of each of 6 classes
XP = rng.normal(size=(12, D))
YP = np.repeat(np.arange(6), 2)
OUT["x_pairs"], OUT["y_pairs"] = XP, YP


def value_and_grad(loss_fn, x=X, y=Y, **kw):
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    yt = torch.tensor(y)
    loss = loss_fn(xt, yt, **kw)
    loss.backward()
    return float(loss.detach()), xt.grad.numpy().copy()


def record(name, loss_fn, x=X, y=Y, **kw):
    v, g = value_and_grad(loss_fn, x, y, **kw)
    OUT[f"{name}/value"] = np.array(v)
    OUT[f"{name}/grad"] = g
    print(f"{name:40s} {v: .8f}")


# ------------------------------------------------------------------ distances
xt = torch.tensor(X)
OUT["dist/lp"] = distances.LpDistance()(xt).numpy()
OUT["dist/lp_raw_sq"] = distances.LpDistance(normalize_embeddings=False, power=2)(xt).numpy()
OUT["dist/cosine"] = distances.CosineSimilarity()(xt).numpy()
OUT["dist/dot_raw"] = distances.DotProductSimilarity(normalize_embeddings=False)(xt).numpy()


# ------------------------------------------------------------------ miners (as dense masks)
def triplet_mask(t):
    a, p, n = (v.numpy() for v in t)
    m = np.zeros((N, N, N), dtype=bool)
    m[a, p, n] = True
    return m


def pair_masks(t):
    a1, p, a2, n = (v.numpy() for v in t)
    pos = np.zeros((N, N), dtype=bool)
    neg = np.zeros((N, N), dtype=bool)
    pos[a1, p] = True
    neg[a2, n] = True
    return pos, neg


yt = torch.tensor(Y)
x64 = torch.tensor(X, dtype=torch.float64)
OUT["miner/batch_hard"] = triplet_mask(miners.BatchHardMiner()(x64, yt))
OUT["miner/semihard"] = triplet_mask(
    miners.TripletMarginMiner(margin=0.2, type_of_triplets="semihard")(x64, yt)
)
OUT["miner/hard"] = triplet_mask(miners.TripletMarginMiner(margin=0.2, type_of_triplets="hard")(x64, yt))
OUT["miner/margin_all"] = triplet_mask(miners.TripletMarginMiner(margin=0.2, type_of_triplets="all")(x64, yt))
pos, neg = pair_masks(miners.MultiSimilarityMiner(epsilon=0.1)(x64, yt))
OUT["miner/multi_similarity_pos"], OUT["miner/multi_similarity_neg"] = pos, neg

# ---------------------------------------------- triplet loss + miners, reducers, regularizers
record("triplet_margin/all", losses.TripletMarginLoss(margin=0.2))
record("triplet_margin/mean_reducer", losses.TripletMarginLoss(margin=0.2, reducer=reducers.MeanReducer()))
record(
    "triplet_margin/threshold_reducer",
    losses.TripletMarginLoss(margin=0.2, reducer=reducers.ThresholdReducer(low=0.05, high=0.5)),
)
bh = miners.BatchHardMiner()
record("triplet_margin/batch_hard", lambda x, y: losses.TripletMarginLoss(margin=0.2)(x, y, bh(x, y)))
sh = miners.TripletMarginMiner(margin=0.2, type_of_triplets="semihard")
record("triplet_margin/semihard", lambda x, y: losses.TripletMarginLoss(margin=0.2)(x, y, sh(x, y)))
record(
    "triplet_margin/lp_regularizer",
    losses.TripletMarginLoss(
        margin=0.2, embedding_regularizer=regularizers.LpRegularizer(), embedding_reg_weight=0.1
    ),
)
record(
    "triplet_margin/zero_mean_regularizer",
    losses.TripletMarginLoss(
        margin=0.2, embedding_regularizer=regularizers.ZeroMeanRegularizer(), embedding_reg_weight=0.1
    ),
)

# ------------------------------------------------------------------ pair losses
record("supcon/t0.1", losses.SupConLoss(temperature=0.1))
record("supcon/t0.5", losses.SupConLoss(temperature=0.5))
ms = miners.MultiSimilarityMiner(epsilon=0.1)
record("supcon/ms_miner", lambda x, y: losses.SupConLoss(temperature=0.1)(x, y, ms(x, y)))
record("lifted/default", losses.LiftedStructureLoss(neg_margin=1, pos_margin=0))
record("generalized_lifted/default", losses.GeneralizedLiftedStructureLoss(neg_margin=1, pos_margin=0))
record("npairs/dot_normalized", losses.NPairsLoss(), x=XP, y=YP)
record(
    "npairs/dot_raw",
    losses.NPairsLoss(distance=distances.DotProductSimilarity(normalize_embeddings=False)),
    x=XP,
    y=YP,
)
record("angular/alpha40_pairs", losses.AngularLoss(alpha=40), x=XP, y=YP)
# PML's AngularLoss normalises anchors and positives but not the negatives; on unit-norm
# inputs (what an L2-normalising embedding layer gives) it is the paper's formula.
XPU = XP / np.linalg.norm(XP, axis=1, keepdims=True)
OUT["x_pairs_unit"] = XPU
record("npairs/dot_normalized_unit", losses.NPairsLoss(), x=XPU, y=YP)
record("angular/alpha40_pairs_unit", losses.AngularLoss(alpha=40), x=XPU, y=YP)

# ------------------------------------------------------------------ proxy / classifier losses


def with_state(name, loss, attr, **extra):
    state = getattr(loss, attr).detach().numpy().copy()
    OUT[f"{name}/state"] = state
    for k, v in extra.items():
        OUT[f"{name}/{k}"] = np.array(v)
    loss = loss.double()
    record(name, loss)


torch.manual_seed(1)
with_state("proxy_anchor/default", losses.ProxyAnchorLoss(C, D, margin=0.1, alpha=32), "proxies")
torch.manual_seed(2)
with_state("proxy_nca/default", losses.ProxyNCALoss(C, D, softmax_scale=1), "proxies")
torch.manual_seed(3)
with_state("proxy_nca/scale10", losses.ProxyNCALoss(C, D, softmax_scale=10), "proxies")
torch.manual_seed(4)
with_state(
    "soft_triple/default",
    losses.SoftTripleLoss(C, D, centers_per_class=3, la=20, gamma=0.1, margin=0.01),
    "fc",
)
torch.manual_seed(5)
with_state("sphereface/m4", losses.SphereFaceLoss(C, D, margin=4, scale=1), "W")
torch.manual_seed(6)
with_state("sphereface/m3", losses.SphereFaceLoss(C, D, margin=3, scale=1), "W")

# ------------------------------------------------------------------ AccuracyCalculator
Q = rng.normal(size=(30, 4))
QL = rng.integers(0, 4, size=30)
R_ = rng.normal(size=(40, 4))
RL = rng.integers(0, 5, size=40)
OUT["acc/query"], OUT["acc/query_labels"], OUT["acc/reference"], OUT["acc/reference_labels"] = Q, QL, R_, RL
names = (
    "precision_at_1",
    "r_precision",
    "mean_average_precision_at_r",
    "mean_average_precision",
    "mean_reciprocal_rank",
)
for k in (None, 5):
    # exact L2 neighbours on the raw embeddings (PML's default FaissKNN without faiss)
    knn_func = CustomKNN(distances.LpDistance(normalize_embeddings=False))
    calc = AccuracyCalculator(include=names, k=k, knn_func=knn_func)
    got = calc.get_accuracy(torch.tensor(Q), torch.tensor(QL), torch.tensor(R_), torch.tensor(RL))
    for nm in names:
        OUT[f"acc/k{k}/{nm}"] = np.array(got[nm])
        print(f"acc k={k} {nm:32s} {got[nm]:.8f}")
    got = calc.get_accuracy(torch.tensor(R_), torch.tensor(RL), torch.tensor(R_), torch.tensor(RL), True)
    for nm in names:
        OUT[f"acc_self/k{k}/{nm}"] = np.array(got[nm])
        print(f"acc self k={k} {nm:27s} {got[nm]:.8f}")

path = sys.argv[1] if len(sys.argv) > 1 else "tests/data/pml_reference.npz"
np.savez_compressed(path, **OUT)
print("wrote", path, {k: v.shape for k, v in list(OUT.items())[:3]}, "...", len(OUT), "entries")
