"""simdex.losses against loop-based NumPy references (values, gradients, edge cases)."""

from __future__ import annotations

import math

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from simdex import losses as L  # noqa: E402

DISTANCES = ["cosine", "l2", "sql2", "ip"]


# ----------------------------------------------------------------------------- NumPy references
def ref_dist(x: np.ndarray, distance: str) -> np.ndarray:
    n = len(x)
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            a, b = x[i], x[j]
            if distance == "cosine":
                na, nb = np.linalg.norm(a), np.linalg.norm(b)
                out[i, j] = 1.0 - (0.0 if na == 0 or nb == 0 else a @ b / (na * nb))
            elif distance == "l2":
                out[i, j] = np.linalg.norm(a - b)
            elif distance == "sql2":
                out[i, j] = np.sum((a - b) ** 2)
            else:
                out[i, j] = -(a @ b)
    return out


def pos_neg(y: np.ndarray, i: int) -> tuple[list[int], list[int]]:
    pos = [j for j in range(len(y)) if j != i and y[j] == y[i]]
    neg = [j for j in range(len(y)) if y[j] != y[i]]
    return pos, neg


def ref_triplet(
    x,
    y,
    distance="cosine",
    positive_mining="hard",
    negative_mining="semi-hard",
    margin=1.0,
    soft_margin=False,
    pn=False,
):
    D = ref_dist(x, distance)
    out = []
    for i in range(len(y)):
        pos, neg = pos_neg(y, i)
        if not pos or not neg:
            out.append(0.0)
            continue
        p = max(pos, key=lambda j: D[i, j]) if positive_mining == "hard" else min(pos, key=lambda j: D[i, j])
        if negative_mining == "hard":
            n = min(neg, key=lambda j: D[i, j])
        elif negative_mining == "easy":
            n = max(neg, key=lambda j: D[i, j])
        else:
            farther = [j for j in neg if D[i, j] > D[i, p]]
            n = min(farther, key=lambda j: D[i, j]) if farther else max(neg, key=lambda j: D[i, j])
        d_neg = min(D[i, n], D[p, n]) if pn else D[i, n]
        v = D[i, p] - d_neg
        out.append(math.log1p(math.exp(v)) if soft_margin else max(v + margin, 0.0))
    return float(np.mean(out))


def ref_multisim(x, y, distance="cosine", alpha=2.0, beta=40.0, epsilon=0.1, lmda=0.5):
    D = ref_dist(x, distance)
    out = []
    for i in range(len(y)):
        pos, neg = pos_neg(y, i)
        if not pos or not neg:
            out.append(0.0)
            continue
        max_pos = max(D[i, j] for j in pos)
        min_neg = min(D[i, j] for j in neg)
        kept_neg = [j for j in neg if D[i, j] < max_pos + epsilon]
        kept_pos = [j for j in pos if D[i, j] > min_neg - epsilon]
        pt = math.log(1 + sum(math.exp(alpha * (D[i, j] - lmda)) for j in kept_pos)) / alpha
        nt = math.log(1 + sum(math.exp(-beta * (D[i, j] - lmda)) for j in kept_neg)) / beta
        out.append(pt + nt)
    return float(np.mean(out))


def ref_circle(x, y, distance="cosine", gamma=80.0, margin=0.25, x0=None):
    """x0: point at which the weights a_p, a_n are evaluated (they are constants in the paper)."""
    S = 1.0 - ref_dist(x, distance)
    S0 = S if x0 is None else 1.0 - ref_dist(x0, distance)
    m = margin
    out = []
    for i in range(len(y)):
        pos, neg = pos_neg(y, i)
        if not pos or not neg:
            out.append(0.0)
            continue
        sn = sum(math.exp(gamma * max(S0[i, j] + m, 0) * (S[i, j] - m)) for j in neg)
        sp = sum(math.exp(-gamma * max(1 + m - S0[i, j], 0) * (S[i, j] - 1 + m)) for j in pos)
        out.append(math.log1p(sn * sp))
    return float(np.mean(out))


def ref_contrastive(x, y, distance="cosine", margin=0.5):
    D = ref_dist(x, distance)
    out = []
    for i in range(len(y)):
        pos, neg = pos_neg(y, i)
        pt = np.mean([D[i, j] ** 2 for j in pos]) if pos else 0.0
        nt = np.mean([max(margin - D[i, j], 0) ** 2 for j in neg]) if neg else 0.0
        out.append(0.5 * (pt + nt))
    return float(np.mean(out))


def ref_npair(x, y, distance="cosine", scale=10.0):
    D = ref_dist(x, distance)
    out = []
    for i in range(len(y)):
        pos, neg = pos_neg(y, i)
        if not pos or not neg:
            out.append(0.0)
            continue
        terms = [math.log(1 + sum(math.exp(scale * (D[i, p] - D[i, n])) for n in neg)) for p in pos]
        out.append(float(np.mean(terms)))
    return float(np.mean(out))


def ref_angular(x, y, alpha=45.0, form="npair"):
    t2 = math.tan(math.radians(alpha)) ** 2
    out = []
    for i in range(len(y)):
        pos, neg = pos_neg(y, i)
        if not pos or not neg:
            out.append(0.0)
            continue
        a = x[i]
        if form == "triplet":
            p = max(pos, key=lambda j: np.sum((a - x[j]) ** 2))
            c = (a + x[p]) / 2
            nc = min(np.sum((x[n] - c) ** 2) for n in neg)
            out.append(max(np.sum((a - x[p]) ** 2) - 4 * t2 * nc, 0.0))
        else:
            terms = []
            for p in pos:
                f = [4 * t2 * (a + x[p]) @ x[n] - 2 * (1 + t2) * a @ x[p] for n in neg]
                terms.append(math.log(1 + sum(math.exp(v) for v in f)))
            out.append(float(np.mean(terms)))
    return float(np.mean(out))


def ref_margin_softmax(x, y, centers, scale, margin, kind):
    w = centers / np.maximum(np.linalg.norm(centers, axis=1, keepdims=True), 1e-300)
    out = []
    for i in range(len(y)):
        nx = np.linalg.norm(x[i])
        xi = x[i] / nx if nx > 0 else x[i]
        cos = np.clip(w @ xi, -1, 1)
        logits = scale * cos
        c = int(y[i])
        theta = math.acos(cos[c])
        if kind == "arcface":
            target = (
                math.cos(theta + margin) if theta + margin < math.pi else cos[c] - margin * math.sin(margin)
            )
        else:
            target = cos[c] - margin
        logits[c] = scale * target
        mx = logits.max()
        out.append(mx + math.log(np.sum(np.exp(logits - mx))) - logits[c])
    return float(np.mean(out))


# ----------------------------------------------------------------------------- cases
def _cases():
    """(id, factory(), reference(x, y, loss))"""
    cases = []
    for d in DISTANCES:
        cases += [
            (
                f"triplet-semihard-{d}",
                lambda d=d: L.TripletLoss(distance=d),
                lambda x, y, lo: ref_triplet(x, y, lo.distance),
            ),
            (
                f"triplet-hard-soft-{d}",
                lambda d=d: L.TripletLoss(distance=d, negative_mining="hard", soft_margin=True),
                lambda x, y, lo: ref_triplet(x, y, lo.distance, negative_mining="hard", soft_margin=True),
            ),
            (
                f"pn-{d}",
                lambda d=d: L.PNLoss(distance=d, margin=0.5),
                lambda x, y, lo: ref_triplet(x, y, lo.distance, margin=0.5, pn=True),
            ),
            (
                f"multisim-{d}",
                lambda d=d: L.MultiSimilarityLoss(distance=d),
                lambda x, y, lo: ref_multisim(x, y, lo.distance),
            ),
            (
                f"contrastive-{d}",
                lambda d=d: L.ContrastiveLoss(distance=d),
                lambda x, y, lo: ref_contrastive(x, y, lo.distance),
            ),
            (
                f"npair-{d}",
                lambda d=d: L.MultiClassNPairLoss(distance=d, scale=2.0),
                lambda x, y, lo: ref_npair(x, y, lo.distance, 2.0),
            ),
        ]
    cases += [
        (
            "triplet-easy",
            lambda: L.TripletLoss(positive_mining="easy", negative_mining="easy", margin=1.5),
            lambda x, y, lo: ref_triplet(x, y, "cosine", "easy", "easy", 1.5),
        ),
        ("circle-cosine", lambda: L.CircleLoss(), lambda x, y, lo, x0=None: ref_circle(x, y, x0=x0)),
        (
            "circle-small-gamma",
            lambda: L.CircleLoss(gamma=4.0, margin=0.4),
            lambda x, y, lo, x0=None: ref_circle(x, y, gamma=4.0, margin=0.4, x0=x0),
        ),
        (
            "angular-npair",
            lambda: L.AngularLoss(alpha=40.0),
            lambda x, y, lo: ref_angular(x, y, 40.0, "npair"),
        ),
        (
            "angular-triplet",
            lambda: L.AngularLoss(alpha=40.0, form="triplet"),
            lambda x, y, lo: ref_angular(x, y, 40.0, "triplet"),
        ),
        (
            "arcface",
            lambda: L.ArcFaceLoss(3, 4, scale=8.0, margin=0.5, seed=1),
            lambda x, y, lo: ref_margin_softmax(
                x, y, lo.centers.get_weights()[0].astype(np.float64), 8.0, 0.5, "arcface"
            ),
        ),
        (
            "cosface",
            lambda: L.CosFaceLoss(3, 4, scale=8.0, margin=0.35, seed=1),
            lambda x, y, lo: ref_margin_softmax(
                x, y, lo.centers.get_weights()[0].astype(np.float64), 8.0, 0.35, "cosface"
            ),
        ),
    ]
    return cases


CASES = _cases()
IDS = [c[0] for c in CASES]


def toy_batch(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(9, 4)) * 0.5
    y = np.array([0, 0, 0, 1, 1, 2, 2, 2, 1])
    return x, y


def keras_value_and_grad(loss, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    xv = tf.Variable(x.astype(np.float32))
    with tf.GradientTape() as tape:
        value = loss(y, xv)
    grad = tape.gradient(value, xv)
    return float(value), np.zeros_like(x) if grad is None else grad.numpy().astype(np.float64)


def numeric_grad(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += eps
        xm[idx] -= eps
        g[idx] = (f(xp) - f(xm)) / (2 * eps)
    return g


@pytest.mark.parametrize(("name", "factory", "ref"), CASES, ids=IDS)
@pytest.mark.parametrize("seed", [0, 1])
def test_value_matches_reference(name, factory, ref, seed):
    x, y = toy_batch(seed)
    loss = factory()
    x = x.astype(np.float32).astype(np.float64)  # the reference sees exactly the float32 inputs
    value, _ = keras_value_and_grad(loss, x, y)
    expected = ref(x, y, loss)
    assert expected > 0, "toy batch should give a non-trivial loss"
    np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("name", "factory", "ref"), CASES, ids=IDS)
def test_gradient_matches_finite_differences(name, factory, ref):
    x, y = toy_batch(3)
    x = x.astype(np.float32).astype(np.float64)
    loss = factory()
    _, g = keras_value_and_grad(loss, x, y)
    if name.startswith("circle"):  # Circle loss's pair weights are constants (stop-gradient)
        g_num = numeric_grad(lambda z: ref(z, y, loss, x0=x), x)
    else:
        g_num = numeric_grad(lambda z: ref(z, y, loss), x)
    scale = np.abs(g_num).max()
    assert scale > 0
    big = np.abs(g_num) > 1e-2 * scale
    assert big.any()
    np.testing.assert_array_equal(np.sign(g[big]), np.sign(g_num[big]))
    np.testing.assert_allclose(g, g_num, atol=2e-3 * scale, rtol=2e-3)


def degenerate_batches():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(6, 4)).astype(np.float32)
    mixed = np.array([0, 0, 1, 1, 2, 2])
    return {
        "one-class": (x, np.zeros(6, dtype=int)),
        "duplicates": (np.repeat(x[:1], 6, axis=0), mixed),
        "duplicate-pairs": (np.repeat(x[:3], 2, axis=0), mixed),
        "all-zero": (np.zeros_like(x), mixed),
        "all-distinct-classes": (x, np.arange(6)),
    }


@pytest.mark.parametrize(("name", "factory", "ref"), CASES, ids=IDS)
@pytest.mark.parametrize("batch", list(degenerate_batches()))
def test_degenerate_batches_are_finite(name, factory, ref, batch):
    x, y = degenerate_batches()[batch]
    loss = factory()
    value, g = keras_value_and_grad(loss, x.astype(np.float64), y)
    assert np.isfinite(value)
    assert np.all(np.isfinite(g))


def test_no_positive_or_negative_gives_zero_for_pair_losses():
    x, _ = toy_batch(0)
    for loss in [
        L.TripletLoss(),
        L.PNLoss(),
        L.MultiSimilarityLoss(),
        L.CircleLoss(),
        L.MultiClassNPairLoss(),
        L.AngularLoss(),
    ]:
        assert keras_value_and_grad(loss, x, np.zeros(9, dtype=int))[0] == 0.0
        assert keras_value_and_grad(loss, x, np.arange(9))[0] == 0.0


@pytest.mark.parametrize(("name", "factory", "ref"), CASES, ids=IDS)
def test_serialisable(name, factory, ref):
    loss = factory()
    config = loss.get_config()
    clone = type(loss).from_config(config)
    assert clone.get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert type(restored) is type(loss)
    assert restored.get_config() == config
    if not isinstance(loss, (L.ArcFaceLoss, L.CosFaceLoss)):  # centres are fresh after from_config
        x, y = toy_batch(0)
        assert keras_value_and_grad(restored, x, y)[0] == pytest.approx(
            keras_value_and_grad(loss, x, y)[0], rel=1e-6
        )


@pytest.mark.parametrize("distance", DISTANCES)
def test_pairwise_distances(distance):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(7, 5)).astype(np.float32)
    x[3] = 0.0
    x[5] = x[1]
    got = keras.ops.convert_to_numpy(L.pairwise_distances(x, distance))
    np.testing.assert_allclose(got, ref_dist(x.astype(np.float64), distance), atol=2e-5, rtol=1e-5)


def test_sample_weight_and_label_shapes():
    x, y = toy_batch(0)
    loss = L.TripletLoss()
    a = loss(y, x)
    b = loss(y.reshape(-1, 1), x)
    assert float(a) == pytest.approx(float(b))
    w = np.ones(9)
    assert float(loss(y, x, sample_weight=w)) == pytest.approx(float(a))
    assert float(loss(y, x, sample_weight=np.zeros(9))) == 0.0


def test_bad_arguments():
    x, y = toy_batch(0)
    with pytest.raises(ValueError, match="distance"):
        L.TripletLoss(distance="manhattan")
    with pytest.raises(TypeError, match="distance"):
        L.CircleLoss(distance=3)
    with pytest.raises(ValueError, match="negative_mining"):
        L.TripletLoss(negative_mining="semi")
    with pytest.raises(ValueError, match="margin"):
        L.TripletLoss(margin=-1.0)
    with pytest.raises(ValueError, match="alpha"):
        L.AngularLoss(alpha=90.0)
    with pytest.raises(ValueError, match="form"):
        L.AngularLoss(form="quad")
    with pytest.raises(ValueError, match="num_classes"):
        L.ArcFaceLoss(0, 4)
    with pytest.raises(TypeError, match="embedding_dim"):
        L.CosFaceLoss(3, 4.0)
    with pytest.raises(ValueError, match="shape"):
        L.TripletLoss()(y, x[:, :, None])
    with pytest.raises(ValueError, match="labels"):
        L.TripletLoss()(y[:5], x)
    with pytest.raises(ValueError, match="dim"):
        L.ArcFaceLoss(3, 8)(y % 3, x)


def test_get():
    assert isinstance(L.get("triplet"), L.TripletLoss)
    assert isinstance(L.get("multi-similarity"), L.MultiSimilarityLoss)
    assert isinstance(L.get("CircleLoss"), L.CircleLoss)
    loss = L.ContrastiveLoss(margin=0.3)
    assert L.get(loss) is loss
    assert L.get({"class_name": "ContrastiveLoss", "config": {"margin": 0.3}}).margin == 0.3
    with pytest.raises(ValueError, match="unknown loss"):
        L.get("nope")
    with pytest.raises(TypeError):
        L.get(3)


def test_margin_loss_centres_are_variables():
    loss = L.ArcFaceLoss(5, 4, seed=0)
    assert len(loss.trainable_layers) == 1
    (var,) = loss.trainable_layers[0].trainable_weights
    assert tuple(var.shape) == (5, 4)
    x, y = toy_batch(0)
    xv = tf.constant(x.astype(np.float32))
    with tf.GradientTape() as tape:
        value = loss(y % 5, xv)
    g = tape.gradient(value, var.value)
    assert g is not None and np.abs(g.numpy()).sum() > 0
