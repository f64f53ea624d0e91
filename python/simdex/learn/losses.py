"""Metric-learning losses for Keras 3, written in ``keras.ops``.

Every loss is a ``keras.losses.Loss`` called as ``loss(y_true, y_pred)`` with

* ``y_true``: class labels, shape ``(batch,)`` or ``(batch, 1)``, integer-valued
  (they are compared for equality; Keras casts them to float, which is exact for
  labels below 2**24);
* ``y_pred``: embeddings, shape ``(batch, d)`` float.

It returns one value per example (the anchor), which Keras reduces (by default
the mean over the batch). Anchors that have no positive or no negative in the
batch contribute 0. Pair-based losses take a ``distance`` in
``{"cosine", "l2", "sql2", "ip"}`` (same meanings as :mod:`simdex.index`:
``1 - cos``, euclidean, squared euclidean, ``-dot``). Batches must contain at
least two examples of some classes; :class:`simdex.samplers.MultiShotMemorySampler`
builds such batches.

Losses with trainable state (:class:`ArcFaceLoss`, :class:`CosFaceLoss`) keep
their class centres in a small Keras layer, ``loss.centers`` (a
:class:`ClassCenters`). :meth:`simdex.SimilarityModel.compile` finds it and adds
its variables to the model's trainable variables, so ``model.fit`` trains the
centres together with the network. With a plain ``keras.Model`` use
``model = simdex.SimilarityModel(inputs, outputs)`` instead.

Use :func:`get` to build a loss from a name, a config or an instance.

Why one module of ~770 lines: every loss uses the masked-reduction and mining helpers at
the top and the registry (``get``) at the bottom; the loss classes themselves are short.
(It is also being extended by the learning-API work; a split by family is left to it.)
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from simdex._optional import import_keras
from simdex._validate import canonical_metric, check_positive_number
from simdex.learn.layers import l2_normalize

if TYPE_CHECKING:  # the real module, for type checkers; at run time with an install hint
    import keras
else:
    keras = import_keras()
ops = keras.ops

DISTANCES = ("cosine", "l2", "sql2", "ip")
_EPS = 1e-12
_TINY = 1e-30  # added inside log() of masked sums so an empty set gives a finite value
_BIG = 1e9  # stands in for +/-inf in argmin/argmax masks (no gradient flows through it)
_register = keras.saving.register_keras_serializable(package="simdex")


# ----------------------------------------------------------------------------- helpers
def _check_distance(distance: str) -> str:
    return canonical_metric(distance, "distance")


def _check_positive(name: str, value: float, allow_zero: bool = False) -> float:
    return check_positive_number(value, name, allow_zero=allow_zero)


def check_angle_radians(what: str, value: Any) -> float:
    """Validate an angle given in radians: a finite number in ``[0, pi]``.

    Angles above pi are almost always degrees given by mistake (PyTorch Metric
    Learning's ``ArcFaceLoss(margin=28.6)`` is in degrees), so they are refused
    with a message that names both units instead of being silently taken as
    radians.

    Raises:
        TypeError: not a number.
        ValueError: negative, not finite, or above pi.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number (radians), got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"{what} must be a finite angle >= 0 in radians, got {value}")
    if v > math.pi:
        raise ValueError(
            f"{what} is an angle in radians and must be <= pi, got {value}; it looks like degrees "
            f"(PyTorch Metric Learning writes ArcFace margins in degrees): pass "
            f"math.radians({value}) = {math.radians(v):.4f}"
        )
    return v


def _take_alias(kwargs: dict[str, Any], alias: str, name: str, current: Any, default: Any, owner: str) -> Any:
    """Pop keyword ``alias`` (another library's name for ``name``) from ``kwargs``.

    Returns the aliased value when it was given, else ``current``; giving both
    names with different values is a ``TypeError``.
    """
    if alias not in kwargs:
        return current
    value = kwargs.pop(alias)
    if current != default and current != value:
        raise TypeError(f"{owner} got both {name}={current!r} and its alias {alias}={value!r}")
    return value


def pairwise_distances(x: Any, distance: str = "cosine") -> Any:
    """All pairwise distances between the rows of ``x``.

    Args:
        x: Embeddings ``(n, d)`` float.
        distance: ``"cosine"`` (``1 - cos``; zero rows are at distance 1 from
            everything), ``"l2"``, ``"sql2"`` or ``"ip"`` (``-dot``).

    Returns:
        ``(n, n)`` tensor of ``x.dtype``; finite, with finite gradients, even for
        duplicate or all-zero rows.
    """
    distance = _check_distance(distance)
    if distance == "ip":
        return -ops.matmul(x, ops.transpose(x))
    if distance == "cosine":
        xn = l2_normalize(x, axis=1)
        return 1.0 - ops.matmul(xn, ops.transpose(xn))
    idx = ops.arange(ops.shape(x)[0])
    # The expansion leaves ~1e-7 on the diagonal, which sqrt would blow up to ~1e-3: force 0.
    off_diag = ops.cast(ops.not_equal(idx[:, None], idx[None, :]), x.dtype)
    sq = ops.sum(ops.square(x), axis=1)
    d2 = ops.maximum(sq[:, None] + sq[None, :] - 2.0 * ops.matmul(x, ops.transpose(x)), 0.0) * off_diag
    if distance == "sql2":
        return d2
    # sqrt has an infinite slope at 0 (duplicates, the diagonal): clamp, then zero those entries.
    eps = ops.cast(_EPS, x.dtype)
    return ops.where(d2 > eps, ops.sqrt(ops.maximum(d2, eps)), ops.zeros_like(d2))


def _prepare(y_true: Any, y_pred: Any) -> tuple[Any, Any]:
    """Check ranks and flatten the labels to ``(n,)``."""
    if len(y_pred.shape) != 2:
        raise ValueError(f"y_pred must be embeddings of shape (batch, dim), got shape {tuple(y_pred.shape)}")
    labels = ops.reshape(y_true, (-1,))
    n_lab, n_emb = labels.shape[0], y_pred.shape[0]
    if n_lab is not None and n_emb is not None and n_lab != n_emb:
        raise ValueError(f"y_true has {n_lab} labels but y_pred has {n_emb} embeddings")
    return labels, y_pred


def _label_masks(labels: Any) -> tuple[Any, Any]:
    """Boolean ``(n, n)`` masks: positives (same label, not self) and negatives."""
    same = ops.equal(labels[:, None], labels[None, :])
    idx = ops.arange(ops.shape(labels)[0])
    not_self = ops.not_equal(idx[:, None], idx[None, :])
    return ops.logical_and(same, not_self), ops.logical_not(same)


def _f(mask: Any, dtype: Any) -> Any:
    return ops.cast(mask, dtype)


def _masked_max(x: Any, mask: Any) -> Any:
    """Row-wise max of ``x`` over ``mask``; rows with an empty mask give min(x)."""
    x_min = ops.min(x, axis=1, keepdims=True)
    return ops.max((x - x_min) * _f(mask, x.dtype), axis=1) + x_min[:, 0]


def _masked_min(x: Any, mask: Any) -> Any:
    """Row-wise min of ``x`` over ``mask``; rows with an empty mask give max(x)."""
    x_max = ops.max(x, axis=1, keepdims=True)
    return ops.min((x - x_max) * _f(mask, x.dtype), axis=1) + x_max[:, 0]


def _masked_logsumexp(x: Any, mask: Any, axis: int = -1) -> Any:
    """``log(sum(exp(x[mask])))`` along ``axis``, stable; an empty mask gives a finite value ~ -69."""
    x_min = ops.min(x, axis=axis, keepdims=True)
    m = ops.stop_gradient(ops.max(ops.where(mask, x, x_min), axis=axis, keepdims=True))
    terms = ops.where(mask, ops.exp(ops.where(mask, x - m, ops.zeros_like(x))), ops.zeros_like(x))
    return ops.squeeze(m, axis=axis) + ops.log(ops.sum(terms, axis=axis) + _TINY)


def _log1p_sum_exp(x: Any, mask: Any, axis: int = -1) -> Any:
    """``log(1 + sum(exp(x[mask])))`` along ``axis``, stable; empty mask gives 0."""
    m = ops.stop_gradient(
        ops.maximum(ops.max(ops.where(mask, x, ops.zeros_like(x)), axis=axis, keepdims=True), 0.0)
    )
    terms = ops.where(mask, ops.exp(ops.where(mask, x - m, ops.zeros_like(x))), ops.zeros_like(x))
    # Either m == 0 (so exp(-m) == 1) or m is a masked entry (its term == 1): the log argument is >= 1.
    return ops.squeeze(m, axis=axis) + ops.log(
        ops.exp(-ops.squeeze(m, axis=axis)) + ops.sum(terms, axis=axis)
    )


def _any(mask: Any) -> Any:
    return ops.any(mask, axis=1)


def _take_rows(matrix: Any, idx: Any) -> Any:
    """``matrix[i, idx[i]]`` for every row ``i``."""
    return ops.take_along_axis(matrix, ops.expand_dims(idx, 1), axis=1)[:, 0]


_POSITIVE_MINING = ("hard", "easy")
_NEGATIVE_MINING = ("hard", "semi-hard", "easy")


def _mine(dist: Any, pos: Any, neg: Any, positive_mining: str, negative_mining: str) -> tuple[Any, Any]:
    """Choose one positive and one negative column per anchor row.

    Positive: ``hard`` = farthest, ``easy`` = closest. Negative: ``hard`` =
    closest; ``easy`` = farthest; ``semi-hard`` = the closest negative farther
    than the chosen positive, or, when there is none, the farthest negative
    (FaceNet's rule). Rows without a positive/negative get an arbitrary index.

    Returns:
        ``(pos_idx, neg_idx)``, int tensors ``(n,)``.
    """
    d = ops.stop_gradient(dist)
    big = ops.cast(_BIG, d.dtype)
    if positive_mining == "hard":
        pos_idx = ops.argmax(ops.where(pos, d, -big), axis=1)
    else:
        pos_idx = ops.argmin(ops.where(pos, d, big), axis=1)
    hardest = ops.argmin(ops.where(neg, d, big), axis=1)
    easiest = ops.argmax(ops.where(neg, d, -big), axis=1)
    if negative_mining == "hard":
        return pos_idx, hardest
    if negative_mining == "easy":
        return pos_idx, easiest
    d_ap = _take_rows(d, pos_idx)
    outside = ops.logical_and(neg, d > d_ap[:, None])
    semi = ops.argmin(ops.where(outside, d, big), axis=1)
    return pos_idx, ops.where(_any(outside), semi, easiest)


class MetricLoss(keras.losses.Loss):
    """Base class: checks inputs, builds label masks, calls :meth:`compute`.

    Subclasses implement ``compute(labels, embeddings) -> (n,)`` per-anchor losses.
    """

    def __init__(self, distance: str = "cosine", name: str | None = None, **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.distance = _check_distance(distance)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        labels, emb = _prepare(y_true, y_pred)
        return self.compute(labels, emb)

    def compute(self, labels: Any, embeddings: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "distance": self.distance}


def _hinge_or_soft(x: Any, margin: float, soft_margin: bool) -> Any:
    return ops.softplus(x) if soft_margin else ops.relu(x + margin)


def _check_mining(positive_mining: str, negative_mining: str) -> tuple[str, str]:
    if positive_mining not in _POSITIVE_MINING:
        raise ValueError(f"positive_mining must be one of {_POSITIVE_MINING}, got {positive_mining!r}")
    if negative_mining not in _NEGATIVE_MINING:
        raise ValueError(f"negative_mining must be one of {_NEGATIVE_MINING}, got {negative_mining!r}")
    return positive_mining, negative_mining


# ----------------------------------------------------------------------------- triplet family
@_register
class TripletLoss(MetricLoss):
    """Triplet loss with online mining (Schroff et al., FaceNet, 2015).

    For each anchor ``a`` one positive ``p`` and one negative ``n`` are mined
    in the batch (see ``positive_mining``/``negative_mining``), and the loss is
    ``max(d(a,p) - d(a,n) + margin, 0)``, or ``softplus(d(a,p) - d(a,n))``
    with ``soft_margin=True``.

    Args:
        distance: Pairwise distance (see module doc).
        positive_mining: ``"hard"`` (farthest positive) or ``"easy"`` (closest).
            TF Similarity's name ``positive_mining_strategy`` is accepted too.
        negative_mining: ``"semi-hard"`` (closest negative farther than the
            positive; the farthest negative if none is), ``"hard"`` (closest) or
            ``"easy"`` (farthest). Also accepted as ``negative_mining_strategy``.
        margin: Margin of the hinge (ignored with ``soft_margin``).
        soft_margin: Use the smooth ``softplus`` form instead of the hinge.
        name: Loss name.
    """

    def __init__(
        self,
        distance: str = "cosine",
        positive_mining: str = "hard",
        negative_mining: str = "semi-hard",
        margin: float = 1.0,
        soft_margin: bool = False,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        owner = type(self).__name__
        positive_mining = _take_alias(
            kwargs, "positive_mining_strategy", "positive_mining", positive_mining, "hard", owner
        )
        negative_mining = _take_alias(
            kwargs, "negative_mining_strategy", "negative_mining", negative_mining, "semi-hard", owner
        )
        super().__init__(distance=distance, name=name, **kwargs)
        self.positive_mining, self.negative_mining = _check_mining(positive_mining, negative_mining)
        self.margin = _check_positive("margin", margin, allow_zero=True)
        self.soft_margin = bool(soft_margin)

    def compute(self, labels: Any, embeddings: Any) -> Any:
        dist = pairwise_distances(embeddings, self.distance)
        pos, neg = _label_masks(labels)
        pos_idx, neg_idx = _mine(dist, pos, neg, self.positive_mining, self.negative_mining)
        d_ap, d_an = _take_rows(dist, pos_idx), _take_rows(dist, neg_idx)
        valid = _f(ops.logical_and(_any(pos), _any(neg)), dist.dtype)
        return _hinge_or_soft(d_ap - d_an, self.margin, self.soft_margin) * valid

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "positive_mining": self.positive_mining,
            "negative_mining": self.negative_mining,
            "margin": self.margin,
            "soft_margin": self.soft_margin,
        }


@_register
class PNLoss(TripletLoss):
    """Positive-negative triplet loss with anchor swap (Balntas et al., 2016).

    Like :class:`TripletLoss`, but the negative distance is the smaller of
    ``d(a, n)`` and ``d(p, n)``: the triplet is penalised by whichever of the
    anchor and the positive is closer to the negative. Same arguments as
    :class:`TripletLoss`.
    """

    def compute(self, labels: Any, embeddings: Any) -> Any:
        dist = pairwise_distances(embeddings, self.distance)
        pos, neg = _label_masks(labels)
        pos_idx, neg_idx = _mine(dist, pos, neg, self.positive_mining, self.negative_mining)
        d_ap, d_an = _take_rows(dist, pos_idx), _take_rows(dist, neg_idx)
        d_pn = _take_rows(ops.take(dist, pos_idx, axis=0), neg_idx)
        valid = _f(ops.logical_and(_any(pos), _any(neg)), dist.dtype)
        return _hinge_or_soft(d_ap - ops.minimum(d_an, d_pn), self.margin, self.soft_margin) * valid


# ----------------------------------------------------------------------------- pair-weighting losses
@_register
class MultiSimilarityLoss(MetricLoss):
    """Multi-similarity loss (Wang et al., CVPR 2019), written with distances.

    Pair mining keeps negatives with ``d(a,n) < max_p d(a,p) + epsilon`` and
    positives with ``d(a,p) > min_n d(a,n) - epsilon``. Then, per anchor::

        1/alpha * log(1 + sum_p exp( alpha * (d(a,p) - lmda)))
      + 1/beta  * log(1 + sum_n exp(-beta  * (d(a,n) - lmda)))

    With cosine distance (``d = 1 - s``) this is the paper's loss with
    similarity threshold ``1 - lmda``.

    Args:
        distance: Pairwise distance.
        alpha: Positive-pair scale (> 0).
        beta: Negative-pair scale (> 0).
        epsilon: Mining slack (>= 0).
        lmda: Distance threshold that separates the two terms.
        name: Loss name.
        base: PyTorch Metric Learning's threshold, given instead of ``lmda``: a
            similarity for ``"cosine"`` (``lmda = 1 - base``) and ``"ip"``
            (``lmda = -base``), a distance for the others (``lmda = base``).
    """

    def __init__(
        self,
        distance: str = "cosine",
        alpha: float = 2.0,
        beta: float = 40.0,
        epsilon: float = 0.1,
        lmda: float = 0.5,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        base = kwargs.pop("base", None)
        super().__init__(distance=distance, name=name, **kwargs)
        if base is not None:
            if lmda != 0.5:
                raise TypeError(f"MultiSimilarityLoss got both lmda={lmda!r} and base={base!r}")
            if isinstance(base, bool) or not isinstance(base, (int, float)) or not math.isfinite(base):
                raise ValueError(f"base must be a finite number, got {base!r}")
            # PML's base is a threshold on its matrix: a similarity for cosine / dot, a distance otherwise.
            lmda = {"cosine": 1.0 - base, "ip": -base}.get(self.distance, base)
        self.alpha = _check_positive("alpha", alpha)
        self.beta = _check_positive("beta", beta)
        self.epsilon = _check_positive("epsilon", epsilon, allow_zero=True)
        if isinstance(lmda, bool) or not isinstance(lmda, (int, float)) or not math.isfinite(lmda):
            raise ValueError(f"lmda must be a finite number, got {lmda!r}")
        self.lmda = float(lmda)

    def compute(self, labels: Any, embeddings: Any) -> Any:
        dist = pairwise_distances(embeddings, self.distance)
        pos, neg = _label_masks(labels)
        d = ops.stop_gradient(dist)
        hardest_pos = _masked_max(d, pos)
        hardest_neg = _masked_min(d, neg)
        neg_kept = ops.logical_and(neg, d < hardest_pos[:, None] + self.epsilon)
        pos_kept = ops.logical_and(pos, d > hardest_neg[:, None] - self.epsilon)
        pos_term = _log1p_sum_exp(self.alpha * (dist - self.lmda), pos_kept) / self.alpha
        neg_term = _log1p_sum_exp(-self.beta * (dist - self.lmda), neg_kept) / self.beta
        valid = _f(ops.logical_and(_any(pos), _any(neg)), dist.dtype)
        return (pos_term + neg_term) * valid

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "alpha": self.alpha,
            "beta": self.beta,
            "epsilon": self.epsilon,
            "lmda": self.lmda,
        }


@_register
class CircleLoss(MetricLoss):
    """Circle loss (Sun et al., CVPR 2020) on similarities ``s = 1 - d``.

    With cosine distance ``s`` is the cosine similarity. Per anchor::

        softplus( logsumexp_n(gamma * a_n * (s_n - m))
                + logsumexp_p(-gamma * a_p * (s_p - 1 + m)) )

    where ``a_p = relu(1 + m - s_p)`` and ``a_n = relu(s_n + m)`` are treated
    as constants.

    Args:
        distance: Pairwise distance (cosine recommended).
        gamma: Scale (> 0).
        margin: Relaxation margin ``m`` (>= 0); PyTorch Metric Learning's
            keyword ``m`` is accepted too.
        name: Loss name.
    """

    def __init__(
        self,
        distance: str = "cosine",
        gamma: float = 80.0,
        margin: float = 0.25,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        margin = _take_alias(kwargs, "m", "margin", margin, 0.25, "CircleLoss")
        super().__init__(distance=distance, name=name, **kwargs)
        self.gamma = _check_positive("gamma", gamma)
        self.margin = _check_positive("margin", margin, allow_zero=True)

    def compute(self, labels: Any, embeddings: Any) -> Any:
        sim = 1.0 - pairwise_distances(embeddings, self.distance)
        pos, neg = _label_masks(labels)
        m = self.margin
        s = ops.stop_gradient(sim)
        alpha_p = ops.relu(1.0 + m - s)
        alpha_n = ops.relu(s + m)
        logit_p = -self.gamma * alpha_p * (sim - (1.0 - m))
        logit_n = self.gamma * alpha_n * (sim - m)
        total = _masked_logsumexp(logit_n, neg) + _masked_logsumexp(logit_p, pos)
        valid = ops.logical_and(_any(pos), _any(neg))
        # Invalid rows hold ~-69 + something: replace before softplus so the result is exactly 0.
        return ops.softplus(ops.where(valid, total, ops.zeros_like(total))) * _f(valid, sim.dtype)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "gamma": self.gamma, "margin": self.margin}


@_register
class ContrastiveLoss(MetricLoss):
    """Contrastive loss (Hadsell, Chopra & LeCun, 2006) over all pairs.

    Per anchor: ``0.5 * (mean_p d(a,p)**2 + mean_n max(margin - d(a,n), 0)**2)``,
    each mean over the anchor's positives / negatives in the batch (an empty
    set contributes 0).

    Args:
        distance: Pairwise distance.
        margin: Negatives closer than this are pushed apart (> 0).
        name: Loss name.
    """

    def __init__(
        self, distance: str = "cosine", margin: float = 0.5, name: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(distance=distance, name=name, **kwargs)
        self.margin = _check_positive("margin", margin)

    def compute(self, labels: Any, embeddings: Any) -> Any:
        dist = pairwise_distances(embeddings, self.distance)
        pos, neg = _label_masks(labels)
        pf, nf = _f(pos, dist.dtype), _f(neg, dist.dtype)
        pos_term = ops.sum(pf * ops.square(dist), axis=1) / ops.maximum(ops.sum(pf, axis=1), 1.0)
        neg_term = ops.sum(nf * ops.square(ops.relu(self.margin - dist)), axis=1) / ops.maximum(
            ops.sum(nf, axis=1), 1.0
        )
        return 0.5 * (pos_term + neg_term)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "margin": self.margin}


@_register
class MultiClassNPairLoss(MetricLoss):
    """Multi-class N-pair loss (Sohn, NeurIPS 2016), generalised to labelled batches.

    With similarity ``s = -scale * d``, for every anchor ``a`` and each of its
    positives ``p``::

        log(1 + sum_n exp(s(a,n) - s(a,p)))

    averaged over the anchor's positives; the negatives ``n`` are all examples
    of other classes in the batch. ``distance="ip", scale=1`` is the paper's
    inner-product form; with unit embeddings and cosine distance a scale of
    about 10-30 trains well.

    Args:
        distance: Pairwise distance.
        scale: Multiplier of the similarities (> 0).
        name: Loss name.
    """

    def __init__(
        self, distance: str = "cosine", scale: float = 10.0, name: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(distance=distance, name=name, **kwargs)
        self.scale = _check_positive("scale", scale)

    def compute(self, labels: Any, embeddings: Any) -> Any:
        sim = -self.scale * pairwise_distances(embeddings, self.distance)
        pos, neg = _label_masks(labels)
        # log(1 + e^{-s_ap} * sum_n e^{s_an}) = softplus(logsumexp_n(s_an) - s_ap)
        lse_neg = _masked_logsumexp(sim, neg, axis=1)
        has_neg = _any(neg)
        lse_neg = ops.where(has_neg, lse_neg, ops.zeros_like(lse_neg))
        per_pair = ops.softplus(lse_neg[:, None] - sim)
        pf = _f(pos, sim.dtype)
        per_anchor = ops.sum(pf * per_pair, axis=1) / ops.maximum(ops.sum(pf, axis=1), 1.0)
        return per_anchor * _f(has_neg, sim.dtype)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "scale": self.scale}


@_register
class AngularLoss(keras.losses.Loss):
    """Angular loss (Wang et al., ICCV 2017) on the embeddings themselves.

    With ``t = tan(alpha)``:

    * ``form="triplet"``: per anchor ``a``, the hardest positive ``p`` (farthest)
      and the negative ``n`` closest to the centre ``c = (a + p) / 2`` give
      ``max(|a - p|**2 - 4 t**2 |n - c|**2, 0)``.
    * ``form="npair"``: per anchor and each positive,
      ``log(1 + sum_n exp(4 t**2 (a + p).n - 2 (1 + t**2) a.p))``, averaged over
      the positives. Memory is O(batch**3).

    The paper L2-normalises embeddings first (``MetricEmbedding`` does).

    Args:
        alpha: Angle bound in degrees, in (0, 90); the paper uses 36-55.
        form: ``"npair"`` or ``"triplet"``.
        name: Loss name.
    """

    def __init__(
        self, alpha: float = 45.0, form: str = "npair", name: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(name=name, **kwargs)
        alpha = _check_positive("alpha", alpha)
        if not alpha < 90.0:
            raise ValueError(f"alpha is an angle in degrees and must be in (0, 90), got {alpha}")
        if form not in ("npair", "triplet"):
            raise ValueError(f"form must be 'npair' or 'triplet', got {form!r}")
        self.alpha = alpha
        self.form = form

    def call(self, y_true: Any, y_pred: Any) -> Any:
        labels, x = _prepare(y_true, y_pred)
        pos, neg = _label_masks(labels)
        tan2 = math.tan(math.radians(self.alpha)) ** 2
        gram = ops.matmul(x, ops.transpose(x))
        valid = _f(ops.logical_and(_any(pos), _any(neg)), x.dtype)
        if self.form == "triplet":
            sqd = pairwise_distances(x, "sql2")
            pos_idx, _ = _mine(sqd, pos, neg, "hard", "hard")
            d_ap = _take_rows(sqd, pos_idx)
            centre = 0.5 * (x + ops.take(x, pos_idx, axis=0))
            sq = ops.sum(ops.square(x), axis=1)
            # |n - c|^2 for every anchor row (its centre) and candidate column n
            d_nc = ops.maximum(
                sq[None, :]
                - 2.0 * ops.matmul(centre, ops.transpose(x))
                + ops.sum(ops.square(centre), axis=1)[:, None],
                0.0,
            )
            d_nc_min = _masked_min(d_nc, neg)
            return ops.relu(d_ap - 4.0 * tan2 * d_nc_min) * valid
        # f[a, p, n] = 4 t^2 (G[a, n] + G[p, n]) - 2 (1 + t^2) G[a, p]
        f = 4.0 * tan2 * (gram[:, None, :] + gram[None, :, :]) - 2.0 * (1.0 + tan2) * gram[:, :, None]
        neg3 = ops.broadcast_to(neg[:, None, :], ops.shape(f))
        per_pair = _log1p_sum_exp(f, neg3, axis=2)
        pf = _f(pos, x.dtype)
        return ops.sum(pf * per_pair, axis=1) / ops.maximum(ops.sum(pf, axis=1), 1.0) * valid

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "alpha": self.alpha, "form": self.form}


# ----------------------------------------------------------------------------- margin (proxy) losses
@_register
class ClassCenters(keras.layers.Layer):
    """Trainable class centres ``(num_classes, embedding_dim)`` used by margin losses.

    Built at construction, so the variable exists before ``model.fit`` traces.
    ``call`` returns the L2-normalised centres.
    """

    def __init__(self, num_classes: int, embedding_dim: int, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for nm, v in (("num_classes", num_classes), ("embedding_dim", embedding_dim)):
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"{nm} must be an int, got {type(v).__name__}")
            if v <= 0:
                raise ValueError(f"{nm} must be positive, got {v}")
        self.num_classes = num_classes
        self.embedding_dim = embedding_dim
        self.seed = seed
        self.centers = self.add_weight(
            shape=(num_classes, embedding_dim),
            initializer=keras.initializers.GlorotUniform(seed=seed),
            trainable=True,
            name="centers",
        )
        self.built = True

    def call(self, inputs: Any = None) -> Any:
        return l2_normalize(self.centers, axis=1)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "embedding_dim": self.embedding_dim,
            "seed": self.seed,
        }


class _MarginSoftmaxLoss(keras.losses.Loss):
    """Shared code of ArcFace/CosFace: cosine logits against trainable centres."""

    def __init__(
        self,
        num_classes: int,
        embedding_dim: int | None,
        scale: float,
        margin: float,
        seed: int | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        embedding_dim = _take_alias(
            kwargs, "embedding_size", "embedding_dim", embedding_dim, None, type(self).__name__
        )
        if embedding_dim is None:
            raise TypeError(f"{type(self).__name__} needs embedding_dim (the size of the embeddings)")
        super().__init__(name=name, **kwargs)
        self.scale = _check_positive("scale", scale)
        self.margin = _check_positive("margin", margin, allow_zero=True)
        self.seed = seed
        self.centers = ClassCenters(num_classes, embedding_dim, seed=seed, name=f"{self.name}_centers")

    @property
    def num_classes(self) -> int:
        return self.centers.num_classes

    @property
    def embedding_dim(self) -> int:
        return self.centers.embedding_dim

    @property
    def trainable_layers(self) -> list[Any]:
        """Layers whose variables the model must train with this loss."""
        return [self.centers]

    def _target_logit(self, cos: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def call(self, y_true: Any, y_pred: Any) -> Any:
        labels, x = _prepare(y_true, y_pred)
        if x.shape[-1] is not None and x.shape[-1] != self.embedding_dim:
            raise ValueError(
                f"{type(self).__name__} expects embeddings of dim {self.embedding_dim}, got {x.shape[-1]}"
            )
        centres = ops.cast(l2_normalize(self.centers.centers, axis=1), x.dtype)
        cos = ops.clip(ops.matmul(l2_normalize(x, axis=1), ops.transpose(centres)), -1.0, 1.0)
        onehot = ops.one_hot(ops.cast(labels, "int32"), self.num_classes, dtype=x.dtype)
        logits = self.scale * (onehot * self._target_logit(cos) + (1.0 - onehot) * cos)
        return -ops.sum(onehot * ops.log_softmax(logits, axis=1), axis=1)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "embedding_dim": self.embedding_dim,
            "scale": self.scale,
            "margin": self.margin,
            "seed": self.seed,
        }


@_register
class ArcFaceLoss(_MarginSoftmaxLoss):
    """Additive angular margin softmax (Deng et al., ArcFace, CVPR 2019).

    Logits are ``scale * cos(theta_j)`` against L2-normalised trainable class
    centres, with the true class's logit replaced by ``scale * cos(theta_y + m)``
    (by ``cos(theta_y) - m * sin(m)`` once ``theta_y + m > pi``, which keeps it
    monotonic). Labels must be integers in ``[0, num_classes)``.

    The centres live in ``self.centers`` (a :class:`ClassCenters` layer);
    :meth:`simdex.SimilarityModel.compile` adds them to the trained variables.
    They are training state of the loss and are not saved with the model.

    Args:
        num_classes: Number of classes.
        embedding_dim: Size of the embeddings (``embedding_size``, TF Similarity's
            and PyTorch Metric Learning's name, is accepted too).
        scale: Logit scale ``s`` (> 0).
        margin: Angular margin ``m`` in **radians**, in ``[0, pi]`` (TF Similarity's
            unit; PyTorch Metric Learning's ``margin=28.6`` degrees is
            ``math.radians(28.6) ~= 0.5``). A value above pi raises
            ``ValueError`` naming degrees vs radians.
        seed: Seed of the centres' initializer.
        name: Loss name.
    """

    def __init__(
        self,
        num_classes: int,
        embedding_dim: int | None = None,
        scale: float = 30.0,
        margin: float = 0.5,
        seed: int | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        check_angle_radians("ArcFaceLoss margin", margin)
        super().__init__(num_classes, embedding_dim, scale, margin, seed=seed, name=name, **kwargs)

    def _target_logit(self, cos: Any) -> Any:
        m = self.margin
        sin = ops.sqrt(ops.maximum(1.0 - ops.square(cos), 1e-7))
        shifted = cos * math.cos(m) - sin * math.sin(m)
        return ops.where(cos > math.cos(math.pi - m), shifted, cos - m * math.sin(m))


@_register
class CosFaceLoss(_MarginSoftmaxLoss):
    """Large margin cosine loss (Wang et al., CosFace, CVPR 2018).

    Like :class:`ArcFaceLoss` but the true class's logit is
    ``scale * (cos(theta_y) - m)``. Same arguments (default ``margin=0.35``).
    """

    def __init__(
        self,
        num_classes: int,
        embedding_dim: int | None = None,
        scale: float = 30.0,
        margin: float = 0.35,
        seed: int | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_classes, embedding_dim, scale, margin, seed=seed, name=name, **kwargs)

    def _target_logit(self, cos: Any) -> Any:
        return cos - self.margin


# ----------------------------------------------------------------------------- PML-style losses
# Composable losses (miners, reducers, distance objects) live in simdex.losses_pml; their
# names are part of this module too (simdex.losses.ProxyAnchorLoss...).
from simdex.learn.losses_pml import (  # noqa: E402
    ComposableLoss,
    GeneralizedLiftedStructureLoss,
    LiftedStructureLoss,
    NPairAngularLoss,
    NPairLoss,
    ProxyAnchorLoss,
    ProxyNCALoss,
    SoftTripleLoss,
    SphereFaceLoss,
    SupConLoss,
    TripletMarginLoss,
)

#: TF Similarity's name of the lifted structure loss.
LiftedStructLoss = LiftedStructureLoss

# ----------------------------------------------------------------------------- lookup
_BY_NAME: dict[str, type[keras.losses.Loss]] = {
    "triplet": TripletLoss,
    "pn": PNLoss,
    "multi_similarity": MultiSimilarityLoss,
    "circle": CircleLoss,
    "contrastive": ContrastiveLoss,
    "npair": MultiClassNPairLoss,
    "multiclass_npair": MultiClassNPairLoss,
    "angular": AngularLoss,
    "arcface": ArcFaceLoss,
    "cosface": CosFaceLoss,
    "triplet_margin": TripletMarginLoss,
    "supcon": SupConLoss,
    "lifted_structure": LiftedStructureLoss,
    "generalized_lifted_structure": GeneralizedLiftedStructureLoss,
    "npair_pairs": NPairLoss,
    "npair_angular": NPairAngularLoss,
    "proxy_anchor": ProxyAnchorLoss,
    "proxy_nca": ProxyNCALoss,
    "soft_triple": SoftTripleLoss,
    "sphereface": SphereFaceLoss,
}
for _cls in set(_BY_NAME.values()):
    _BY_NAME[_cls.__name__.lower()] = _cls


def get(identifier: str | dict[str, Any] | keras.losses.Loss) -> keras.losses.Loss:
    """Return a loss from a name (``"triplet"``, ``"circle"``, class name...),
    a ``{"class_name": ..., "config": {...}}`` dict, or an instance (returned as is).

    Raises:
        ValueError: unknown name.
        TypeError: anything else.
    """
    if isinstance(identifier, keras.losses.Loss):
        return identifier
    if isinstance(identifier, str):
        cls = _BY_NAME.get(identifier.lower().replace("-", "_"))
        if cls is None:
            raise ValueError(f"unknown loss {identifier!r}; known: {sorted(_BY_NAME)}")
        return cls()
    if isinstance(identifier, dict):
        name = str(identifier.get("class_name", "")).lower()
        cls = _BY_NAME.get(name)
        if cls is None:
            raise ValueError(f"unknown loss class {identifier.get('class_name')!r}")
        return cls.from_config(dict(identifier.get("config", {})))
    raise TypeError(f"cannot interpret {type(identifier).__name__} as a loss")


__all__ = [
    "DISTANCES",
    "AngularLoss",
    "ArcFaceLoss",
    "CircleLoss",
    "ClassCenters",
    "ComposableLoss",
    "ContrastiveLoss",
    "CosFaceLoss",
    "GeneralizedLiftedStructureLoss",
    "LiftedStructLoss",
    "LiftedStructureLoss",
    "MetricLoss",
    "MultiClassNPairLoss",
    "MultiSimilarityLoss",
    "NPairAngularLoss",
    "NPairLoss",
    "PNLoss",
    "ProxyAnchorLoss",
    "ProxyNCALoss",
    "SoftTripleLoss",
    "SphereFaceLoss",
    "SupConLoss",
    "TripletLoss",
    "TripletMarginLoss",
    "check_angle_radians",
    "get",
    "pairwise_distances",
]
