"""More metric-learning losses, composable with miners, reducers, distances and regularizers.

These follow PyTorch Metric Learning 2.9 (same formulas, defaults and
reductions; ``tests/test_pml_reference.py`` checks values and gradients
against it) and are ``keras.losses.Loss`` objects called as
``loss(labels, embeddings)`` like those of :mod:`simdex.losses`:

* pair / triplet losses: :class:`TripletMarginLoss`, :class:`SupConLoss`,
  :class:`LiftedStructureLoss`, :class:`GeneralizedLiftedStructureLoss`,
  :class:`NPairLoss` (Sohn's N-pair form: one pair per class) and
  :class:`NPairAngularLoss` (N-pair + lambda * angular, Wang et al. 2017);
* proxy / classifier losses with trainable state: :class:`ProxyAnchorLoss`,
  :class:`ProxyNCALoss`, :class:`SoftTripleLoss`, :class:`SphereFaceLoss`.
  Their variables live in ``loss.centers`` (a :class:`ProxyCenters` layer);
  :meth:`simdex.SimilarityModel.compile` adds them to the trained variables.

Keras reduces a loss's per-example output by its mean; losses here compute
the value PyTorch Metric Learning's reducer gives and return it for every
example, so Keras' mean is that value (with the same gradient).

Arguments named ``distance`` take a :mod:`simdex.distances` object or name,
``miner`` a :mod:`simdex.miners` object, ``reducer`` a :mod:`simdex.reducers`
object, ``embedding_regularizer`` a :mod:`simdex.regularizers` object.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from simdex._optional import import_keras
from simdex.learn import distances as _distances
from simdex.learn import miners as _miners
from simdex.learn import reducers as _reducers
from simdex.learn import regularizers as _regularizers
from simdex.learn.layers import l2_normalize

if TYPE_CHECKING:  # the real module, for type checkers; at run time with an install hint
    import keras
else:
    keras = import_keras()
ops = keras.ops

__all__ = [
    "ComposableLoss",
    "GeneralizedLiftedStructureLoss",
    "LiftedStructureLoss",
    "NPairAngularLoss",
    "NPairLoss",
    "ProxyAnchorLoss",
    "ProxyCenters",
    "ProxyNCALoss",
    "SoftTripleLoss",
    "SphereFaceLoss",
    "SupConLoss",
    "TripletMarginLoss",
]

_NEG_INF = -1e30
_register = keras.saving.register_keras_serializable(package="simdex")


def _number(name: str, value: Any, minimum: float | None = None, strict: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value}")
    if minimum is not None and (v <= minimum if strict else v < minimum):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {minimum}, got {value}")
    return v


def _logsumexp(x: Any, mask: Any, axis: int = -1, add_one: bool = False) -> Any:
    """``log(sum(exp(x[mask])))`` (``+1`` inside with ``add_one``); an empty mask gives 0."""
    mask = ops.cast(mask, "bool")
    xm = ops.where(mask, x, ops.full_like(x, _NEG_INF))
    m = ops.stop_gradient(ops.max(xm, axis=axis, keepdims=True))
    if add_one:  # the "1" is exp(0): include 0 in the stabilising max
        m = ops.maximum(m, 0.0)
    total = ops.sum(ops.exp(xm - m), axis=axis)
    if add_one:
        total = total + ops.exp(-ops.squeeze(m, axis=axis))
    out = ops.squeeze(m, axis=axis) + ops.log(total)
    return ops.where(ops.any(mask, axis=axis), out, ops.zeros_like(out))


def _broadcast(value: Any, n_like: Any) -> Any:
    """The scalar ``value`` once per example: Keras' mean over the batch gives ``value`` back."""
    return ops.ones_like(n_like[:, 0]) * value


def _labels(y_true: Any, y_pred: Any) -> Any:
    if len(y_pred.shape) != 2:
        raise ValueError(f"y_pred must be embeddings of shape (batch, dim), got shape {tuple(y_pred.shape)}")
    labels = ops.reshape(y_true, (-1,))
    if labels.shape[0] is not None and y_pred.shape[0] is not None and labels.shape[0] != y_pred.shape[0]:
        raise ValueError(f"y_true has {labels.shape[0]} labels but y_pred has {y_pred.shape[0]} embeddings")
    return labels


@_register
class ComposableLoss(keras.losses.Loss):
    """Base class: a distance, optional miner, reducer and embedding regularizer.

    Subclasses implement ``compute(labels, embeddings) -> scalar``.
    """

    default_distance: type = _distances.LpDistance
    default_reducer: type = _reducers.MeanReducer

    def __init__(
        self,
        distance: Any = None,
        miner: Any = None,
        reducer: Any = None,
        embedding_regularizer: Any = None,
        embedding_reg_weight: float = 1.0,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(name=name, **kwargs)
        # each also accepts its simdex.distances.serialize() dict (what get_config stores)
        self.distance = _distances.get(distance, self.default_distance)
        miner = _miners.get(miner)
        if miner is not None and not callable(miner):
            raise TypeError(f"miner must be a simdex.miners object, got {type(miner).__name__}")
        self.miner = miner
        self.reducer = _reducers.get(reducer, self.default_reducer)
        if isinstance(embedding_regularizer, dict):
            embedding_regularizer = _regularizers.get(embedding_regularizer)
        if embedding_regularizer is not None and not callable(embedding_regularizer):
            raise TypeError("embedding_regularizer must be a simdex.regularizers object")
        self.embedding_regularizer = embedding_regularizer
        self.embedding_reg_weight = _number("embedding_reg_weight", embedding_reg_weight, 0.0)

    def get_config(self) -> dict[str, Any]:
        ser = _distances.serialize
        return {
            **super().get_config(),
            "distance": ser(self.distance),
            "miner": ser(self.miner),
            "reducer": ser(self.reducer),
            "embedding_regularizer": ser(self.embedding_regularizer),
            "embedding_reg_weight": self.embedding_reg_weight,
        }

    def call(self, y_true: Any, y_pred: Any) -> Any:
        labels = _labels(y_true, y_pred)
        value = self.compute(labels, y_pred)
        if self.embedding_regularizer is not None:
            value = value + self.embedding_reg_weight * self.embedding_regularizer(y_pred)
        return _broadcast(value, y_pred)

    def compute(self, labels: Any, embeddings: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _mined(self, labels: Any, embeddings: Any) -> Any:
        return None if self.miner is None else self.miner(ops.stop_gradient(embeddings), labels)


@_register
class TripletMarginLoss(ComposableLoss):
    """Triplet margin loss over mined triplets: ``max(d(a,p) - d(a,n) + margin, 0)``.

    Without a miner every valid triplet of the batch is used. The default
    reducer averages over triplets with a positive loss (PyTorch Metric
    Learning's ``AvgNonZeroReducer``).

    Args:
        margin: The margin (>= 0).
        swap: Use ``min(d(a,n), d(p,n))`` as the negative distance.
        smooth_loss: ``softplus`` instead of the hinge.
        distance, miner, reducer, embedding_regularizer, embedding_reg_weight:
            See the module docstring (default distance: euclidean on
            L2-normalised embeddings).
    """

    default_reducer = _reducers.AvgNonZeroReducer

    def __init__(
        self, margin: float = 0.05, swap: bool = False, smooth_loss: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.margin = _number("margin", margin, 0.0)
        self.swap = bool(swap)
        self.smooth_loss = bool(smooth_loss)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "margin": self.margin,
            "swap": self.swap,
            "smooth_loss": self.smooth_loss,
        }

    def compute(self, labels: Any, embeddings: Any) -> Any:
        mat = self.distance(embeddings)
        mined = self._mined(labels, embeddings)
        t = _miners.all_triplets(labels) if mined is None else _miners.to_triplets(mined)
        d_ap = mat[:, :, None]
        d_an = mat[:, None, :]
        if self.swap:
            d_pn = mat[None, :, :]
            d_an = ops.maximum(d_an, d_pn) if self.distance.is_inverted else ops.minimum(d_an, d_pn)
        violation = self.distance.margin(d_ap, d_an) + self.margin
        per = ops.softplus(violation) if self.smooth_loss else ops.relu(violation)
        return self.reducer(per, t)


@_register
class SupConLoss(ComposableLoss):
    """Supervised contrastive loss (Khosla et al., NeurIPS 2020).

    Per anchor: ``-mean_p log(exp(s_ap / T) / sum_{j != a} exp(s_aj / T))``
    with ``s`` the cosine similarity; anchors without a positive give 0 and
    the default reducer averages over the non-zero ones. A pair miner
    restricts the positives and the denominator to the mined pairs.

    Args:
        temperature: ``T`` (> 0).
    """

    default_distance = _distances.CosineSimilarity
    default_reducer = _reducers.AvgNonZeroReducer

    def __init__(self, temperature: float = 0.1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.temperature = _number("temperature", temperature, 0.0, strict=True)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "temperature": self.temperature}

    def compute(self, labels: Any, embeddings: Any) -> Any:
        mat = self.distance(embeddings)
        if not self.distance.is_inverted:
            mat = -mat
        mined = self._mined(labels, embeddings)
        pos, neg = _distances.label_masks(labels) if mined is None else _miners.to_pairs(mined)
        mat = mat / self.temperature
        mat = mat - ops.stop_gradient(ops.max(mat, axis=1, keepdims=True))
        denom = _logsumexp(mat, ops.logical_or(pos, neg), axis=1)
        pf = ops.cast(pos, mat.dtype)
        per = -ops.sum(pf * (mat - denom[:, None]), axis=1) / (ops.sum(pf, axis=1) + 1e-30)
        has_both = ops.logical_and(ops.any(pos), ops.any(neg))
        return ops.where(has_both, self.reducer(per), ops.zeros_like(ops.sum(per)))


@_register
class LiftedStructureLoss(ComposableLoss):
    """Lifted structured loss (Oh Song et al., CVPR 2016), per positive pair.

    For each positive pair ``(a, p)`` (both orders):
    ``relu(log(sum_n exp(neg_margin - d(a|p, n))) + d(a, p) - pos_margin)**2 / 2``,
    the sum over the negatives of both ``a`` and ``p``; averaged over pairs.

    Args:
        neg_margin: Margin of the negatives.
        pos_margin: Margin of the positives.
    """

    def __init__(self, neg_margin: float = 1.0, pos_margin: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.neg_margin = _number("neg_margin", neg_margin)
        self.pos_margin = _number("pos_margin", pos_margin)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "neg_margin": self.neg_margin, "pos_margin": self.pos_margin}

    def compute(self, labels: Any, embeddings: Any) -> Any:
        mat = self.distance(embeddings)
        mined = self._mined(labels, embeddings)
        pos, neg = _distances.label_masks(labels) if mined is None else _miners.to_pairs(mined)
        rem_neg = self.distance.margin(self.neg_margin, mat)  # (n, n): row = the pair end, col = negative
        # for pair (a, p): negatives of a (row a) and of p (row p), each a term of one logsumexp
        both = ops.concatenate(
            [
                ops.broadcast_to(rem_neg[:, None, :], (*ops.shape(mat), ops.shape(mat)[1])),
                ops.broadcast_to(rem_neg[None, :, :], (*ops.shape(mat), ops.shape(mat)[1])),
            ],
            axis=2,
        )
        both_mask = ops.concatenate(
            [
                ops.broadcast_to(neg[:, None, :], (*ops.shape(mat), ops.shape(mat)[1])),
                ops.broadcast_to(neg[None, :, :], (*ops.shape(mat), ops.shape(mat)[1])),
            ],
            axis=2,
        )
        neg_term = _logsumexp(both, both_mask, axis=2)
        per = ops.square(ops.relu(neg_term + self.distance.margin(mat, self.pos_margin))) / 2.0
        has_neg = ops.any(neg)
        return ops.where(has_neg, self.reducer(per, pos), ops.zeros_like(ops.sum(per)))


@_register
class GeneralizedLiftedStructureLoss(ComposableLoss):
    """Generalised lifted structure loss (Hermans et al., 2017), per anchor.

    ``relu(log(sum_p exp(d(a,p) - pos_margin)) + log(sum_n exp(neg_margin - d(a,n))))``,
    averaged over anchors (an empty set contributes 0 to its term).
    """

    def __init__(self, neg_margin: float = 1.0, pos_margin: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.neg_margin = _number("neg_margin", neg_margin)
        self.pos_margin = _number("pos_margin", pos_margin)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "neg_margin": self.neg_margin, "pos_margin": self.pos_margin}

    def compute(self, labels: Any, embeddings: Any) -> Any:
        mat = self.distance(embeddings)
        mined = self._mined(labels, embeddings)
        pos, neg = _distances.label_masks(labels) if mined is None else _miners.to_pairs(mined)
        pos_term = _logsumexp(self.distance.margin(mat, self.pos_margin), pos, axis=1)
        neg_term = _logsumexp(self.distance.margin(self.neg_margin, mat), neg, axis=1)
        return self.reducer(ops.relu(pos_term + neg_term))


def _first_two_of_class(labels: Any) -> tuple[Any, Any]:
    """Boolean ``(n,)`` masks: the first example of each class, and the second one."""
    n = ops.shape(labels)[0]
    idx = ops.arange(n)
    same = ops.equal(labels[:, None], labels[None, :])
    earlier = ops.logical_and(same, idx[None, :] < idx[:, None])  # [i, j]: j < i, same class
    count_before = ops.sum(ops.cast(earlier, "int32"), axis=1)
    return ops.equal(count_before, 0), ops.equal(count_before, 1)


@_register
class NPairLoss(ComposableLoss):
    """Multi-class N-pair loss in Sohn's (NeurIPS 2016) form: one pair per class.

    The first two examples of each class in the batch form its pair
    ``(a_c, p_c)``; classes with one example take no part. With similarity
    ``s`` (dot product by default), per pair:
    ``log(1 + sum_{c' != c} exp(s(a_c, p_c') - s(a_c, p_c)))`` (softmax
    cross-entropy of anchor ``a_c`` over the positives), averaged over pairs.
    Build batches with two examples per class
    (``MultiShotMemorySampler(..., examples_per_class_per_batch=2)``).
    :class:`simdex.losses.MultiClassNPairLoss` is the generalised variant that
    uses every positive and every negative of a labelled batch.

    Args:
        distance: Default :class:`~simdex.distances.DotProductSimilarity` on
            L2-normalised embeddings (as PyTorch Metric Learning's
            ``NPairsLoss``); the paper uses raw dot products
            (``DotProductSimilarity(normalize_embeddings=False)``) with an
            ``LpRegularizer``.
    """

    default_distance = _distances.DotProductSimilarity

    def __init__(self, **kwargs: Any) -> None:
        if "miner" in kwargs and kwargs["miner"] is not None:
            raise TypeError("NPairLoss chooses its own pairs (one per class); it takes no miner")
        super().__init__(**kwargs)

    def _pair_logits(self, labels: Any, embeddings: Any) -> tuple[Any, Any, Any, Any]:
        first, second = _first_two_of_class(labels)
        sim = self.distance(embeddings)
        if not self.distance.is_inverted:
            sim = -sim
        same = ops.equal(labels[:, None], labels[None, :])
        # rows: anchors (first of a class that has a second); columns: the second examples
        has_pair = ops.any(ops.logical_and(same, second[None, :]), axis=1)
        anchor = ops.logical_and(first, has_pair)
        target = ops.logical_and(same, second[None, :])  # [a, p]: p is a's positive
        return sim, anchor, second, target

    def npair_per_anchor(self, labels: Any, embeddings: Any) -> tuple[Any, Any]:
        sim, anchor, second, target = self._pair_logits(labels, embeddings)
        cols = ops.broadcast_to(second[None, :], ops.shape(sim))
        lse = _logsumexp(sim, cols, axis=1)
        s_ap = ops.sum(ops.where(target, sim, ops.zeros_like(sim)), axis=1)
        return lse - s_ap, anchor

    def compute(self, labels: Any, embeddings: Any) -> Any:
        per, anchor = self.npair_per_anchor(labels, embeddings)
        return self.reducer(per, anchor)


@_register
class NPairAngularLoss(NPairLoss):
    """N-pair loss plus ``lambda_`` times the angular loss on the same pairs (Wang et al., ICCV 2017).

    The angular term, per pair ``(a, p)``:
    ``log(1 + sum_n exp(4 tan(alpha)^2 (a + p).n - 2 (1 + tan(alpha)^2) a.p))``
    over the negatives ``n`` of the pair's class, on L2-normalised
    embeddings; the N-pair term is :class:`NPairLoss`'s. The paper uses
    ``lambda_ = 2`` and ``alpha`` of 36-55 degrees.

    Args:
        alpha: Angle in **degrees**, in (0, 90) (PyTorch Metric Learning's unit).
        lambda_: Weight of the angular term (>= 0).
    """

    def __init__(self, alpha: float = 40.0, lambda_: float = 2.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        alpha = _number("alpha", alpha, 0.0, strict=True)
        if not alpha < 90.0:
            raise ValueError(
                f"alpha is an angle in degrees and must be in (0, 90), got {alpha}"
                + (" (it looks like radians: use math.degrees)" if alpha < 1.6 else "")
            )
        self.alpha = alpha
        self.lambda_ = _number("lambda_", lambda_, 0.0)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "alpha": self.alpha, "lambda_": self.lambda_}

    def compute(self, labels: Any, embeddings: Any) -> Any:
        per_npair, anchor = self.npair_per_anchor(labels, embeddings)
        x = l2_normalize(embeddings, axis=1)
        first, second = _first_two_of_class(labels)
        same = ops.equal(labels[:, None], labels[None, :])
        target = ops.cast(ops.logical_and(same, second[None, :]), x.dtype)
        p = ops.matmul(target, x)  # each anchor row gets its positive (zeros elsewhere)
        tan2 = math.tan(math.radians(self.alpha)) ** 2
        f = 4.0 * tan2 * ops.matmul(x + p, ops.transpose(x)) - 2.0 * (1.0 + tan2) * ops.sum(
            x * p, axis=1, keepdims=True
        )
        per_ang = _logsumexp(f, ops.logical_not(same), axis=1, add_one=True)
        return self.reducer(per_npair, anchor) + self.lambda_ * self.reducer(per_ang, anchor)


# ----------------------------------------------------------------------------- proxy / classifier losses
@keras.saving.register_keras_serializable(package="simdex")
class ProxyCenters(keras.layers.Layer):
    """Trainable proxies / class weights ``(rows, embedding_dim)`` of a proxy loss (raw, not normalised).

    Built at construction, so the variable exists before ``model.fit`` traces.
    """

    def __init__(self, rows: int, embedding_dim: int, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for nm, v in (("rows", rows), ("embedding_dim", embedding_dim)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"{nm} must be an int, got {type(v).__name__}")
            if v <= 0:
                raise ValueError(f"{nm} must be positive, got {v}")
        self.rows = int(rows)
        self.embedding_dim = int(embedding_dim)
        self.seed = seed
        self.centers = self.add_weight(
            shape=(self.rows, self.embedding_dim),
            initializer=keras.initializers.GlorotUniform(seed=seed),
            trainable=True,
            name="centers",
        )
        self.built = True

    def call(self, inputs: Any = None) -> Any:
        return self.centers

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "rows": self.rows,
            "embedding_dim": self.embedding_dim,
            "seed": self.seed,
        }


class _ProxyLoss(keras.losses.Loss):
    """Shared code: trainable class centres in ``self.centers`` (raw, not normalised)."""

    def __init__(
        self,
        num_classes: int,
        embedding_dim: int | None = None,
        num_centers: int | None = None,
        seed: int | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        if "embedding_size" in kwargs:
            size = kwargs.pop("embedding_size")
            if embedding_dim is not None and embedding_dim != size:
                raise TypeError(f"got embedding_dim={embedding_dim} and embedding_size={size}")
            embedding_dim = size
        if embedding_dim is None:
            raise TypeError(f"{type(self).__name__} needs embedding_dim (the size of the embeddings)")
        super().__init__(name=name, **kwargs)
        self._num_classes = int(num_classes)
        self.seed = seed
        rows = num_classes if num_centers is None else num_centers
        self.centers = ProxyCenters(rows, embedding_dim, seed=seed, name=f"{self.name}_centers")

    @property
    def num_classes(self) -> int:
        return self._num_classes

    @property
    def embedding_dim(self) -> int:
        return self.centers.embedding_dim

    @property
    def trainable_layers(self) -> list[Any]:
        """Layers whose variables the model must train with this loss."""
        return [self.centers]

    def get_config(self) -> dict[str, Any]:
        """Hyper-parameters (the centres themselves are training state, not configuration)."""
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "embedding_dim": self.embedding_dim,
            "seed": self.seed,
        }

    def set_centers(self, values: Any) -> None:
        """Set the centres (``(rows, embedding_dim)``), e.g. to start from another run's."""
        self.centers.centers.assign(np.asarray(values, dtype=self.centers.centers.dtype))

    def call(self, y_true: Any, y_pred: Any) -> Any:
        labels = _labels(y_true, y_pred)
        if y_pred.shape[-1] is not None and y_pred.shape[-1] != self.embedding_dim:
            raise ValueError(
                f"{type(self).__name__} expects embeddings of dim {self.embedding_dim}, "
                f"got {y_pred.shape[-1]}"
            )
        centers = ops.cast(self.centers.centers, y_pred.dtype)
        return _broadcast(self.compute(ops.cast(labels, "int32"), y_pred, centers), y_pred)

    def compute(self, labels: Any, x: Any, centers: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError


@_register
class ProxyAnchorLoss(_ProxyLoss):
    """Proxy-Anchor loss (Kim et al., CVPR 2020) with cosine similarity to trainable proxies.

    ``1/|P+| sum_{c in P+} log(1 + sum_{x in class c} exp(-alpha (s(x, c) - margin)))
    + 1/C sum_c log(1 + sum_{x not in c} exp(alpha (s(x, c) + margin)))``,
    ``P+`` the classes present in the batch.

    Args:
        num_classes: Number of classes (labels in ``[0, num_classes)``).
        embedding_dim: Embedding size (``embedding_size`` accepted).
        margin: ``delta`` (>= 0).
        alpha: Scale (> 0).
        seed: Seed of the proxies' initializer.
    """

    def __init__(
        self,
        num_classes: int,
        embedding_dim: int | None = None,
        margin: float = 0.1,
        alpha: float = 32.0,
        seed: int | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_classes, embedding_dim, seed=seed, name=name, **kwargs)
        self.margin = _number("margin", margin, 0.0)
        self.alpha = _number("alpha", alpha, 0.0, strict=True)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "margin": self.margin, "alpha": self.alpha}

    def compute(self, labels: Any, x: Any, centers: Any) -> Any:
        cos = ops.matmul(l2_normalize(x, axis=1), ops.transpose(l2_normalize(centers, axis=1)))
        onehot = ops.cast(ops.one_hot(labels, self.num_classes), "bool")
        pos_term = _logsumexp(self.alpha * (self.margin - cos), onehot, axis=0, add_one=True)
        neg_term = _logsumexp(self.alpha * (cos + self.margin), ops.logical_not(onehot), axis=0, add_one=True)
        present = ops.sum(ops.cast(ops.any(onehot, axis=0), x.dtype))
        return ops.sum(pos_term) / ops.maximum(present, 1.0) + ops.sum(neg_term) / self.num_classes


@_register
class ProxyNCALoss(_ProxyLoss):
    """Proxy-NCA loss (Movshovitz-Attias et al., ICCV 2017).

    ``-log softmax_c(-softmax_scale * d(x, c)**2)[y]`` with squared euclidean
    distances between L2-normalised embeddings and proxies, averaged over
    the batch.

    Args:
        num_classes, embedding_dim, seed: As :class:`ProxyAnchorLoss`.
        softmax_scale: Scale of the logits (> 0).
    """

    def __init__(
        self,
        num_classes: int,
        embedding_dim: int | None = None,
        softmax_scale: float = 1.0,
        seed: int | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_classes, embedding_dim, seed=seed, name=name, **kwargs)
        self.softmax_scale = _number("softmax_scale", softmax_scale, 0.0, strict=True)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "softmax_scale": self.softmax_scale}

    def compute(self, labels: Any, x: Any, centers: Any) -> Any:
        d2 = _distances.LpDistance(power=2)(x, centers)
        logp = ops.log_softmax(-self.softmax_scale * d2, axis=1)
        onehot = ops.one_hot(labels, self.num_classes, dtype=x.dtype)
        return ops.mean(-ops.sum(onehot * logp, axis=1))


@_register
class SoftTripleLoss(_ProxyLoss):
    """SoftTriple loss (Qian et al., ICCV 2019): several centres per class.

    The similarity to class ``c`` is ``sum_k softmax_k(s_ck / gamma) s_ck`` over
    its ``centers_per_class`` centres (cosine ``s``); the loss is the softmax
    cross-entropy of ``la * (sim - margin * onehot)``, averaged.

    Args:
        num_classes, embedding_dim, seed: As :class:`ProxyAnchorLoss`.
        centers_per_class: Centres per class.
        la: ``lambda``, the logit scale.
        gamma: Temperature of the soft assignment to centres (> 0).
        margin: ``delta``, the margin of the true class.
    """

    def __init__(
        self,
        num_classes: int,
        embedding_dim: int | None = None,
        centers_per_class: int = 10,
        la: float = 20.0,
        gamma: float = 0.1,
        margin: float = 0.01,
        seed: int | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        if (
            isinstance(centers_per_class, bool)
            or not isinstance(centers_per_class, int)
            or centers_per_class < 1
        ):
            raise ValueError(f"centers_per_class must be an int >= 1, got {centers_per_class!r}")
        super().__init__(
            num_classes,
            embedding_dim,
            num_centers=num_classes * centers_per_class,
            seed=seed,
            name=name,
            **kwargs,
        )
        self.centers_per_class = centers_per_class
        self.la = _number("la", la, 0.0, strict=True)
        self.gamma = _number("gamma", gamma, 0.0, strict=True)
        self.margin = _number("margin", margin, 0.0)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "centers_per_class": self.centers_per_class,
            "la": self.la,
            "gamma": self.gamma,
            "margin": self.margin,
        }

    def compute(self, labels: Any, x: Any, centers: Any) -> Any:
        s = ops.matmul(l2_normalize(x, axis=1), ops.transpose(l2_normalize(centers, axis=1)))
        s = ops.reshape(s, (-1, self.num_classes, self.centers_per_class))
        prob = ops.softmax(s / self.gamma, axis=2)
        sim = ops.sum(prob * s, axis=2)
        onehot = ops.one_hot(labels, self.num_classes, dtype=x.dtype)
        logp = ops.log_softmax(self.la * (sim - self.margin * onehot), axis=1)
        return ops.mean(-ops.sum(onehot * logp, axis=1))


@_register
class SphereFaceLoss(_ProxyLoss):
    """SphereFace / A-Softmax (Liu et al., CVPR 2017): multiplicative angular margin.

    The true class's cosine ``cos(theta)`` becomes ``(-1)^k cos(m theta) - 2k``
    with ``k = floor(theta m / pi)`` (monotonic in ``theta``); logits are
    scaled by the embedding's norm and ``scale``; softmax cross-entropy,
    averaged.

    Args:
        num_classes, embedding_dim, seed: As :class:`ProxyAnchorLoss`.
        margin: ``m``, an integer >= 1 (a multiplier of the angle, not an angle).
        scale: Extra logit scale (> 0).
    """

    def __init__(
        self,
        num_classes: int,
        embedding_dim: int | None = None,
        margin: int = 4,
        scale: float = 1.0,
        seed: int | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        if (
            isinstance(margin, bool)
            or not isinstance(margin, (int, np.integer, float))
            or margin != int(margin)
        ):
            raise ValueError(
                f"SphereFace's margin m multiplies the angle and must be an integer >= 1, got {margin!r}"
            )
        if not 1 <= int(margin) <= 10:
            raise ValueError(f"SphereFace's margin m must be an integer in [1, 10], got {margin!r}")
        super().__init__(num_classes, embedding_dim, seed=seed, name=name, **kwargs)
        self.margin = int(margin)
        self.scale = _number("scale", scale, 0.0, strict=True)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "margin": self.margin, "scale": self.scale}

    def _cos_m_theta(self, c: Any) -> Any:
        # cos(m theta) = sum_n (-1)^n C(m, 2n) cos^(m-2n) sin^(2n): a polynomial in cos, smooth in c
        m = self.margin
        sin2 = 1.0 - ops.square(c)
        out = ops.zeros_like(c)
        for n in range(m // 2 + 1):
            out = out + ((-1) ** n) * math.comb(m, 2 * n) * c ** (m - 2 * n) * sin2**n
        return out

    def compute(self, labels: Any, x: Any, centers: Any) -> Any:
        cos = ops.matmul(l2_normalize(x, axis=1), ops.transpose(l2_normalize(centers, axis=1)))
        onehot = ops.one_hot(labels, self.num_classes, dtype=x.dtype)
        c_t = ops.sum(onehot * cos, axis=1)
        theta = ops.stop_gradient(ops.arccos(ops.clip(c_t, -1.0, 1.0)))
        k = ops.floor(theta / (math.pi / self.margin))
        sign = 1.0 - 2.0 * ops.mod(k, 2.0)
        modified = sign * self._cos_m_theta(c_t) - 2.0 * k
        logits = cos + onehot * (modified - c_t)[:, None]
        norms = ops.sqrt(ops.maximum(ops.sum(ops.square(x), axis=1, keepdims=True), 1e-24))
        logp = ops.log_softmax(logits * norms * self.scale, axis=1)
        return ops.mean(-ops.sum(onehot * logp, axis=1))
