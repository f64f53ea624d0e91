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


class _GeneralizedMeanPooling(keras.layers.Layer):
    """Generalised-mean (GeM) pooling over the spatial axes: ``(mean(max(x, eps)**p))**(1/p)``.

    ``p = 1`` is average pooling; large ``p`` approaches max pooling.
    """

    _spatial_rank = 0

    def __init__(
        self, p: float = 3.0, data_format: str | None = None, keepdims: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not p > 0:
            raise ValueError(f"p must be a number > 0, got {p!r}")
        fmt = data_format or keras.config.image_data_format()
        if fmt not in ("channels_last", "channels_first"):
            raise ValueError(f"data_format must be 'channels_last' or 'channels_first', got {data_format!r}")
        self.p = float(p)
        self.data_format = fmt
        self.keepdims = bool(keepdims)

    def _axes(self) -> tuple[int, ...]:
        first = 1 if self.data_format == "channels_last" else 2
        return tuple(range(first, first + self._spatial_rank))

    def call(self, inputs: Any) -> Any:
        x = ops.maximum(inputs, ops.cast(1e-6, inputs.dtype)) ** self.p
        return ops.mean(x, axis=self._axes(), keepdims=self.keepdims) ** (1.0 / self.p)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        axes = self._axes()
        if self.keepdims:
            return tuple(1 if i in axes else d for i, d in enumerate(input_shape))
        return tuple(d for i, d in enumerate(input_shape) if i not in axes)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "p": self.p,
            "data_format": self.data_format,
            "keepdims": self.keepdims,
        }


@keras.saving.register_keras_serializable(package="simdex")
class GeneralizedMeanPooling1D(_GeneralizedMeanPooling):
    """GeM pooling over the steps of ``(batch, steps, channels)`` (TF Similarity's layer name)."""

    _spatial_rank = 1


@keras.saving.register_keras_serializable(package="simdex")
class GeneralizedMeanPooling2D(_GeneralizedMeanPooling):
    """GeM pooling over height and width of ``(batch, h, w, channels)`` (TF Similarity's layer name)."""

    _spatial_rank = 2


__all__ = [
    "GeneralizedMeanPooling1D",
    "GeneralizedMeanPooling2D",
    "L2Normalize",
    "MetricEmbedding",
    "import_keras",
    "l2_normalize",
]
