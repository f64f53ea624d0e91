"""simdex: fast similarity search and similarity learning.

The native core (exact cosine kNN, LSH) is a C++ extension; the Keras layer,
calibration, plots and export are optional and imported lazily, so
``import simdex`` needs only NumPy.

Example:
    >>> import numpy as np, simdex
    >>> base = np.random.default_rng(0).normal(size=(1000, 32)).astype("float32")
    >>> D, I = simdex.knn(base[:5], base, k=3)
    >>> I[:, 0].tolist()
    [0, 1, 2, 3, 4]
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public name -> module that defines it. Modules are imported on first use so
# that optional dependencies (TensorFlow/Keras, matplotlib, onnxruntime) are
# only needed by the features that use them.
_EXPORTS: dict[str, str] = {
    # core search (issue: foundation)
    "knn": "simdex.index",
    "Index": "simdex.index",
    "ExactIndex": "simdex.index",
    "load_index": "simdex.index",
    "METRICS": "simdex.index",
    "set_num_threads": "simdex._runtime",
    "get_num_threads": "simdex._runtime",
    "build_info": "simdex._runtime",
    "CorruptFileError": "simdex._io",
    "IdFilter": "simdex.filters",
    # LSH
    "LSHIndex": "simdex.lsh",
    "RandomProjection": "simdex.lsh",
    "hash_vectors": "simdex.lsh",
    "tune_lsh": "simdex.lsh",
    # GPU
    "cuda_available": "simdex.gpu",
    "gpu": "simdex.gpu",
    # similarity learning (Keras 3)
    "MetricEmbedding": "simdex.layers",
    "L2Normalize": "simdex.layers",
    "SimilarityModel": "simdex.models",
    "load_model": "simdex.models",
    "Lookup": "simdex.models",
    "losses": "simdex.losses",
    "samplers": "simdex.samplers",
    # calibration and metrics
    "calibrate": "simdex.calibration",
    "match": "simdex.calibration",
    "CalibrationResult": "simdex.calibration",
    "metrics": "simdex.metrics",
    "plots": "simdex.plots",
    # embedding models, export, near-duplicate search
    "embeddings": "simdex.embeddings",
    "export_onnx": "simdex.export",
    "OnnxEmbedder": "simdex.export",
    "convert_tensorrt": "simdex.export",
    "TensorRTUnavailableError": "simdex.export",
    "NearDuplicateFinder": "simdex.neardup",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'simdex' has no attribute {name!r}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name != module_name:  # a missing optional dependency: keep its message
            raise
        raise AttributeError(f"module 'simdex' has no attribute {name!r} ({module_name} is not built)") from e
    # A name that is itself a submodule (simdex.losses) resolves to the module.
    value = module if module_name.rsplit(".", 1)[-1] == name else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # pragma: no cover - static typing only
    from simdex._io import CorruptFileError
    from simdex._runtime import build_info, get_num_threads, set_num_threads
    from simdex.index import METRICS, ExactIndex, Index, knn, load_index
