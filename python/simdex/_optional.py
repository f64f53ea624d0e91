"""Optional dependencies, imported on first use with an install hint in the error.

``import simdex`` needs only NumPy. Features that need more (Keras for similarity
learning, TensorFlow for embedding models, onnxruntime for export, CuPy for
device arrays) import it through one of these functions, so a missing package
gives one clear ``ImportError`` that says which extra to install.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

__all__ = [
    "import_optional",
    "import_keras",
    "import_keras_tf",
    "import_tf",
    "import_onnxruntime",
    "import_cupy",
]

TF_HINT = 'pip install "simdex[tf]"'
EXPORT_HINT = 'pip install "simdex[export]"'
GPU_HINT = 'pip install "simdex[gpu]"'


def import_optional(name: str, feature: str, hint: str, error: type[Exception] = ImportError) -> ModuleType:
    """Import the module ``name`` or raise ``error`` naming ``feature`` and how to install it.

    Args:
        name: Module to import (``"onnxruntime"``, ``"tensorflow"``...).
        feature: What needs it, for the message (``"ONNX inference"``).
        hint: How to install it (``'pip install "simdex[export]"'``).
        error: Exception class raised when the import fails.
    """
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise error(f"{feature} needs {name}: {hint}") from e


def import_keras() -> ModuleType:
    """Import Keras 3 (any backend), or raise an ``ImportError`` with an install hint."""
    hint = f"simdex similarity learning needs Keras 3 and a backend: {TF_HINT}"
    try:
        import keras
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(hint) from e
    major = int(str(keras.__version__).split(".", 1)[0])
    if major < 3:  # pragma: no cover - depends on the environment
        raise ImportError(f"found keras {keras.__version__}, need keras>=3. {hint}")
    return keras


def import_keras_tf() -> ModuleType:
    """Import Keras 3 on the TensorFlow backend (embedding models, export)."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    try:
        import keras
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(f"this feature needs TensorFlow and Keras 3: {TF_HINT}") from e
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            f"simdex.embeddings needs the TensorFlow Keras backend, got {keras.backend.backend()!r}: "
            "set KERAS_BACKEND=tensorflow before importing keras"
        )
    return keras


def import_tf() -> ModuleType:
    """Import TensorFlow, or raise an ``ImportError`` with an install hint."""
    try:
        import tensorflow as tf
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(f"this feature needs TensorFlow and Keras 3: {TF_HINT}") from e
    return tf


def import_onnxruntime() -> ModuleType:
    """Import onnxruntime, or raise an ``ImportError`` with an install hint."""
    return import_optional("onnxruntime", "ONNX inference", EXPORT_HINT)


def import_cupy(why: str) -> ModuleType:
    """Import CuPy for ``why`` (a device array it must convert); ``TypeError`` without it."""
    try:
        import cupy
    except ImportError:
        raise TypeError(f"{why} needs CuPy: {GPU_HINT}") from None
    return cupy
