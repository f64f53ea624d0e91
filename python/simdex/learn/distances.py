"""Distance objects for metric learning (PyTorch Metric Learning's ``distances``), in ``keras.ops``.

A distance object maps embeddings ``x`` ``(n, d)`` (and optionally
``y`` ``(m, d)``) to a matrix ``(n, m)``. Similarities (cosine, dot product)
are *inverted* distances: larger means closer. :meth:`BaseDistance.margin`
gives "how far ``x`` is past ``y`` in the bad direction" for either kind, so
losses and miners are written once for both::

    dist = LpDistance()                    # euclidean on L2-normalised embeddings
    mat = dist(embeddings)                 # (n, n)
    violation = dist.margin(d_ap, d_an)    # d_ap - d_an (for similarities: s_an - s_ap)

Defaults follow PyTorch Metric Learning: every distance L2-normalises the
embeddings first unless ``normalize_embeddings=False``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from simdex._optional import import_keras
from simdex.learn.layers import l2_normalize

if TYPE_CHECKING:  # the real module, for type checkers; at run time with an install hint
    import keras
else:
    keras = import_keras()
ops = keras.ops

__all__ = [
    "BaseDistance",
    "CosineSimilarity",
    "DotProductSimilarity",
    "LpDistance",
    "get",
    "label_masks",
    "serialize",
]

_EPS = 1e-12


def label_masks(labels: Any, ref_labels: Any = None) -> tuple[Any, Any]:
    """Boolean ``(n, m)`` masks of positive pairs (same label; not self) and negative pairs.

    Args:
        labels: ``(n,)`` labels.
        ref_labels: ``(m,)`` labels of a separate reference set, or None for
            ``labels`` itself (then the diagonal is not a positive).
    """
    labels = ops.reshape(labels, (-1,))
    ref = labels if ref_labels is None else ops.reshape(ref_labels, (-1,))
    same = ops.equal(labels[:, None], ref[None, :])
    if ref_labels is None:
        idx = ops.arange(ops.shape(labels)[0])
        same_not_self = ops.logical_and(same, ops.not_equal(idx[:, None], idx[None, :]))
        return same_not_self, ops.logical_not(same)
    return same, ops.logical_not(same)


class BaseDistance:
    """Base class: normalises (optionally), computes the matrix, raises it to ``power``.

    Args:
        normalize_embeddings: L2-normalise the rows of ``x`` and ``y`` first.
        power: Exponent applied to the matrix (``LpDistance(power=2)`` is the
            squared euclidean distance).
    """

    is_inverted = False

    def __init__(self, normalize_embeddings: bool = True, power: float = 1.0) -> None:
        self.normalize_embeddings = bool(normalize_embeddings)
        if isinstance(power, bool) or not isinstance(power, (int, float)) or not power > 0:
            raise ValueError(f"power must be a number > 0, got {power!r}")
        self.power = float(power)

    def __call__(self, x: Any, y: Any = None) -> Any:
        """``(n, m)`` matrix between the rows of ``x`` and ``y`` (default ``x``)."""
        if self.normalize_embeddings:
            x = l2_normalize(x, axis=1)
            y = None if y is None else l2_normalize(y, axis=1)
        mat = self.compute_mat(x, y)
        return mat if self.power == 1.0 else mat**self.power

    def compute_mat(self, x: Any, y: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def margin(self, x: Any, y: Any) -> Any:
        """``x - y`` for distances, ``y - x`` for similarities (how much ``x`` is worse than ``y``)."""
        return y - x if self.is_inverted else x - y

    def smallest_dist(self, mat: Any, axis: int = 1) -> Any:
        """The closest entry along ``axis`` (max for similarities)."""
        return ops.max(mat, axis=axis) if self.is_inverted else ops.min(mat, axis=axis)

    def get_config(self) -> dict[str, Any]:
        return {"normalize_embeddings": self.normalize_embeddings, "power": self.power}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class LpDistance(BaseDistance):
    """Euclidean distance (``p=2``) between rows; ``power=2`` gives the squared distance.

    Finite, with finite gradients, for duplicate rows and on the diagonal.
    """

    def __init__(self, normalize_embeddings: bool = True, p: int = 2, power: float = 1.0) -> None:
        super().__init__(normalize_embeddings=normalize_embeddings, power=power)
        if p != 2:
            raise ValueError(f"LpDistance supports p=2 (euclidean) only, got p={p!r}")
        self.p = 2

    def _squared(self, x: Any, y: Any) -> Any:
        same = y is None
        y = x if same else y
        sq_x = ops.sum(ops.square(x), axis=1)
        sq_y = ops.sum(ops.square(y), axis=1)
        d2 = ops.maximum(sq_x[:, None] + sq_y[None, :] - 2.0 * ops.matmul(x, ops.transpose(y)), 0.0)
        if same:  # the expansion leaves ~1e-7 on the diagonal: force the exact 0
            idx = ops.arange(ops.shape(x)[0])
            d2 = d2 * ops.cast(ops.not_equal(idx[:, None], idx[None, :]), d2.dtype)
        return d2

    def compute_mat(self, x: Any, y: Any) -> Any:
        d2 = self._squared(x, y)
        eps = ops.cast(_EPS, d2.dtype)
        # sqrt has an infinite slope at 0: clamp, then zero those entries (their gradient is 0).
        return ops.where(d2 > eps, ops.sqrt(ops.maximum(d2, eps)), ops.zeros_like(d2))

    def __call__(self, x: Any, y: Any = None) -> Any:
        if self.power != 2.0:
            return super().__call__(x, y)
        if self.normalize_embeddings:  # squared distance directly: no sqrt, then square
            x = l2_normalize(x, axis=1)
            y = None if y is None else l2_normalize(y, axis=1)
        return self._squared(x, y)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "p": self.p}


class DotProductSimilarity(BaseDistance):
    """Dot product (a similarity: larger is closer); cosine when normalising (the default)."""

    is_inverted = True

    def compute_mat(self, x: Any, y: Any) -> Any:
        return ops.matmul(x, ops.transpose(x if y is None else y))


class CosineSimilarity(DotProductSimilarity):
    """Cosine similarity (always normalises)."""

    def __init__(self, power: float = 1.0) -> None:
        super().__init__(normalize_embeddings=True, power=power)

    def get_config(self) -> dict[str, Any]:
        return {"power": self.power}


_BY_NAME = {
    "lp": LpDistance,
    "l2": LpDistance,
    "euclidean": LpDistance,
    "cosine": CosineSimilarity,
    "dot": DotProductSimilarity,
    "ip": DotProductSimilarity,
}


_CLASSES: dict[str, type[BaseDistance]] = {
    c.__name__: c for c in (LpDistance, DotProductSimilarity, CosineSimilarity)
}


def serialize(obj: Any) -> dict[str, Any] | None:
    """``{"class_name", "config"}`` of a distance, miner, reducer or regularizer (None stays None)."""
    return None if obj is None else {"class_name": type(obj).__name__, "config": obj.get_config()}


def get(identifier: Any, default: type[BaseDistance] = LpDistance) -> BaseDistance:
    """A distance from a name (``"l2"``, ``"cosine"``, ``"dot"``), a :func:`serialize` dict,
    an instance, or None (``default()``).

    Raises:
        ValueError: unknown name.
        TypeError: anything else.
    """
    if identifier is None:
        return default()
    if isinstance(identifier, BaseDistance):
        return identifier
    if isinstance(identifier, dict):  # serialize() output
        found = _CLASSES.get(str(identifier.get("class_name")))
        if found is None:
            raise ValueError(f"unknown distance class {identifier.get('class_name')!r}")
        return found(**dict(identifier.get("config", {})))
    if isinstance(identifier, str):
        cls = _BY_NAME.get(identifier.lower())
        if cls is None:
            raise ValueError(f"unknown distance {identifier!r}; known: {sorted(_BY_NAME)}")
        return cls()
    raise TypeError(f"expected a distance name or a simdex.distances object, got {type(identifier).__name__}")
