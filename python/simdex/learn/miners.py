"""Miners (PyTorch Metric Learning's ``miners``) as dense masks, in ``keras.ops``.

A miner looks at a batch of embeddings and labels and chooses the tuples a
loss should use. PyTorch Metric Learning returns index tuples of varying
length; here a miner returns fixed-shape boolean masks, which compose with
any loss and trace into a Keras/TensorFlow graph:

* triplet miners (:class:`AllTripletsMiner`, :class:`BatchHardMiner`,
  :class:`TripletMarginMiner`) return ``T`` of shape ``(n, n, n)``:
  ``T[a, p, n]`` is True when triplet (anchor ``a``, positive ``p``,
  negative ``n``) is mined;
* pair miners (:class:`MultiSimilarityMiner`) return :class:`PairMasks`
  ``(pos, neg)``, each ``(n, n)``: ``pos[a, p]`` / ``neg[a, n]``.

:func:`to_pairs` and :func:`to_triplets` convert one kind to the other, as
PyTorch Metric Learning does when a loss needs the other kind. Mining sees
no gradient (it is a selection).

Example:
    >>> loss = simdex.losses_pml.TripletMarginLoss(miner=BatchHardMiner())  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from simdex._optional import import_keras
from simdex.learn import distances as _distances

if TYPE_CHECKING:  # the real module, for type checkers; at run time with an install hint
    import keras
else:
    keras = import_keras()
ops = keras.ops

__all__ = [
    "AllTripletsMiner",
    "BaseMiner",
    "BatchHardMiner",
    "MultiSimilarityMiner",
    "PairMasks",
    "TripletMarginMiner",
    "get",
    "to_pairs",
    "to_triplets",
]

_BIG = 1e9


class PairMasks(NamedTuple):
    """Mined pairs: ``pos[a, p]`` and ``neg[a, n]``, boolean ``(n, n)``."""

    pos: Any
    neg: Any


def to_pairs(mined: Any) -> PairMasks:
    """Pair masks of a miner's output: a triplet (a, p, n) gives pairs (a, p) and (a, n)."""
    if isinstance(mined, PairMasks):
        return mined
    if isinstance(mined, tuple) and len(mined) == 2:
        return PairMasks(*mined)
    return PairMasks(ops.any(mined, axis=2), ops.any(mined, axis=1))


def to_triplets(mined: Any) -> Any:
    """Triplet mask of a miner's output: every mined positive pair with every mined negative pair
    of the same anchor."""
    if isinstance(mined, tuple):
        pos, neg = mined
        return ops.logical_and(pos[:, :, None], neg[:, None, :])
    return mined


def all_triplets(labels: Any) -> Any:
    """``(n, n, n)`` mask of every valid triplet of a batch."""
    pos, neg = _distances.label_masks(labels)
    return ops.logical_and(pos[:, :, None], neg[:, None, :])


class BaseMiner:
    """Base class: ``miner(embeddings, labels) -> mask(s)`` with the distance ``distance``.

    Args:
        distance: A :mod:`simdex.distances` object or name (default
            :class:`~simdex.distances.LpDistance`, as PyTorch Metric Learning).
    """

    def __init__(self, distance: Any = None) -> None:
        self.distance = _distances.get(distance, _distances.LpDistance)

    def __call__(self, embeddings: Any, labels: Any) -> Any:
        labels = ops.reshape(labels, (-1,))
        mat = ops.stop_gradient(self.distance(embeddings))
        return self.mine(mat, labels)

    def mine(self, mat: Any, labels: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        return {"distance": _distances.serialize(self.distance)}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(distance={self.distance!r})"


class AllTripletsMiner(BaseMiner):
    """Every valid triplet (what a triplet loss uses without a miner)."""

    def mine(self, mat: Any, labels: Any) -> Any:
        return all_triplets(labels)


class BatchHardMiner(BaseMiner):
    """One triplet per anchor: its hardest positive and hardest negative (Hermans et al., 2017).

    Hardest positive: the farthest (least similar); hardest negative: the
    closest (most similar). Anchors lacking a positive or a negative give none.
    """

    def mine(self, mat: Any, labels: Any) -> Any:
        pos, neg = _distances.label_masks(labels)
        n = ops.shape(mat)[0]
        # "badness" grows with distance for positives and with closeness for negatives
        bad = -mat if self.distance.is_inverted else mat
        big = ops.cast(_BIG, mat.dtype)
        p_idx = ops.argmax(ops.where(pos, bad, -big), axis=1)
        n_idx = ops.argmin(ops.where(neg, bad, big), axis=1)
        valid = ops.logical_and(ops.any(pos, axis=1), ops.any(neg, axis=1))
        p_hot = ops.cast(ops.one_hot(p_idx, n), "bool")
        n_hot = ops.cast(ops.one_hot(n_idx, n), "bool")
        t = ops.logical_and(p_hot[:, :, None], n_hot[:, None, :])
        return ops.logical_and(t, valid[:, None, None])


_TRIPLET_TYPES = ("all", "hard", "semihard", "easy")


class TripletMarginMiner(BaseMiner):
    """Triplets by their margin ``m = d(a, n) - d(a, p)`` (similarities: ``s(a, p) - s(a, n)``).

    * ``"all"``: ``m <= margin`` (every triplet that violates the margin);
    * ``"hard"``: ``m <= 0`` (the negative is at least as close as the positive);
    * ``"semihard"``: ``0 < m <= margin``;
    * ``"easy"``: ``m > margin``.

    Args:
        margin: The margin (>= 0).
        type_of_triplets: One of the four kinds (``"semi-hard"`` is accepted).
        distance: Distance object or name.
    """

    def __init__(self, margin: float = 0.2, type_of_triplets: str = "all", distance: Any = None) -> None:
        super().__init__(distance)
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not margin >= 0:
            raise ValueError(f"margin must be a number >= 0, got {margin!r}")
        kind = str(type_of_triplets).lower().replace("-", "").replace("_", "")
        if kind not in _TRIPLET_TYPES:
            raise ValueError(f"type_of_triplets must be one of {_TRIPLET_TYPES}, got {type_of_triplets!r}")
        self.margin = float(margin)
        self.type_of_triplets = kind

    def mine(self, mat: Any, labels: Any) -> Any:
        valid = all_triplets(labels)
        d_ap = mat[:, :, None]
        d_an = mat[:, None, :]
        m = d_ap - d_an if self.distance.is_inverted else d_an - d_ap
        if self.type_of_triplets == "easy":
            cond = m > self.margin
        else:
            cond = m <= self.margin
            if self.type_of_triplets == "hard":
                cond = ops.logical_and(cond, m <= 0)
            elif self.type_of_triplets == "semihard":
                cond = ops.logical_and(cond, m > 0)
        return ops.logical_and(valid, cond)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "margin": self.margin, "type_of_triplets": self.type_of_triplets}

    def __repr__(self) -> str:
        return (
            f"TripletMarginMiner(margin={self.margin}, type_of_triplets={self.type_of_triplets!r}, "
            f"distance={self.distance!r})"
        )


class MultiSimilarityMiner(BaseMiner):
    """Pair mining of the multi-similarity loss (Wang et al., 2019).

    With similarities: a negative pair is kept when ``s(a, n) + epsilon`` exceeds
    the anchor's least similar positive; a positive pair when
    ``s(a, p) - epsilon`` is below the anchor's most similar negative. With
    distances the same with the signs turned.

    Args:
        epsilon: Slack (>= 0).
        distance: Distance object or name (default cosine similarity).
    """

    def __init__(self, epsilon: float = 0.1, distance: Any = None) -> None:
        super().__init__(_distances.get(distance, _distances.CosineSimilarity))
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not epsilon >= 0:
            raise ValueError(f"epsilon must be a number >= 0, got {epsilon!r}")
        self.epsilon = float(epsilon)

    def mine(self, mat: Any, labels: Any) -> PairMasks:
        pos, neg = _distances.label_masks(labels)
        big = ops.cast(_BIG, mat.dtype)
        if self.distance.is_inverted:
            hardest_pos = ops.min(ops.where(pos, mat, big), axis=1)  # least similar positive
            hardest_neg = ops.max(ops.where(neg, mat, -big), axis=1)  # most similar negative
            keep_pos = ops.logical_and(pos, mat - self.epsilon < hardest_neg[:, None])
            keep_neg = ops.logical_and(neg, mat + self.epsilon > hardest_pos[:, None])
        else:
            hardest_pos = ops.max(ops.where(pos, mat, -big), axis=1)
            hardest_neg = ops.min(ops.where(neg, mat, big), axis=1)
            keep_pos = ops.logical_and(pos, mat + self.epsilon > hardest_neg[:, None])
            keep_neg = ops.logical_and(neg, mat - self.epsilon < hardest_pos[:, None])
        return PairMasks(keep_pos, keep_neg)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "epsilon": self.epsilon}

    def __repr__(self) -> str:
        return f"MultiSimilarityMiner(epsilon={self.epsilon}, distance={self.distance!r})"


_CLASSES = {
    c.__name__: c for c in (AllTripletsMiner, BatchHardMiner, TripletMarginMiner, MultiSimilarityMiner)
}


def get(identifier: Any) -> BaseMiner | None:
    """A miner from an instance, a ``{"class_name", "config"}`` dict, or None.

    Raises:
        ValueError: unknown class name.
    """
    if identifier is None or not isinstance(identifier, dict):
        return identifier
    cls = _CLASSES.get(str(identifier.get("class_name")))
    if cls is None:
        raise ValueError(f"unknown miner class {identifier.get('class_name')!r}")
    return cls(**dict(identifier.get("config", {})))
