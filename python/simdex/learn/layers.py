"""Keras 3 layers for metric embeddings.

``MetricEmbedding`` is the usual last layer of a similarity model: a linear
projection followed by L2 normalisation, so that cosine distance between
outputs is ``1 - dot``. ``L2Normalize`` is the normalisation alone (for models
whose last layer already has the right width).

Keras is an optional dependency; this module raises an ``ImportError`` with an
install hint when it is missing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from simdex._optional import import_keras

if TYPE_CHECKING:  # the real module, for type checkers; at run time with an install hint
    import keras
else:
    keras = import_keras()
ops = keras.ops

_EPS = 1e-12


def l2_normalize(x: Any, axis: int = -1) -> Any:
    """L2-normalise ``x`` along ``axis``; all-zero rows stay zero (no NaN).

    Args:
        x: Tensor of any float dtype.
        axis: Axis to normalise over.

    Returns:
        Tensor of the same shape and dtype.
    """
    sq = ops.sum(ops.square(x), axis=axis, keepdims=True)
    # max() instead of adding eps keeps unit vectors exact and the gradient finite at 0.
    return x * ops.rsqrt(ops.maximum(sq, ops.cast(_EPS, x.dtype)))


@keras.saving.register_keras_serializable(package="simdex")
class L2Normalize(keras.layers.Layer):
    """Scale each row to unit L2 norm (all-zero rows stay zero).

    Input ``(batch, ..., d)`` float; output the same shape.
    """

    def __init__(self, axis: int = -1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.axis = int(axis)

    def call(self, inputs: Any) -> Any:
        return l2_normalize(inputs, axis=self.axis)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return tuple(input_shape)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "axis": self.axis}


@keras.saving.register_keras_serializable(package="simdex")
class MetricEmbedding(keras.layers.Layer):
    """Dense projection to ``units`` dimensions followed by L2 normalisation.

    Args:
        units: Embedding size ``d`` (positive int).
        activation: Optional activation applied before normalisation.
        use_bias: Whether the projection has a bias.
        kernel_initializer: Keras initializer for the projection matrix.
        **kwargs: Passed to ``keras.layers.Layer`` (``name``, ``dtype``...).

    Input ``(batch, in_dim)`` float; output ``(batch, units)`` float with unit rows.

    Example:
        >>> inputs = keras.Input((64,))
        >>> outputs = MetricEmbedding(32)(keras.layers.Dense(128, "relu")(inputs))
    """

    def __init__(
        self,
        units: int,
        activation: str | None = None,
        use_bias: bool = True,
        kernel_initializer: Any = "glorot_uniform",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(units, bool) or not isinstance(units, int):
            raise TypeError(f"units must be an int, got {type(units).__name__}")
        if units <= 0:
            raise ValueError(f"units must be positive, got {units}")
        self.units = units
        self.activation = activation
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.dense = keras.layers.Dense(
            units,
            activation=activation,
            use_bias=use_bias,
            kernel_initializer=self.kernel_initializer,
            dtype=self.dtype_policy,
            name="projection",
        )

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        self.dense.build(input_shape)

    def call(self, inputs: Any) -> Any:
        return l2_normalize(self.dense(inputs), axis=-1)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return (*tuple(input_shape)[:-1], self.units)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "units": self.units,
            "activation": self.activation,
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }


__all__ = ["L2Normalize", "MetricEmbedding", "import_keras", "l2_normalize"]
