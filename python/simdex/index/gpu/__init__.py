"""GPU (CUDA) backend: exact k-NN, a GPU flat index, random-projection hashing and LSH tables.

Everything here runs the kernels of the optional extension ``simdex._cuda``, which
is built only when ``nvcc`` is found at install time. Importing this package never
needs a GPU: :func:`cuda_available` says whether the GPU path can run, and every
other function raises a :class:`RuntimeError` saying why not (built without CUDA,
no driver, no device).

The pieces, by job:

* :mod:`~simdex.index.gpu.availability`: the CUDA module (or its CPU emulator) and the device.
* :mod:`~simdex.index.gpu.interop`: NumPy, CuPy, PyTorch, ``__cuda_array_interface__``
  and DLPack arrays in and out (results come back as the kind of array that went in).
* :mod:`~simdex.index.gpu.exact`: :func:`knn` and :class:`GpuExactIndex` (twin of ``ExactIndex``).
* :mod:`~simdex.index.gpu.lsh`: :func:`hash_vectors_gpu`, :func:`hash_reference`, :class:`GpuLSHIndex`.

Every call synchronises the stream it ran on before returning.
"""

from __future__ import annotations

from simdex.index.gpu.availability import EMULATOR_ENV, cuda_available, device_info, no_cuda_reason
from simdex.index.gpu.exact import MAX_K, PRECISIONS, GpuExactIndex, GpuFlatIndex, knn
from simdex.index.gpu.interop import DeviceArray, is_device_array, to_device
from simdex.index.gpu.lsh import MAX_PROBES, GpuLSHIndex, hash_reference, hash_vectors_gpu

__all__ = [
    "cuda_available",
    "no_cuda_reason",
    "device_info",
    "knn",
    "GpuExactIndex",
    "GpuFlatIndex",
    "hash_vectors_gpu",
    "hash_reference",
    "MAX_K",
    "DeviceArray",
    "to_device",
    "is_device_array",
    "GpuLSHIndex",
    "MAX_PROBES",
    "PRECISIONS",
    "EMULATOR_ENV",
]
