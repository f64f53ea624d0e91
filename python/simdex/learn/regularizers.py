"""Embedding regularizers (PyTorch Metric Learning's ``regularizers``), in ``keras.ops``.

A regularizer maps embeddings ``(n, d)`` to a scalar penalty (the mean of a
per-embedding value); losses of :mod:`simdex.losses_pml` add
``embedding_reg_weight * regularizer(embeddings)`` to their value.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from simdex._optional import import_keras

if TYPE_CHECKING:  # the real module, for type checkers; at run time with an install hint
    import keras
else:
    keras = import_keras()
ops = keras.ops

__all__ = ["BaseRegularizer", "LpRegularizer", "ZeroMeanRegularizer", "get"]


class BaseRegularizer:
    """Base class: ``regularizer(embeddings) -> scalar`` (mean of :meth:`per_row`)."""

    def per_row(self, embeddings: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, embeddings: Any) -> Any:
        return ops.mean(self.per_row(embeddings))

    def get_config(self) -> dict[str, Any]:
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class LpRegularizer(BaseRegularizer):
    """Mean L2 norm of the embeddings, raised to ``power`` (keeps unnormalised embeddings small).

    Args:
        p: Norm order (2 only).
        power: Exponent of the norm.
    """

    def __init__(self, p: int = 2, power: float = 1.0) -> None:
        if p != 2:
            raise ValueError(f"LpRegularizer supports p=2 only, got {p!r}")
        if isinstance(power, bool) or not isinstance(power, (int, float)) or not power > 0:
            raise ValueError(f"power must be a number > 0, got {power!r}")
        self.p = 2
        self.power = float(power)

    def per_row(self, embeddings: Any) -> Any:
        sq = ops.sum(ops.square(embeddings), axis=1)
        if self.power == 2.0:
            return sq
        # sqrt'(0) is infinite: an all-zero row gets norm 0 with a zero gradient.
        norm = ops.where(sq > 1e-24, ops.sqrt(ops.maximum(sq, 1e-24)), ops.zeros_like(sq))
        return norm if self.power == 1.0 else norm**self.power

    def get_config(self) -> dict[str, Any]:
        return {"p": self.p, "power": self.power}

    def __repr__(self) -> str:
        return f"LpRegularizer(p=2, power={self.power})"


class ZeroMeanRegularizer(BaseRegularizer):
    """Mean of ``|sum_j x_ij|``: pushes each embedding's components to sum to zero."""

    def per_row(self, embeddings: Any) -> Any:
        return ops.abs(ops.sum(embeddings, axis=1))


_CLASSES = {c.__name__: c for c in (LpRegularizer, ZeroMeanRegularizer)}


def get(identifier: Any) -> BaseRegularizer | None:
    """A regularizer from an instance, a ``{"class_name", "config"}`` dict, or None.

    Raises:
        ValueError: unknown class name.
        TypeError: anything else.
    """
    if identifier is None or isinstance(identifier, BaseRegularizer):
        return identifier
    if isinstance(identifier, dict):
        cls = _CLASSES.get(str(identifier.get("class_name")))
        if cls is None:
            raise ValueError(f"unknown regularizer class {identifier.get('class_name')!r}")
        return cls(**dict(identifier.get("config", {})))
    raise TypeError(f"expected a simdex.regularizers object, got {type(identifier).__name__}")
