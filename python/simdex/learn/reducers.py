"""Reducers: how per-element losses become one value (PyTorch Metric Learning's ``reducers``).

A reducer takes a tensor of per-element losses (per anchor, pair or triplet;
any shape) and a boolean ``mask`` of the elements that exist (mined
triplets, valid pairs) and returns a scalar:

* :class:`MeanReducer`: the mean over existing elements;
* :class:`AvgNonZeroReducer`: the mean over existing elements with a loss > 0
  (PyTorch Metric Learning's default for triplet losses);
* :class:`ThresholdReducer`: the mean over existing elements with
  ``low < loss < high``.

Each returns 0 (with a zero gradient) when no element qualifies.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from simdex._optional import import_keras

if TYPE_CHECKING:  # the real module, for type checkers; at run time with an install hint
    import keras
else:
    keras = import_keras()
ops = keras.ops

__all__ = ["AvgNonZeroReducer", "BaseReducer", "MeanReducer", "ThresholdReducer", "get"]


class BaseReducer:
    """Base class: ``reducer(losses, mask=None) -> scalar``."""

    def keep(self, losses: Any) -> Any:
        """Boolean mask of the elements that count (all by default)."""
        return ops.ones_like(losses, dtype="bool")

    def __call__(self, losses: Any, mask: Any = None) -> Any:
        keep = self.keep(losses)
        if mask is not None:
            keep = ops.logical_and(keep, ops.cast(mask, "bool"))
        w = ops.cast(keep, losses.dtype)
        count = ops.sum(w)
        total = ops.sum(ops.where(keep, losses, ops.zeros_like(losses)))
        return total / ops.maximum(count, 1.0)

    def get_config(self) -> dict[str, Any]:
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class MeanReducer(BaseReducer):
    """Mean over the existing elements."""


class ThresholdReducer(BaseReducer):
    """Mean over the elements with ``low < loss < high`` (either bound may be None, not both)."""

    def __init__(self, low: float | None = None, high: float | None = None) -> None:
        if low is None and high is None:
            raise ValueError("ThresholdReducer needs low, high or both")
        for nm, v in (("low", low), ("high", high)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v)):
                raise ValueError(f"{nm} must be a number or None, got {v!r}")
        if low is not None and high is not None and not low < high:
            raise ValueError(f"low must be < high, got low={low}, high={high}")
        self.low = None if low is None else float(low)
        self.high = None if high is None else float(high)

    def keep(self, losses: Any) -> Any:
        keep = ops.ones_like(losses, dtype="bool")
        if self.low is not None:
            keep = ops.logical_and(keep, losses > self.low)
        if self.high is not None:
            keep = ops.logical_and(keep, losses < self.high)
        return keep

    def get_config(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high}


class AvgNonZeroReducer(ThresholdReducer):
    """Mean over the elements with a positive loss."""

    def __init__(self) -> None:
        super().__init__(low=0.0)

    def get_config(self) -> dict[str, Any]:
        return {}


_BY_NAME = {"mean": MeanReducer, "avg_non_zero": AvgNonZeroReducer}
_CLASSES = {c.__name__: c for c in (MeanReducer, AvgNonZeroReducer, ThresholdReducer)}


def get(identifier: Any, default: type[BaseReducer] = MeanReducer) -> BaseReducer:
    """A reducer from a name (``"mean"``, ``"avg_non_zero"``), an instance, or None (``default()``)."""
    if identifier is None:
        return default()
    if isinstance(identifier, BaseReducer):
        return identifier
    if isinstance(identifier, str) and identifier.lower() in _BY_NAME:
        return _BY_NAME[identifier.lower()]()
    if isinstance(identifier, dict):  # simdex.distances.serialize() output
        cls = _CLASSES.get(str(identifier.get("class_name")))
        if cls is not None:
            return cls(**dict(identifier.get("config", {})))
    raise ValueError(f"unknown reducer {identifier!r}; use {sorted(_BY_NAME)} or a simdex.reducers object")
