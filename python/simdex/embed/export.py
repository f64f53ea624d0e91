"""Export embedders to ONNX and TensorRT, and run them without Keras.

* :func:`export_onnx` converts a single-input Keras embedder to an ONNX file
  (through ``tf2onnx``, with a free batch axis), written atomically.
* :class:`OnnxEmbedder` runs such a file on onnxruntime and satisfies the
  :class:`simdex.embeddings.Embedder` protocol. It picks the TensorRT / CUDA
  execution providers by itself when ``onnxruntime`` offers them, else the CPU.
* :func:`convert_tensorrt` builds a TensorRT artifact through whichever
  backend this machine has: TF-TRT (TensorFlow built with TensorRT),
  onnxruntime's ``TensorrtExecutionProvider``, or the ``tensorrt`` package.
  With none of them it raises :class:`TensorRTUnavailableError`; the ONNX
  path above works everywhere.

Dependencies are imported lazily: ``pip install "simdex[export]"`` for ONNX
export and inference.

Example:
    >>> simdex.export_onnx(model, "embedder.onnx")
    >>> onnx_embedder = simdex.OnnxEmbedder("embedder.onnx")
    >>> vecs = onnx_embedder.embed(images)          # same as embeddings.embed(model, images)

Why one module of ~600 lines: ONNX export, ONNX inference and the three TensorRT
backends share the artefact checks and the backend detection that tests replace
(``tf_trt_available`` and friends) by this module's names.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from simdex._optional import EXPORT_HINT, import_keras_tf, import_onnxruntime, import_tf
from simdex._validate import check_int, check_positive_int
from simdex.embed.embeddings import as_float_batch, iter_batches, single_input_shape
from simdex.index.io import atomic_writer

if TYPE_CHECKING:  # pragma: no cover - static typing only
    import keras

    from simdex.embed.embeddings import Embedder

__all__ = [
    "OnnxEmbedder",
    "TensorRTResult",
    "TensorRTUnavailableError",
    "convert_tensorrt",
    "export_onnx",
    "onnxruntime_trt_available",
    "tensorrt_backends",
    "tensorrt_package_available",
    "tf_trt_available",
]

# Opsets tf2onnx 1.16/1.17 can target; 15 is its default.
_MIN_OPSET, _MAX_OPSET = 9, 18
_PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


class TensorRTUnavailableError(RuntimeError):
    """No TensorRT backend (TF-TRT, onnxruntime-TensorRT, ``tensorrt``) is usable here."""


def _keras_model(model: Any) -> Any:
    from simdex.embed.embeddings import KerasEmbedder

    keras = import_keras_tf()
    if isinstance(model, KerasEmbedder):
        model = model.model
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a keras.Model, got {type(model).__name__}")
    return model


# --------------------------------------------------------------------------
# ONNX export.


def _onnx_bytes(model: Any, opset: int | None, input_name: str, output_name: str) -> bytes:
    """Convert ``model`` to a serialised ONNX ModelProto (free batch axis)."""
    tf = import_tf()
    try:
        import tf2onnx
    except ImportError as e:
        raise ImportError(f"ONNX export needs tf2onnx and onnx: {EXPORT_HINT}") from e
    shape = single_input_shape(model)
    if len(model.outputs) != 1:
        raise ValueError(f"export_onnx needs a single-output model, this one has {len(model.outputs)}")
    spec = (tf.TensorSpec((None, *shape), tf.float32, name=input_name),)

    # tf2onnx traces a tf.function; calling the model directly (rather than
    # keras' model.export(format="onnx")) avoids Keras' global NumPy patch and
    # its FutureWarning, and works the same in TF 2.21 / Keras 3.
    @tf.function(input_signature=spec)
    def forward(x: Any) -> dict[str, Any]:
        return {output_name: model(x, training=False)}

    try:
        proto, _ = tf2onnx.convert.from_function(forward, input_signature=spec, opset=opset)
    except Exception as e:  # tf2onnx raises bare Exceptions for unsupported ops
        raise RuntimeError(f"tf2onnx could not convert {model.name!r} to ONNX: {e}") from e
    meta = proto.metadata_props.add()
    meta.key, meta.value = "producer", "simdex.export_onnx"
    return proto.SerializeToString()


def export_onnx(
    model: keras.Model,
    path: str | os.PathLike[str],
    opset: int | None = None,
    *,
    input_name: str = "input",
    output_name: str = "embedding",
) -> str:
    """Export a single-input Keras embedder to an ONNX file.

    The graph takes ``(batch, *input_shape)`` float32 with a free batch axis
    and returns ``(batch, d)`` float32 (``model(x, training=False)``). The
    file is written atomically: if conversion or writing fails, an existing
    file at ``path`` is left untouched.

    Args:
        model: Single-input, single-output Keras model (or a
            :class:`simdex.embeddings.KerasEmbedder`).
        path: Destination ``.onnx`` file; its directory must exist.
        opset: ONNX opset, 9 to 18; ``None`` uses tf2onnx's default (15).
        input_name: Name of the graph input.
        output_name: Name of the graph output.

    Returns:
        ``path`` as a string.

    Raises:
        TypeError: ``model`` is not a Keras model.
        ValueError: bad ``opset``, multi-input/-output model.
        RuntimeError: tf2onnx cannot convert the model (e.g. unsupported ops).
        ImportError: tf2onnx / onnx missing.
    """
    model = _keras_model(model)
    if opset is not None:
        opset = check_int(opset, "opset", _MIN_OPSET, _MAX_OPSET)
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(
            f"{path!r} is a directory; give a file path such as {os.path.join(path, 'model.onnx')!r}"
        )
    data = _onnx_bytes(model, opset, input_name, output_name)
    with atomic_writer(path) as f:
        f.write(data)
    return path


# --------------------------------------------------------------------------
# ONNX inference.


def _default_providers(available: Sequence[str]) -> list[str]:
    chosen = [p for p in _PREFERRED_PROVIDERS if p in available]
    return chosen or list(available)


class OnnxEmbedder:
    """Run an ONNX embedder on onnxruntime.

    Args:
        path: ``.onnx`` file (e.g. from :func:`export_onnx`), or the model's
            serialised bytes.
        providers: onnxruntime execution providers in order of preference,
            as names or ``(name, options)`` pairs. ``None`` picks TensorRT,
            then CUDA, then CPU among ``onnxruntime.get_available_providers()``.
        intra_op_num_threads: Threads per operator (``None``: onnxruntime's
            default, all cores).

    Attributes:
        input_name: Name of the graph input.
        input_shape: Input shape without the batch axis (``None`` for a free axis).
        dim: Embedding size ``d``, or ``None`` if the graph leaves it free.
        providers: Providers the session actually uses.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a valid ONNX model, the graph has more than
            one input, or a requested provider is not available.
        ImportError: onnxruntime missing.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | bytes,
        providers: Sequence[str | tuple[str, dict[str, Any]]] | None = None,
        *,
        intra_op_num_threads: int | None = None,
    ) -> None:
        ort = import_onnxruntime()
        if isinstance(path, (bytes, bytearray)):
            self.path: str | None = None
            self.model_bytes = bytes(path)
            source = "<bytes>"
        elif isinstance(path, (str, os.PathLike)):
            self.path = os.fspath(path)
            if not os.path.isfile(self.path):
                raise FileNotFoundError(f"no ONNX file at {self.path!r}")
            with open(self.path, "rb") as f:
                self.model_bytes = f.read()
            source = repr(self.path)
        else:
            raise TypeError(f"path must be a file path or bytes, got {type(path).__name__}")

        available = list(ort.get_available_providers())
        if providers is None:
            providers = _default_providers(available)
        else:
            if isinstance(providers, str):
                providers = [providers]
            for p in providers:
                name = p[0] if isinstance(p, tuple) else p
                if name not in available:
                    raise ValueError(f"execution provider {name!r} is not available; available: {available}")
        options = ort.SessionOptions()
        if intra_op_num_threads is not None:
            options.intra_op_num_threads = check_positive_int(intra_op_num_threads, "batch_size")
        try:
            self._session = ort.InferenceSession(
                self.model_bytes, sess_options=options, providers=list(providers)
            )
        except Exception as e:  # onnxruntime raises its own Fail / InvalidProtobuf types
            raise ValueError(f"{source} is not a valid ONNX model for onnxruntime: {e}") from e

        inputs = self._session.get_inputs()
        outputs = self._session.get_outputs()
        if len(inputs) != 1:
            raise ValueError(f"OnnxEmbedder needs a single-input graph, {source} has {len(inputs)} inputs")
        if inputs[0].type != "tensor(float)":
            raise ValueError(
                f"the graph input must be float32 (tensor(float)), {source} takes {inputs[0].type}"
            )
        self.input_name: str = inputs[0].name
        self.output_name: str = outputs[0].name
        self.input_shape = tuple(d if isinstance(d, int) else None for d in inputs[0].shape[1:])
        batch_dim = inputs[0].shape[0] if inputs[0].shape else None
        # Graphs exported with a fixed batch size (some tools default to 1) get
        # exactly that many rows per run; a short last batch is zero-padded.
        self._fixed_batch: int | None = batch_dim if isinstance(batch_dim, int) and batch_dim > 0 else None
        out_shape = outputs[0].shape
        self.dim = out_shape[-1] if len(out_shape) == 2 and isinstance(out_shape[-1], int) else None

    @property
    def providers(self) -> list[str]:
        """Execution providers in use, fastest first."""
        return list(self._session.get_providers())

    def embed(self, x: Any, batch_size: int = 256) -> np.ndarray:
        """Embed ``x`` batch by batch.

        Args:
            x: ``(n, *input_shape)`` real array-like (a missing trailing channel
                axis of size 1 is added), or an iterable of such batches.
            batch_size: Rows per session run.

        Returns:
            ``(n, d)`` float32 array, rows in input order.

        Raises:
            TypeError: ``x`` is not numeric.
            ValueError: wrong shape, NaN/inf, ``batch_size < 1``.
        """
        batch_size = check_positive_int(batch_size, "batch_size")
        if self._fixed_batch is not None:
            batch_size = self._fixed_batch
        chunks = []
        for batch in iter_batches(x, batch_size, self.input_shape):
            n = batch.shape[0]
            if n == 0:
                continue
            if self._fixed_batch is not None and n < self._fixed_batch:
                pad = np.zeros((self._fixed_batch - n, *batch.shape[1:]), dtype=np.float32)
                batch = np.concatenate([batch, pad])
            (out,) = self._session.run([self.output_name], {self.input_name: batch})
            out = np.asarray(out, dtype=np.float32)[:n]
            if out.ndim != 2:
                raise ValueError(f"the ONNX graph must output (batch, d), got shape {out.shape}")
            chunks.append(out)
        if not chunks:
            return np.zeros((0, self.dim or 0), dtype=np.float32)
        return np.ascontiguousarray(np.concatenate(chunks, axis=0))

    __call__ = embed

    def __repr__(self) -> str:
        where = self.path if self.path is not None else "<bytes>"
        return (
            f"OnnxEmbedder({where!r}, input_shape={self.input_shape}, dim={self.dim}, "
            f"providers={self.providers})"
        )


# --------------------------------------------------------------------------
# TensorRT.

_PRECISIONS = ("fp16", "fp32", "int8")
_BACKENDS = ("tf-trt", "onnxruntime-trt", "tensorrt")


def tf_trt_available() -> bool:
    """True if TensorFlow was built with TensorRT and can load it (TF-TRT)."""
    if importlib.util.find_spec("tensorflow") is None:
        return False
    import tensorflow as tf

    if not tf.sysconfig.get_build_info().get("is_tensorrt_build", False):
        return False
    try:
        from tensorflow.python.compiler.tensorrt import trt_convert

        return bool(trt_convert._pywrap_py_utils.is_tensorrt_enabled())
    except (ImportError, AttributeError):
        return False


def onnxruntime_trt_available() -> bool:
    """True if onnxruntime offers its ``TensorrtExecutionProvider``."""
    if importlib.util.find_spec("onnxruntime") is None:
        return False
    import onnxruntime

    return "TensorrtExecutionProvider" in onnxruntime.get_available_providers()


def tensorrt_package_available() -> bool:
    """True if the ``tensorrt`` Python package is importable."""
    return importlib.util.find_spec("tensorrt") is not None


def tensorrt_backends() -> list[str]:
    """TensorRT backends usable here, in the order :func:`convert_tensorrt` tries them."""
    found = []
    if tf_trt_available():
        found.append("tf-trt")
    if onnxruntime_trt_available():
        found.append("onnxruntime-trt")
    if tensorrt_package_available():
        found.append("tensorrt")
    return found


@dataclasses.dataclass(frozen=True)
class TensorRTResult:
    """What :func:`convert_tensorrt` built.

    Attributes:
        path: The artifact: a SavedModel directory (``"tf-trt"``), an ONNX file
            whose TensorRT engines onnxruntime caches in ``path + ".trt_cache"``
            (``"onnxruntime-trt"``), or a serialised TensorRT engine (``"tensorrt"``).
        backend: Backend used.
        precision: ``"fp16"``, ``"fp32"`` or ``"int8"``.
        embedder: An :class:`~simdex.embeddings.Embedder` running the artifact,
            or ``None`` for a raw engine (load it with ``tensorrt.Runtime``).
    """

    path: str
    backend: str
    precision: str
    embedder: Embedder | None


def _unavailable_message(requested: str | None, available: Sequence[str]) -> str:
    """Say which TensorRT backends are missing and point to the ONNX path."""
    missing = {
        "tf-trt": "TensorFlow here was built without TensorRT (TF-TRT)",
        "onnxruntime-trt": "onnxruntime has no TensorrtExecutionProvider (it needs the onnxruntime-gpu build "
        "and the TensorRT libraries)",
        "tensorrt": "the 'tensorrt' package is not installed",
    }
    if requested is None:
        head = "no TensorRT backend is available"
        reasons = [missing[b] for b in _BACKENDS if b not in available]
    else:
        head = f"the {requested!r} TensorRT backend is not available"
        reasons = [missing[requested]]
        if available:
            reasons.append(f"available here: {', '.join(available)}")
    return (
        f"{head}: {'; '.join(reasons)}. The portable path works without TensorRT: "
        "simdex.export_onnx(model, 'model.onnx') then simdex.OnnxEmbedder('model.onnx'), which runs on "
        "the CPU and picks the CUDA/TensorRT execution providers by itself where onnxruntime has them."
    )


def convert_tensorrt(
    model: keras.Model,
    path: str | os.PathLike[str],
    precision: str = "fp16",
    *,
    backend: str | None = None,
    calibration_data: np.ndarray | None = None,
    max_batch_size: int = 256,
) -> TensorRTResult:
    """Build a TensorRT version of a Keras embedder.

    Backends, tried in this order unless ``backend`` names one:

    * ``"tf-trt"``: TensorFlow built with TensorRT; writes a converted
      SavedModel directory at ``path``. Supports fp32, fp16 and int8
      (int8 calibrates on ``calibration_data``).
    * ``"onnxruntime-trt"``: onnxruntime with ``TensorrtExecutionProvider``;
      writes the ONNX file at ``path``, engines are built on first use and
      cached. fp32 and fp16.
    * ``"tensorrt"``: the ``tensorrt`` package; writes a serialised engine at
      ``path`` with a batch range of 1 to ``max_batch_size``. fp32 and fp16.

    Args:
        model: Single-input Keras embedder.
        path: Output path (see above). An existing artifact is only replaced
            once the new one is complete.
        precision: ``"fp16"``, ``"fp32"`` or ``"int8"``.
        backend: Force one backend; ``None`` picks the first available.
        calibration_data: ``(n, *input_shape)`` representative inputs, needed
            for int8.
        max_batch_size: Largest batch the engine is built for.

    Returns:
        A :class:`TensorRTResult`.

    Raises:
        TensorRTUnavailableError: no usable backend (or not the one requested);
            the message says what is missing and points to :func:`export_onnx`.
        ValueError: bad ``precision``/``backend``, int8 without calibration
            data or on a backend that cannot calibrate.
    """
    if not isinstance(precision, str) or precision not in _PRECISIONS:
        raise ValueError(f"precision must be one of {_PRECISIONS}, got {precision!r}")
    if backend is not None and backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS} or None, got {backend!r}")
    max_batch_size = check_positive_int(max_batch_size, "batch_size")
    model = _keras_model(model)
    if precision == "int8":
        if calibration_data is None:
            raise ValueError("int8 precision needs calibration_data: a few hundred representative inputs")
        if backend in ("onnxruntime-trt", "tensorrt"):
            raise ValueError(f"int8 calibration is only supported through 'tf-trt', not {backend!r}")

    available = tensorrt_backends()
    if backend is None and precision == "int8":
        backend = "tf-trt"  # the only backend here that calibrates
    if backend is None:
        if not available:
            raise TensorRTUnavailableError(_unavailable_message(None, available))
        chosen = available[0]
    elif backend not in available:
        raise TensorRTUnavailableError(_unavailable_message(backend, available))
    else:
        chosen = backend
    converter = {
        "tf-trt": _convert_tf_trt,
        "onnxruntime-trt": _convert_ort_trt,
        "tensorrt": _convert_tensorrt_engine,
    }
    return converter[chosen](model, os.fspath(path), precision, calibration_data, max_batch_size)


def _ort_trt_provider_options(precision: str, cache_dir: str) -> list[Any]:
    """Provider list for an onnxruntime session that runs on TensorRT."""
    trt_options = {
        "trt_fp16_enable": precision == "fp16",
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": cache_dir,
    }
    return [("TensorrtExecutionProvider", trt_options), "CUDAExecutionProvider", "CPUExecutionProvider"]


def _convert_ort_trt(
    model: Any, path: str, precision: str, calibration_data: Any, max_batch_size: int
) -> TensorRTResult:
    export_onnx(model, path)
    cache_dir = path + ".trt_cache"
    os.makedirs(cache_dir, exist_ok=True)
    import onnxruntime

    available = onnxruntime.get_available_providers()
    providers = [
        p
        for p in _ort_trt_provider_options(precision, cache_dir)
        if (p[0] if isinstance(p, tuple) else p) in available
    ]
    return TensorRTResult(path, "onnxruntime-trt", precision, OnnxEmbedder(path, providers=providers))


def _replace_dir(tmp_dir: str, path: str) -> None:
    """Move the finished directory ``tmp_dir`` to ``path``, replacing an old one last."""
    backup = None
    if os.path.exists(path):
        backup = tempfile.mkdtemp(prefix=".simdex-old-", dir=os.path.dirname(os.path.abspath(path)))
        os.rmdir(backup)
        os.replace(path, backup)
    try:
        os.replace(tmp_dir, path)
    except BaseException:
        if backup is not None:
            os.replace(backup, path)
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


def _convert_tf_trt(
    model: Any, path: str, precision: str, calibration_data: Any, max_batch_size: int
) -> TensorRTResult:  # pragma: no cover - needs TensorFlow built with TensorRT and a GPU
    from tensorflow.python.compiler.tensorrt import trt_convert as trt

    tf = import_tf()
    shape = single_input_shape(model)
    mode = {
        "fp32": trt.TrtPrecisionMode.FP32,
        "fp16": trt.TrtPrecisionMode.FP16,
        "int8": trt.TrtPrecisionMode.INT8,
    }
    parent = os.path.dirname(os.path.abspath(path))
    with tempfile.TemporaryDirectory(dir=parent) as work:
        saved = os.path.join(work, "saved_model")
        model.export(saved, format="tf_saved_model", verbose=False)
        params = trt.TrtConversionParams(precision_mode=mode[precision], use_calibration=precision == "int8")
        converter = trt.TrtGraphConverterV2(input_saved_model_dir=saved, conversion_params=params)
        if precision == "int8":
            calib = as_float_batch(calibration_data, shape, what="calibration_data")

            def calibration_input_fn() -> Any:
                for start in range(0, len(calib), max_batch_size):
                    yield (tf.constant(calib[start : start + max_batch_size]),)

            converter.convert(calibration_input_fn=calibration_input_fn)
        else:
            converter.convert()

        def build_input_fn() -> Any:
            yield (tf.zeros((max_batch_size, *shape), tf.float32),)

        converter.build(input_fn=build_input_fn)
        out = os.path.join(work, "trt")
        converter.save(out)
        _replace_dir(out, path)
    return TensorRTResult(path, "tf-trt", precision, _SavedModelEmbedder(path))


class _SavedModelEmbedder:  # pragma: no cover - used only with TF-TRT artifacts
    """Runs the serving signature of a (TF-TRT converted) SavedModel."""

    def __init__(self, path: str) -> None:
        tf = import_tf()
        self.path = path
        self._loaded = tf.saved_model.load(path)
        self._fn = self._loaded.signatures["serving_default"]
        (spec,) = self._fn.structured_input_signature[1].values()
        self.input_shape = tuple(spec.shape[1:])
        self.dim = None

    def embed(self, x: Any, batch_size: int = 256) -> np.ndarray:
        tf = import_tf()
        chunks = []
        for batch in iter_batches(x, check_positive_int(batch_size, "batch_size"), self.input_shape):
            (out,) = self._fn(tf.constant(batch)).values()
            chunks.append(np.asarray(out, dtype=np.float32))
        return np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)

    __call__ = embed


def _convert_tensorrt_engine(
    model: Any, path: str, precision: str, calibration_data: Any, max_batch_size: int
) -> TensorRTResult:  # pragma: no cover - needs the tensorrt package and a GPU
    import tensorrt as trt

    shape = single_input_shape(model)
    if any(s is None for s in shape):
        raise ValueError(f"a TensorRT engine needs a fixed input shape, got {shape}")
    onnx_data = _onnx_bytes(model, None, "input", "embedding")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    major = int(trt.__version__.split(".")[0])
    flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_data):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse the ONNX graph: {errors}")
    config = builder.create_builder_config()
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    profile.set_shape("input", (1, *shape), (max_batch_size, *shape), (max_batch_size, *shape))
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise RuntimeError("TensorRT failed to build the engine (see the TensorRT log above)")
    with atomic_writer(path) as f:
        f.write(bytes(engine))
    return TensorRTResult(path, "tensorrt", precision, None)
