"""simdex: fast similarity search and similarity learning.

The native core (exact cosine kNN, LSH) is a C++ extension; the Keras layer,
calibration, plots and export are optional and imported lazily, so
``import simdex`` needs only NumPy.

The package, by role (imports only point down this list):

* ``simdex.apps``: applications (near-duplicate search).
* ``simdex.learn``: similarity learning on Keras 3 (layers, losses, samplers, models).
* ``simdex.evaluate`` / ``simdex.embed``: matchers, metrics, calibration, plots /
  embedding models and export.
* ``simdex.index``: the :class:`Index` contract, exact and LSH search, the GPU backend,
  the file format.
* ``_validate``, ``_optional``, ``_runtime``: input checks, optional imports, the native core.

Public faces: ``simdex.models``, ``layers``, ``losses``, ``samplers``, ``callbacks``,
``metrics``, ``retrieval_metrics``, ``plots`` (also ``visualization``), ``calibration``,
``matchers``, ``embeddings``, ``export``, ``neardup``, ``lsh``, ``gpu``, and PyTorch
Metric Learning's ``distances``, ``miners``, ``reducers``, ``regularizers`` are the
modules that hold their code
(``simdex.losses is simdex.learn.losses``), importable as ``import simdex.losses`` and
reachable as attributes right after ``import simdex``.

Example:
    >>> import numpy as np, simdex
    >>> base = np.random.default_rng(0).normal(size=(1000, 32)).astype("float32")
    >>> D, I = simdex.knn(base[:5], base, k=3)
    >>> I[:, 0].tolist()
    [0, 1, 2, 3, 4]
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType
from typing import TYPE_CHECKING, Any

from simdex._runtime import __version__

# Public name -> module that defines it. Modules are imported on first use so
# that optional dependencies (TensorFlow/Keras, matplotlib, onnxruntime) are
# only needed by the features that use them.
_EXPORTS: dict[str, str] = {
    # core search
    "knn": "simdex.index.exact",
    "Index": "simdex.index.base",
    "ExactIndex": "simdex.index.exact",
    "load_index": "simdex.index.base",
    "METRICS": "simdex._validate",
    "set_num_threads": "simdex._runtime",
    "get_num_threads": "simdex._runtime",
    "build_info": "simdex.index.build",
    "CorruptFileError": "simdex.index.io",
    "IdFilter": "simdex.index.filters",
    # LSH
    "LSHIndex": "simdex.index.lsh",
    "RandomProjection": "simdex.index.hashing",
    "hash_vectors": "simdex.index.hashing",
    "tune_lsh": "simdex.index.lsh",
    # GPU
    "cuda_available": "simdex.index.gpu.availability",
    # similarity learning (Keras 3)
    "MetricEmbedding": "simdex.learn.layers",
    "L2Normalize": "simdex.learn.layers",
    "SimilarityModel": "simdex.learn.models",
    "load_model": "simdex.learn.models",
    "Lookup": "simdex.learn.models",
    # calibration
    "calibrate": "simdex.evaluate.calibration",
    "match": "simdex.evaluate.calibration",
    "CalibrationResult": "simdex.evaluate.calibration",
    "AccuracyCalculator": "simdex.evaluate.accuracy",
    # export, near-duplicate search
    "export_onnx": "simdex.embed.export",
    "OnnxEmbedder": "simdex.embed.export",
    "convert_tensorrt": "simdex.embed.export",
    "TensorRTUnavailableError": "simdex.embed.export",
    "NearDuplicateFinder": "simdex.apps.neardup",
}

# Public faces: ``simdex.<name>`` is the module that holds the code.
_FACES: dict[str, str] = {
    "models": "simdex.learn.models",
    "layers": "simdex.learn.layers",
    "losses": "simdex.learn.losses",
    "samplers": "simdex.learn.samplers",
    "callbacks": "simdex.learn.callbacks",
    "distances": "simdex.learn.distances",
    "miners": "simdex.learn.miners",
    "reducers": "simdex.learn.reducers",
    "regularizers": "simdex.learn.regularizers",
    "retrieval_metrics": "simdex.evaluate.retrieval_metrics",
    "metrics": "simdex.evaluate.metrics",
    "plots": "simdex.evaluate.plots",
    "visualization": "simdex.evaluate.plots",
    "calibration": "simdex.evaluate.calibration",
    "matchers": "simdex.evaluate.matchers",
    "embeddings": "simdex.embed.embeddings",
    "export": "simdex.embed.export",
    "neardup": "simdex.apps.neardup",
    "distributed": "simdex.apps.distributed",
    "service": "simdex.apps.service",
    "lsh": "simdex.index.lsh",
    "gpu": "simdex.index.gpu",
}

__all__ = sorted([*_EXPORTS, *_FACES, "__version__"])


class _FaceFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Makes ``import simdex.losses`` (a face) give the module ``simdex.learn.losses`` itself.

    The face is the same module object, not a copy, so ``monkeypatch.setattr``, ``isinstance``
    and pickling see one module. It runs only for the names in ``_FACES`` (no file has them).
    """

    def __init__(self) -> None:
        self._specs: dict[str, Any] = {}

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        prefix, _, face = fullname.partition(".")
        if prefix != __name__ or face not in _FACES:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(_FACES[spec.name.partition(".")[2]])
        self._specs[spec.name] = module.__spec__  # the import system replaces it; put it back below
        return module

    def exec_module(self, module: ModuleType) -> None:
        face = module.__spec__.name if module.__spec__ is not None else ""
        if face in self._specs:
            module.__spec__ = self._specs.pop(face)


if not any(isinstance(f, _FaceFinder) for f in sys.meta_path):
    sys.meta_path.append(_FaceFinder())


def __getattr__(name: str) -> Any:
    if name in _FACES:
        value: Any = importlib.import_module(f"{__name__}.{name}")
    else:
        module_name = _EXPORTS.get(name)
        if module_name is None:
            raise AttributeError(f"module 'simdex' has no attribute {name!r}")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name != module_name:  # a missing optional dependency: keep its message
                raise
            raise AttributeError(
                f"module 'simdex' has no attribute {name!r} ({module_name} is not built)"
            ) from e
        value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # pragma: no cover - static typing only
    from simdex._runtime import get_num_threads, set_num_threads
    from simdex._validate import METRICS

    # The faces, for type checkers (at run time they come from _FaceFinder / __getattr__).
    from simdex.apps import neardup
    from simdex.apps.neardup import NearDuplicateFinder
    from simdex.embed import embeddings, export
    from simdex.embed.export import OnnxEmbedder, TensorRTUnavailableError, convert_tensorrt, export_onnx
    from simdex.evaluate import calibration, matchers, metrics, plots
    from simdex.evaluate import plots as visualization
    from simdex.evaluate.calibration import CalibrationResult, calibrate, match
    from simdex.index import (
        CorruptFileError,
        ExactIndex,
        Index,
        LSHIndex,
        RandomProjection,
        build_info,
        gpu,
        hash_vectors,
        knn,
        load_index,
        lsh,
        tune_lsh,
    )
    from simdex.index.gpu.availability import cuda_available
    from simdex.learn import layers, losses, models, samplers
    from simdex.learn.layers import L2Normalize, MetricEmbedding
    from simdex.learn.models import Lookup, SimilarityModel, load_model
