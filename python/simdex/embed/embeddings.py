"""Embedding models: build, wrap and run Keras embedders.

An *embedder* maps a batch of inputs (images, usually) to L2-normalised
float32 vectors, ready for a cosine index. This module has three pieces:

* :func:`small_cnn` builds a small convolutional embedder to train from scratch.
* :func:`from_backbone` turns any functional Keras classifier or backbone
  (``keras.applications.MobileNetV2(weights=None)``, a model loaded from a
  local ``.keras`` file, ...) into an embedder by taking one layer's output.
* :func:`embed` runs a Keras model over a large array, or over an iterable of
  batches, in ``tf.function``-compiled batches (much faster than
  ``model.predict`` for inference-only work).

:class:`Embedder` is the protocol the rest of simdex consumes
(:class:`simdex.NearDuplicateFinder`); :class:`KerasEmbedder` adapts a Keras
model to it and :class:`simdex.OnnxEmbedder` satisfies it directly.

Keras and TensorFlow are imported lazily, so this module can be imported with
NumPy only; the functions that build or run Keras models need
``pip install "simdex[tf]"``.

Example:
    >>> from simdex import embeddings
    >>> model = embeddings.small_cnn((28, 28, 1), embedding_dim=32)
    >>> vecs = embeddings.embed(model, images, batch_size=256)   # (n, 32) float32

Why one module of ~580 lines: the Embedder protocol, batching, the compiled forward
pass and the model builders are read together by every embedder (Keras, ONNX,
near-duplicates); each part is small.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from simdex._optional import import_keras_tf, import_tf
from simdex._validate import check_positive_int

if TYPE_CHECKING:  # pragma: no cover - static typing only
    import keras

__all__ = [
    "Embedder",
    "KerasEmbedder",
    "as_embedder",
    "embed",
    "from_backbone",
    "small_cnn",
]


@runtime_checkable
class Embedder(Protocol):
    """Anything that turns a batch of inputs into embeddings.

    Implementations: :class:`KerasEmbedder` (wraps a Keras model) and
    :class:`simdex.OnnxEmbedder` (onnxruntime). Optional attributes
    ``dim`` (int) and ``input_shape`` (tuple, no batch axis, ``None`` for a
    free axis) let callers size an index and tell one input from a batch.
    """

    def embed(self, x: Any, batch_size: int = 256) -> np.ndarray:
        """Embed ``x``.

        Args:
            x: ``(n, *input_shape)`` array, or an iterable of such batches.
            batch_size: Rows per forward pass.

        Returns:
            ``(n, d)`` float32 array.
        """
        ...


# --------------------------------------------------------------------------
# Input checking shared by the Keras and ONNX embedders.


def as_float_batch(
    x: Any, input_shape: Sequence[int | None] | None, what: str = "x", convert: bool = True
) -> np.ndarray:
    """Check one batch and return it as a C-contiguous float32 array.

    With ``convert=False`` only dtype and shape are checked and the array is
    returned as is (no copy), for callers that convert it chunk by chunk.

    ``input_shape`` excludes the batch axis; ``None`` entries match any size.
    A batch that lacks a trailing channel axis of size 1 gets one
    (``(n, 28, 28)`` for a model expecting ``(28, 28, 1)``).
    """
    if hasattr(x, "numpy") and not isinstance(x, np.ndarray):  # tf / torch tensors
        x = x.numpy()
    arr = np.asarray(x)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise TypeError(f"{what} must be a numeric array, got dtype {arr.dtype}")
    if np.iscomplexobj(arr):
        raise TypeError(f"{what} must be real-valued, got dtype {arr.dtype}")
    if input_shape is not None:
        shape = tuple(input_shape)
        if arr.ndim == len(shape) and len(shape) >= 2 and shape[-1] == 1:
            arr = arr[..., np.newaxis]
        if arr.ndim != len(shape) + 1:
            raise ValueError(
                f"{what} must have shape (n, {', '.join('?' if s is None else str(s) for s in shape)}), "
                f"got {arr.shape}"
            )
        for axis, (got, want) in enumerate(zip(arr.shape[1:], shape), start=1):
            if want is not None and got != want:
                raise ValueError(
                    f"{what} has size {got} on axis {axis}, the model expects {want} (shape {arr.shape})"
                )
    elif arr.ndim < 1:
        raise ValueError(f"{what} must have a batch axis, got a scalar")
    if not convert:
        return arr
    return _to_float(arr, what)


def _to_float(arr: np.ndarray, what: str) -> np.ndarray:
    out = np.ascontiguousarray(arr, dtype=np.float32)
    if out.size and not np.isfinite(out).all():
        raise ValueError(f"{what} contains NaN or infinite values")
    return out


def iter_batches(x: Any, batch_size: int, input_shape: Sequence[int | None] | None) -> Iterator[np.ndarray]:
    """Yield checked float32 chunks of at most ``batch_size`` rows.

    ``x`` is an array-like holding the whole input, or an iterable (list,
    generator, ``tf.data.Dataset``) of batches; each batch is re-chunked so a
    large one never goes through the model in one piece.
    """
    if isinstance(x, (str, bytes)):
        raise TypeError(f"x must be an array or an iterable of arrays, got {type(x).__name__}")
    wrapped = True
    if isinstance(x, np.ndarray) or hasattr(x, "__array__") or hasattr(x, "numpy"):
        batches: Iterable[Any] = (x,)
    elif isinstance(x, (list, tuple)):
        # A list of numbers / nested lists, or of single samples, is one array;
        # a list of arrays with a batch axis is a list of batches.
        if len(x) and all(hasattr(b, "shape") for b in x) and not are_samples(x, input_shape):
            batches, wrapped = x, False
        else:
            batches = (x,)
    elif isinstance(x, Iterable):
        batches, wrapped = x, False
    else:
        raise TypeError(f"x must be an array or an iterable of arrays, got {type(x).__name__}")
    for i, batch in enumerate(batches):
        what = "x" if wrapped else f"batch {i}"
        arr = as_float_batch(batch, input_shape, what=what, convert=False)
        for start in range(0, arr.shape[0], batch_size):
            yield _to_float(arr[start : start + batch_size], what)


def are_samples(items: Sequence[Any], input_shape: Sequence[int | None] | None) -> bool:
    """True if ``items`` are single samples (no batch axis) of ``input_shape``."""
    if input_shape is None:
        return False
    shape = tuple(input_shape)

    def matches(got: tuple[int, ...], want: tuple[int | None, ...]) -> bool:
        return len(got) == len(want) and all(w is None or g == w for g, w in zip(got, want))

    no_channel = shape[:-1] if len(shape) >= 2 and shape[-1] == 1 else None
    return all(
        matches(tuple(b.shape), shape) or (no_channel is not None and matches(tuple(b.shape), no_channel))
        for b in items
    )


# --------------------------------------------------------------------------
# Running Keras models.

_COMPILED: weakref.WeakKeyDictionary[Any, Callable[[Any], Any]] = weakref.WeakKeyDictionary()
_SINGLE: weakref.WeakKeyDictionary[Any, tuple[Callable[[Any], Any], bool]] = weakref.WeakKeyDictionary()
_COMPILED_LOCK = threading.Lock()


def single_input_shape(model: Any) -> tuple[int | None, ...]:
    inputs = getattr(model, "inputs", None)
    if not inputs:
        raise ValueError(
            f"{type(model).__name__} has no defined inputs: "
            "build it (call it once or give it keras.Input) first"
        )
    if len(inputs) != 1:
        raise ValueError(f"embedders need a single-input model, this one has {len(inputs)} inputs")
    return tuple(inputs[0].shape[1:])


def _output_dim(model: Any) -> int | None:
    outputs = getattr(model, "outputs", None)
    if not outputs or len(outputs) != 1:
        return None
    shape = tuple(outputs[0].shape)
    return int(shape[-1]) if len(shape) == 2 and shape[-1] is not None else None


def _weak_inference_call(model: Any) -> tuple[Any, tuple[int | None, ...], Callable[[Any], Any]]:
    """``(tf, input_shape, call)`` where ``call(x)`` runs ``model(x, training=False)``
    through a weak reference: the caches of compiled functions must not keep models alive."""
    ref = weakref.ref(model)

    def call(x: Any) -> Any:
        live = ref()
        if live is None:
            raise ReferenceError("the model of this compiled forward pass was deleted")
        return live(x, training=False)

    return import_tf(), single_input_shape(model), call


def compiled_forward(model: Any) -> Callable[[Any], Any]:
    """A cached ``tf.function`` running ``model(x, training=False)``, traced once per model
    with a free batch axis; it sees weight updates without retracing."""
    with _COMPILED_LOCK:
        fn = _COMPILED.get(model)
        if fn is None:
            tf, shape, call = _weak_inference_call(model)
            spec = tf.TensorSpec((None, *shape), tf.float32)
            fn = _COMPILED[model] = tf.function(call, input_signature=[spec], reduce_retracing=True)
        return fn


def compiled_single_forward(model: Any) -> tuple[Callable[[Any], Any], bool]:
    """A cached concrete function running ``model(x, training=False)`` on exactly one row.

    One-row calls (``SimilarityModel.single_lookup``) are dominated by per-call
    overhead, not arithmetic: a fixed ``(1, *input_shape)`` signature compiled with
    XLA runs the whole model as one fused call, measured 2-3x faster per call than
    the free-batch ``tf.function`` on small models. Models XLA cannot compile fall
    back to a fixed-shape graph function. The function reads the model's variables,
    so later weight changes need no recompilation.

    Returns:
        ``(fn, uses_xla)``: ``fn`` takes a float32 ``(1, *input_shape)`` tensor.
    """
    with _COMPILED_LOCK:
        cached = _SINGLE.get(model)
        if cached is not None:
            return cached
        tf, shape, call = _weak_inference_call(model)
        spec = tf.TensorSpec((1, *shape), tf.float32)
        try:
            fn = tf.function(call, input_signature=[spec], jit_compile=True).get_concrete_function()
            fn(tf.zeros((1, *shape), tf.float32))  # compile now: XLA may reject an op of the model
            entry = (fn, True)
        except Exception:  # noqa: BLE001  (XLA fails in many ways; the plain graph is the fallback)
            fn = tf.function(call, input_signature=[spec]).get_concrete_function()
            entry = (fn, False)
        _SINGLE[model] = entry
        return entry


def _check_keras_model(model: Any) -> Any:
    keras = import_keras_tf()
    if isinstance(model, KerasEmbedder):
        return model.model
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a keras.Model, got {type(model).__name__}")
    return model


def embed(model: keras.Model | KerasEmbedder, x: Any, batch_size: int = 256) -> np.ndarray:
    """Embed ``x`` with a single-input Keras model, batch by batch.

    The model is called directly inside a ``tf.function`` traced once with a
    free batch axis (no ``model.predict`` overhead, no retracing on the last
    short batch). Only one batch is converted to float32 at a time, so ``x``
    may be a large array, a memory map, or an iterable of batches.

    Args:
        model: Single-input, single-output Keras model whose output is
            ``(batch, d)``.
        x: ``(n, *input_shape)`` array-like (any real dtype; a missing trailing
            channel axis of size 1 is added), or an iterable of such batches
            (a list of arrays, a generator, a ``tf.data.Dataset`` of tensors).
        batch_size: Rows per forward pass.

    Returns:
        ``(n, d)`` float32 array, rows in input order. An empty input gives
        ``(0, d)``.

    Raises:
        TypeError: ``model`` is not a Keras model, or ``x`` is not numeric.
        ValueError: bad shapes, NaN/inf inputs, ``batch_size < 1``, or a model
            whose output is not 2-D.
    """
    model = _check_keras_model(model)
    batch_size = check_positive_int(batch_size, "batch_size")
    shape = single_input_shape(model)
    call = compiled_forward(model)
    tf = import_tf()
    chunks = []
    for batch in iter_batches(x, batch_size, shape):
        if batch.shape[0] == 0:
            continue
        out = call(tf.constant(batch))
        if isinstance(out, (list, tuple, dict)):
            raise ValueError("embed needs a single-output model")
        out = np.asarray(out.numpy(), dtype=np.float32)
        if out.ndim != 2:
            raise ValueError(f"the model must output (batch, d) embeddings, got shape {out.shape}")
        chunks.append(out)
    if not chunks:
        dim = _output_dim(model)
        return np.zeros((0, dim if dim is not None else 0), dtype=np.float32)
    return np.ascontiguousarray(np.concatenate(chunks, axis=0), dtype=np.float32)


class KerasEmbedder:
    """Adapts a Keras model to the :class:`Embedder` protocol.

    Args:
        model: Single-input Keras model producing ``(batch, d)`` embeddings.

    Attributes:
        model: The wrapped model.
        input_shape: Input shape without the batch axis.
        dim: Embedding size ``d`` (``None`` if the model does not declare it).
    """

    def __init__(self, model: keras.Model) -> None:
        self.model = _check_keras_model(model)
        self.input_shape = single_input_shape(self.model)
        self.dim = _output_dim(self.model)

    def embed(self, x: Any, batch_size: int = 256) -> np.ndarray:
        """Embed ``x``; see :func:`embed`."""
        return embed(self.model, x, batch_size=batch_size)

    __call__ = embed

    def __repr__(self) -> str:
        return f"KerasEmbedder({self.model.name!r}, input_shape={self.input_shape}, dim={self.dim})"


class _CallableEmbedder:
    """Wraps a plain function ``f(batch) -> (b, d)`` as an embedder."""

    def __init__(self, fn: Callable[[np.ndarray], Any]) -> None:
        self.fn = fn
        self.input_shape = None
        self.dim = None

    def embed(self, x: Any, batch_size: int = 256) -> np.ndarray:
        batch_size = check_positive_int(batch_size, "batch_size")
        chunks = []
        for batch in iter_batches(x, batch_size, None):
            out = np.asarray(self.fn(batch), dtype=np.float32)
            if out.ndim != 2 or out.shape[0] != batch.shape[0]:
                raise ValueError(
                    f"the embedding function returned shape {out.shape} for a batch of {batch.shape[0]}"
                )
            chunks.append(out)
        if not chunks:
            return np.zeros((0, 0), dtype=np.float32)
        return np.concatenate(chunks, axis=0)

    __call__ = embed


def as_embedder(obj: Any) -> Embedder:
    """Return ``obj`` as an :class:`Embedder`.

    Args:
        obj: An object with an ``embed`` method (returned as is), a Keras
            model (wrapped in :class:`KerasEmbedder`), or a plain callable
            mapping a float32 batch to ``(b, d)`` vectors.

    Raises:
        TypeError: ``obj`` is none of these.
    """
    if isinstance(obj, Embedder):
        return obj
    if _looks_like_keras_model(obj):
        return KerasEmbedder(obj)
    if callable(obj):
        return _CallableEmbedder(obj)
    raise TypeError(
        f"expected an embedder (an object with .embed), a keras.Model or a callable, got {type(obj).__name__}"
    )


def _looks_like_keras_model(obj: Any) -> bool:
    # Check by module name first so a non-Keras object never imports TensorFlow.
    if not type(obj).__module__.startswith(("keras", "tf_keras", "tensorflow")):
        for cls in type(obj).__mro__:
            if cls.__module__.startswith("keras"):
                break
        else:
            return False
    keras = import_keras_tf()
    return isinstance(obj, keras.Model)


# --------------------------------------------------------------------------
# Building embedders.


def small_cnn(
    input_shape: Sequence[int],
    embedding_dim: int = 64,
    filters: Sequence[int] = (32, 64),
    *,
    rescale: float | None = None,
    batch_norm: bool = False,
    dropout: float = 0.0,
    name: str = "small_cnn",
) -> keras.Model:
    """Build a small convolutional embedder ending in L2 normalisation.

    Architecture: per entry of ``filters`` a 3x3 convolution, batch
    normalisation (optional), ReLU and 2x2 max pooling, then global average
    pooling, an optional dropout, a linear
    ``Dense(embedding_dim)`` layer named ``"embedding"`` and a
    ``UnitNormalization`` layer named ``"l2_normalize"``. To train it as a
    classifier, put a softmax head on ``model.get_layer("embedding").output``;
    the embedder shares its weights.

    Args:
        input_shape: ``(height, width)`` or ``(height, width, channels)``.
        embedding_dim: Output size ``d``.
        filters: Convolution widths, one block per entry.
        rescale: Multiply inputs by this first (``1 / 255`` for uint8 images).
        batch_norm: Batch-normalise each convolution (faster training on long
            runs; its moving statistics need a few hundred steps to settle).
        dropout: Dropout rate before the embedding layer, in ``[0, 1)``.
        name: Model name.

    Returns:
        Keras model mapping ``(batch, *input_shape)`` float32 to
        ``(batch, embedding_dim)`` float32 unit vectors.

    Raises:
        ValueError: bad shapes or sizes.
    """
    keras = import_keras_tf()
    shape = tuple(int(s) for s in input_shape)
    if len(shape) not in (2, 3) or any(s < 1 for s in shape):
        raise ValueError(
            f"input_shape must be (height, width) or (height, width, channels), got {tuple(input_shape)}"
        )
    embedding_dim = check_positive_int(embedding_dim, "embedding_dim")
    filters = tuple(int(f) for f in filters)
    if not filters or any(f < 1 for f in filters):
        raise ValueError(f"filters must be a non-empty sequence of positive ints, got {filters}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if 2 ** len(filters) > min(shape[:2]):
        raise ValueError(f"{len(filters)} pooling blocks shrink a {shape[0]}x{shape[1]} input to nothing")

    inputs = keras.Input(shape, name="images")
    x = inputs
    if len(shape) == 2:
        x = keras.layers.Reshape((*shape, 1), name="add_channel")(x)
    if rescale is not None:
        x = keras.layers.Rescaling(float(rescale), name="rescale")(x)
    for i, f in enumerate(filters):
        x = keras.layers.Conv2D(f, 3, padding="same", use_bias=not batch_norm, name=f"conv{i}")(x)
        if batch_norm:
            x = keras.layers.BatchNormalization(momentum=0.9, name=f"bn{i}")(x)
        x = keras.layers.ReLU(name=f"relu{i}")(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="global_pool")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    x = keras.layers.Dense(int(embedding_dim), name="embedding")(x)
    outputs = keras.layers.UnitNormalization(name="l2_normalize")(x)
    return keras.Model(inputs, outputs, name=name)


def from_backbone(
    model: keras.Model | str | os.PathLike[str],
    layer_name: str | None = None,
    embedding_dim: int | None = None,
    *,
    pooling: str = "avg",
    name: str | None = None,
) -> keras.Model:
    """Turn a Keras classifier or backbone into an L2-normalised embedder.

    The embedder shares layers (and weights) with ``model``: it maps the
    model's input to ``layer_name``'s output, global-pools it if it is
    spatial, optionally projects it with a new ``Dense(embedding_dim)`` (to be
    trained) and L2-normalises it. Nothing is downloaded: load pretrained
    weights yourself, e.g. ``MobileNetV2(weights="/path/to/weights.h5")``.

    Args:
        model: A functional or Sequential Keras model, or the path of a local
            ``.keras`` / ``.h5`` model file.
        layer_name: Layer whose output is the feature. ``None`` picks the
            input of the final layer when that is a ``Dense`` classifier
            (the pooled features of ``MobileNetV2(include_top=True)``),
            otherwise the model's output (``include_top=False`` backbones).
        embedding_dim: If given, add a trainable linear projection to this size.
        pooling: ``"avg"`` or ``"max"`` global pooling for 3-D/4-D features.
        name: Name of the new model (default ``"<model>_embedder"``).

    Returns:
        Keras model mapping the backbone's inputs to ``(batch, d)`` float32
        unit vectors.

    Raises:
        ValueError: unknown ``layer_name`` (the message lists the layer
            names), a model without a graph, or features of unsupported rank.
        TypeError: ``model`` is not a Keras model or a path.
    """
    keras = import_keras_tf()
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if not os.path.exists(path):
            raise FileNotFoundError(f"no model file at {path!r}")
        model = keras.saving.load_model(path, compile=False)
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a keras.Model or a model file path, got {type(model).__name__}")
    if pooling not in ("avg", "max"):
        raise ValueError(f"pooling must be 'avg' or 'max', got {pooling!r}")
    if embedding_dim is not None:
        embedding_dim = check_positive_int(embedding_dim, "embedding_dim")
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if not inputs:
        raise ValueError(
            f"{model.name!r} has no graph (a subclassed or unbuilt model): from_backbone needs a "
            "functional or Sequential model with a defined input"
        )

    if layer_name is None:
        last = model.layers[-1]
        if isinstance(last, keras.layers.Dense) and len(model.layers) > 1:
            features = last.input
        else:
            features = model.outputs[0] if len(model.outputs) == 1 else None
            if features is None:
                raise ValueError(f"{model.name!r} has {len(model.outputs)} outputs: pass layer_name")
    else:
        if not isinstance(layer_name, str):
            raise TypeError(f"layer_name must be a str or None, got {type(layer_name).__name__}")
        names = [layer.name for layer in model.layers]
        if layer_name not in names:
            raise ValueError(
                f"{model.name!r} has no layer {layer_name!r}; its layers are: {', '.join(names)}"
            )
        features = model.get_layer(layer_name).output
        if isinstance(features, (list, tuple)):
            raise ValueError(f"layer {layer_name!r} has {len(features)} outputs; pick a single-output layer")

    rank = len(features.shape)
    x = features
    if rank == 4:
        pool = keras.layers.GlobalAveragePooling2D if pooling == "avg" else keras.layers.GlobalMaxPooling2D
        x = pool(name="embedding_pool")(x)
    elif rank == 3:
        pool = keras.layers.GlobalAveragePooling1D if pooling == "avg" else keras.layers.GlobalMaxPooling1D
        x = pool(name="embedding_pool")(x)
    elif rank != 2:
        raise ValueError(
            f"features of shape {tuple(features.shape)} are not supported: pick a layer with 2-4 axes"
        )
    if embedding_dim is not None:
        x = keras.layers.Dense(int(embedding_dim), name="embedding_projection")(x)
    outputs = keras.layers.UnitNormalization(name="l2_normalize")(x)
    return keras.Model(model.inputs, outputs, name=name or f"{model.name}_embedder")
