"""simdex's PML-style building blocks against PyTorch Metric Learning 2.9.0's own numbers.

``tests/data/pml_reference.npz`` is written by ``bench/pml_compare.py`` in the
venv of ``bench/pml_env.sh`` (torch CPU + pytorch-metric-learning 2.9.0): the
fixed inputs, PML's loss values and gradients (float64), its mined tuples as
masks, distances and AccuracyCalculator figures. Each test recomputes the same
thing with simdex. Skips when the file is absent.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from simdex import distances, miners, reducers, regularizers  # noqa: E402
from simdex.evaluate.accuracy import AccuracyCalculator, cluster_scores  # noqa: E402
from simdex.learn import losses_pml  # noqa: E402

REF_PATH = os.path.join(os.path.dirname(__file__), "data", "pml_reference.npz")
if not os.path.exists(REF_PATH):  # pragma: no cover - depends on the checkout
    pytest.skip(f"{REF_PATH} absent (run bench/pml_compare.py)", allow_module_level=True)
REF = dict(np.load(REF_PATH))
X, Y = REF["x"], REF["y"]
XP, YP = REF["x_pairs"], REF["y_pairs"]
F64 = {"dtype": "float64"}


def value_and_grad(loss, x=X, y=Y):
    xv = tf.Variable(x, dtype=tf.float64)
    with tf.GradientTape() as tape:
        value = loss(tf.constant(y), xv)
    return float(value), tape.gradient(value, xv).numpy()


def check(name, loss, x=X, y=Y, rtol=1e-7, atol=1e-9):
    value, grad = value_and_grad(loss, x, y)
    np.testing.assert_allclose(value, REF[f"{name}/value"], rtol=rtol, atol=atol, err_msg=name)
    np.testing.assert_allclose(grad, REF[f"{name}/grad"], rtol=max(rtol, 1e-6), atol=atol * 10, err_msg=name)


# ----------------------------------------------------------------------------- distances and miners
def test_distances():
    x = tf.constant(X)
    np.testing.assert_allclose(distances.LpDistance()(x), REF["dist/lp"], atol=1e-7)
    np.testing.assert_allclose(
        distances.LpDistance(normalize_embeddings=False, power=2)(x),
        REF["dist/lp_raw_sq"],
        rtol=1e-10,
        atol=1e-10,
    )
    np.testing.assert_allclose(distances.CosineSimilarity()(x), REF["dist/cosine"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(
        distances.DotProductSimilarity(normalize_embeddings=False)(x), REF["dist/dot_raw"], rtol=1e-10
    )


@pytest.mark.parametrize(
    "name, miner",
    [
        ("batch_hard", miners.BatchHardMiner()),
        ("semihard", miners.TripletMarginMiner(0.2, "semihard")),
        ("hard", miners.TripletMarginMiner(0.2, "hard")),
        ("margin_all", miners.TripletMarginMiner(0.2, "all")),
    ],
)
def test_triplet_miners(name, miner):
    got = np.asarray(miner(tf.constant(X), tf.constant(Y)))
    np.testing.assert_array_equal(got, REF[f"miner/{name}"])
    assert got.any()


def test_multi_similarity_miner_and_conversions():
    pos, neg = miners.MultiSimilarityMiner(0.1)(tf.constant(X), tf.constant(Y))
    np.testing.assert_array_equal(pos, REF["miner/multi_similarity_pos"])
    np.testing.assert_array_equal(neg, REF["miner/multi_similarity_neg"])
    t = np.asarray(miners.to_triplets((pos, neg)))
    assert t.shape == (16, 16, 16) and t.sum() == sum(
        int(np.sum(pos[a])) * int(np.sum(neg[a])) for a in range(16)
    )
    p2, n2 = miners.to_pairs(REF["miner/semihard"])
    np.testing.assert_array_equal(p2, REF["miner/semihard"].any(axis=2))
    np.testing.assert_array_equal(n2, REF["miner/semihard"].any(axis=1))
    all_t = np.asarray(miners.AllTripletsMiner()(tf.constant(X), tf.constant(Y)))
    assert all_t.sum() == 16 * 3 * 12  # 4 classes of 4: 3 positives and 12 negatives per anchor


# ----------------------------------------------------------------------------- losses
TRIPLET_CASES = {
    "triplet_margin/all": {},
    "triplet_margin/mean_reducer": {"reducer": reducers.MeanReducer()},
    "triplet_margin/threshold_reducer": {"reducer": reducers.ThresholdReducer(low=0.05, high=0.5)},
    "triplet_margin/batch_hard": {"miner": miners.BatchHardMiner()},
    "triplet_margin/semihard": {"miner": miners.TripletMarginMiner(0.2, "semihard")},
    "triplet_margin/lp_regularizer": {
        "embedding_regularizer": regularizers.LpRegularizer(),
        "embedding_reg_weight": 0.1,
    },
    "triplet_margin/zero_mean_regularizer": {
        "embedding_regularizer": regularizers.ZeroMeanRegularizer(),
        "embedding_reg_weight": 0.1,
    },
}


@pytest.mark.parametrize("name", sorted(TRIPLET_CASES))
def test_triplet_margin_loss(name):
    check(name, losses_pml.TripletMarginLoss(margin=0.2, **TRIPLET_CASES[name], **F64))


def test_pair_losses():
    check("supcon/t0.1", losses_pml.SupConLoss(temperature=0.1, **F64))
    check("supcon/t0.5", losses_pml.SupConLoss(temperature=0.5, **F64))
    check(
        "supcon/ms_miner",
        losses_pml.SupConLoss(temperature=0.1, miner=miners.MultiSimilarityMiner(0.1), **F64),
    )
    check("lifted/default", losses_pml.LiftedStructureLoss(**F64))
    check("generalized_lifted/default", losses_pml.GeneralizedLiftedStructureLoss(**F64))


def test_npair_and_angular():
    check("npairs/dot_normalized", losses_pml.NPairLoss(**F64), XP, YP)
    raw = distances.DotProductSimilarity(normalize_embeddings=False)
    check("npairs/dot_raw", losses_pml.NPairLoss(distance=raw, **F64), XP, YP)
    # The paper's N-pair + lambda * angular is PML's NPairsLoss + lambda * AngularLoss on an N-pair
    # batch of unit vectors (PML leaves the negatives of AngularLoss unnormalised; the paper and
    # simdex normalise all three). At unit inputs simdex's gradient is the tangential part of PML's.
    xu = REF["x_pairs_unit"]
    value, grad = value_and_grad(losses_pml.NPairAngularLoss(alpha=40, lambda_=2.0, **F64), xu, YP)
    ref_v = REF["npairs/dot_normalized_unit/value"] + 2.0 * REF["angular/alpha40_pairs_unit/value"]
    ref_g = REF["npairs/dot_normalized_unit/grad"] + 2.0 * REF["angular/alpha40_pairs_unit/grad"]
    ref_g = ref_g - np.sum(ref_g * xu, axis=1, keepdims=True) * xu
    np.testing.assert_allclose(value, ref_v, rtol=1e-7)
    np.testing.assert_allclose(grad, ref_g, rtol=1e-6, atol=1e-9)
    # a batch with a lone class and a class of three: only the first two of each class pair up
    y = np.array([0, 0, 1, 2, 2, 2, 3, 3, 4, 4, 5, 5])
    v, _ = value_and_grad(losses_pml.NPairLoss(**F64), XP, y)
    assert np.isfinite(v) and v > 0
    with pytest.raises(ValueError, match="degrees"):
        losses_pml.NPairAngularLoss(alpha=95)


def _proxy(loss, state):
    loss.set_centers(state)
    return loss


def test_proxy_losses():
    C, D = 4, 6
    check(
        "proxy_anchor/default",
        _proxy(
            losses_pml.ProxyAnchorLoss(C, D, margin=0.1, alpha=32, **F64), REF["proxy_anchor/default/state"]
        ),
        rtol=1e-6,
    )
    for name, scale in (("proxy_nca/default", 1), ("proxy_nca/scale10", 10)):
        loss = losses_pml.ProxyNCALoss(C, embedding_size=D, softmax_scale=scale, **F64)
        check(name, _proxy(loss, REF[f"{name}/state"]), rtol=1e-6)
    st = losses_pml.SoftTripleLoss(C, D, centers_per_class=3, la=20, gamma=0.1, margin=0.01, **F64)
    check("soft_triple/default", _proxy(st, REF["soft_triple/default/state"].T), rtol=1e-6)
    for name, m in (("sphereface/m4", 4), ("sphereface/m3", 3)):
        loss = losses_pml.SphereFaceLoss(C, D, margin=m, scale=1, **F64)
        check(name, _proxy(loss, REF[f"{name}/state"].T), rtol=1e-6)
    with pytest.raises(ValueError, match="integer"):
        losses_pml.SphereFaceLoss(C, D, margin=1.35)


def test_proxy_loss_trains_with_the_model():
    import simdex

    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    model = simdex.SimilarityModel(inputs, keras.layers.Dense(4)(inputs))
    loss = losses_pml.ProxyAnchorLoss(4, 4, seed=0)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=loss)
    before = loss.centers.centers.numpy().copy()
    model.fit(X.astype("float32"), Y, batch_size=16, epochs=2, verbose=0)
    assert not np.allclose(before, loss.centers.centers.numpy())


# ----------------------------------------------------------------------------- accuracy calculator
NAMES = (
    "precision_at_1",
    "r_precision",
    "mean_average_precision_at_r",
    "mean_average_precision",
    "mean_reciprocal_rank",
)


@pytest.mark.parametrize("k", [None, 5])
def test_accuracy_calculator(k):
    q, ql = REF["acc/query"], REF["acc/query_labels"]
    r, rl = REF["acc/reference"], REF["acc/reference_labels"]
    calc = AccuracyCalculator(include=NAMES, k=k)
    got = calc.get_accuracy(q, ql, r, rl)
    for nm in NAMES:
        assert got[nm] == pytest.approx(float(REF[f"acc/k{k}/{nm}"]), rel=1e-6, abs=1e-9), nm
    got = calc.get_accuracy(r, rl, r, rl, ref_includes_query=True)
    for nm in NAMES:
        assert got[nm] == pytest.approx(float(REF[f"acc_self/k{k}/{nm}"]), rel=1e-6, abs=1e-9), nm
    same = calc.get_accuracy(r, rl)  # reference defaults to the queries themselves
    assert same == got


def test_cluster_scores_and_calculator_errors():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 20)
    x = np.eye(3)[y] * 10 + rng.normal(scale=0.1, size=(60, 3))
    assert cluster_scores(x, y) == {"NMI": pytest.approx(1.0), "AMI": pytest.approx(1.0)}
    got = AccuracyCalculator(include=("NMI", "AMI", "precision_at_1")).get_accuracy(x, y)
    assert got == {"NMI": pytest.approx(1.0), "AMI": pytest.approx(1.0), "precision_at_1": 1.0}
    with pytest.raises(ValueError, match="unknown metrics"):
        AccuracyCalculator(include=("recall",))
    with pytest.raises(ValueError, match="NaN"):
        AccuracyCalculator().get_accuracy(np.full((3, 2), np.nan), [0, 1, 2])
    with pytest.raises(ValueError, match="labels"):
        AccuracyCalculator().get_accuracy(x, y[:5])


def test_configs_round_trip_and_keras_archive(tmp_path):
    import simdex

    cases = [
        losses_pml.TripletMarginLoss(
            margin=0.3,
            swap=True,
            miner=miners.TripletMarginMiner(0.1, "semihard", distance=distances.CosineSimilarity()),
            reducer=reducers.ThresholdReducer(low=0.01, high=2.0),
            embedding_regularizer=regularizers.LpRegularizer(power=2),
            embedding_reg_weight=0.5,
        ),
        losses_pml.SupConLoss(temperature=0.2, miner=miners.MultiSimilarityMiner(0.2)),
        losses_pml.LiftedStructureLoss(neg_margin=0.8, distance=distances.LpDistance(power=2)),
        losses_pml.GeneralizedLiftedStructureLoss(pos_margin=0.1),
        losses_pml.NPairLoss(distance=distances.DotProductSimilarity(normalize_embeddings=False)),
        losses_pml.NPairAngularLoss(alpha=36, lambda_=1.5),
        losses_pml.ProxyAnchorLoss(4, 6, margin=0.2, alpha=16, seed=3),
        losses_pml.ProxyNCALoss(4, 6, softmax_scale=5),
        losses_pml.SoftTripleLoss(4, 6, centers_per_class=2, la=10, gamma=0.2, margin=0.02),
        losses_pml.SphereFaceLoss(4, 6, margin=3, scale=2.0),
    ]
    for loss in cases:
        config = loss.get_config()
        again = type(loss).from_config(config)
        assert again.get_config() == config, type(loss).__name__
        v1, _ = value_and_grad(type(loss).from_config({**config, "dtype": "float64"}))
        assert np.isfinite(v1)
    # a model compiled with a composed loss saves as .keras and Keras loads it back, loss included
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    model = simdex.SimilarityModel(inputs, simdex.MetricEmbedding(4)(inputs))
    model.compile(optimizer="adam", loss=cases[0])
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.loss.get_config() == cases[0].get_config()
    model.compile(optimizer="adam", loss=losses_pml.ProxyAnchorLoss(4, 4, seed=0))
    model.save(tmp_path / "p.keras")
    assert isinstance(keras.models.load_model(tmp_path / "p.keras").loss, losses_pml.ProxyAnchorLoss)
