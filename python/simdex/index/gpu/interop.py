"""Device arrays in and out of the CUDA module: CuPy, PyTorch, ``__cuda_array_interface__``, DLPack.

* NumPy (and anything :func:`numpy.asarray` accepts) is copied to the device and
  results come back as NumPy arrays.
* CuPy arrays, PyTorch CUDA tensors and any object with ``__cuda_array_interface__``
  are used in place (no copy) when they are float32 with unit column stride; other
  dtypes / layouts are converted on the device first. Results come back as the same
  kind of array as the queries (CuPy in -> CuPy out, torch in -> torch out,
  :class:`DeviceArray` in -> DeviceArray out; other device objects -> CuPy, or
  DeviceArray without CuPy).
* Objects that only offer DLPack (``__dlpack__`` on a CUDA device) are viewed through
  ``cupy.from_dlpack`` (no copy; needs CuPy) and give CuPy results.

Device work is queued on the producer's current stream (CuPy's / PyTorch's current
stream, or the stream named in ``__cuda_array_interface__``).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from simdex._optional import import_cupy
from simdex._validate import check_shape
from simdex.index.gpu.availability import require_cuda

__all__ = [
    "DeviceArray",
    "DeviceMatrix",
    "to_device",
    "is_device_array",
    "device_view",
    "upload_like",
    "empty_like",
    "empty_results",
    "to_host",
    "staging",
]

# --------------------------------------------------------------------------- device arrays
_TYPESTR = {np.dtype(np.float32): "<f4", np.dtype(np.int64): "<i8", np.dtype(np.uint64): "<u8"}


class DeviceArray:
    """A minimal C-contiguous device array (float32, int64 or uint64).

    simdex returns these for device inputs that are neither CuPy nor PyTorch when
    CuPy is not installed, and :func:`to_device` makes them, so the GPU path and
    its benchmarks work without any other GPU library. It exposes
    ``__cuda_array_interface__`` (CuPy, PyTorch and Numba can wrap it without a
    copy) and ``get()`` to copy it to a NumPy array.
    """

    def __init__(self, native: Any, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self._native = native
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)

    @classmethod
    def empty(cls, shape: tuple[int, ...], dtype: Any) -> DeviceArray:
        """Uninitialised array on the current CUDA device."""
        dt = np.dtype(dtype)
        if dt not in _TYPESTR:
            raise TypeError(f"DeviceArray supports float32, int64 and uint64, got {dt}")
        return cls(require_cuda().DeviceArray(list(shape), _TYPESTR[dt]), shape, dt)

    @classmethod
    def from_host(cls, a: np.ndarray) -> DeviceArray:
        """Copy a NumPy array (converted to C order) to the device."""
        a = np.ascontiguousarray(a)
        out = cls.empty(a.shape, a.dtype)
        out._native.upload(a.reshape(-1).view(np.uint8))
        return out

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        cai = dict(self._native.__cuda_array_interface__)
        cai["shape"] = self.shape
        return cai

    def __getitem__(self, i: int) -> DeviceArray:
        """The only row of a (1, n) array (a view): enough for simdex's 1-D results."""
        if self.ndim != 2 or self.shape[0] != 1 or i != 0:
            raise IndexError("DeviceArray supports only [0] on (1, n) arrays; use get() for more")
        return DeviceArray(self._native, self.shape[1:], self.dtype)

    def get(self) -> np.ndarray:
        """Copy to a new NumPy array."""
        full = np.empty(tuple(self._native.shape), dtype=self.dtype)
        self._native.download(full.reshape(-1).view(np.uint8))
        return full.reshape(self.shape)

    def __repr__(self) -> str:
        return f"simdex.gpu.DeviceArray(shape={self.shape}, dtype={self.dtype})"


def to_device(a: Any) -> Any:
    """Copy a host array to the GPU: a CuPy array if CuPy is installed, else a DeviceArray."""
    require_cuda()
    try:
        import cupy
    except ImportError:
        return DeviceArray.from_host(np.asarray(a))
    return cupy.asarray(a)


@dataclass
class DeviceMatrix:
    """A float32 row-major matrix in device memory (keeps its owner alive)."""

    owner: Any  # the (possibly converted) framework array
    ptr: int
    rows: int
    cols: int
    ld: int  # elements between rows
    device: int
    stream: int
    kind: str  # "cupy" | "torch" | "simdex" (DeviceArray)
    was_1d: bool


def _is_torch_cuda(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and bool(getattr(x, "is_cuda", False))


def _is_cupy(x: Any) -> bool:
    return type(x).__module__.startswith("cupy") and hasattr(x, "data") and hasattr(x, "device")


def _is_dlpack_cuda(x: Any) -> bool:
    dev = getattr(x, "__dlpack_device__", None)
    if dev is None or not hasattr(x, "__dlpack__"):
        return False
    try:
        return int(dev()[0]) in (2, 13)  # kDLCUDA, kDLCUDAManaged
    except Exception:
        return False


def is_device_array(x: Any) -> bool:
    """Whether ``x`` lives in CUDA device memory (CuPy, torch CUDA, CAI or DLPack-on-CUDA)."""
    return _is_torch_cuda(x) or _is_cupy(x) or hasattr(x, "__cuda_array_interface__") or _is_dlpack_cuda(x)


def _torch_view(x: Any, name: str, dim: int | None) -> DeviceMatrix:
    import torch

    rows, cols, was_1d = check_shape(tuple(x.shape), name, dim)
    if x.dtype.is_complex or x.dtype == torch.bool:
        raise TypeError(f"{name} must hold real numbers, got dtype {x.dtype}")
    x = x.detach().reshape(rows, cols)
    if x.dtype != torch.float32:
        x = x.to(torch.float32)
    if x.stride(1) != 1 or x.stride(0) < cols:
        x = x.contiguous()
    stream = int(torch.cuda.current_stream(x.device).cuda_stream)
    return DeviceMatrix(
        x, int(x.data_ptr()), rows, cols, int(x.stride(0)), int(x.device.index or 0), stream, "torch", was_1d
    )


def _cupy_view(x: Any, name: str, dim: int | None) -> DeviceMatrix:
    cupy = import_cupy(name)
    rows, cols, was_1d = check_shape(tuple(x.shape), name, dim)
    if x.dtype.kind not in "fiu":
        raise TypeError(f"{name} must hold real numbers (float32, float64 or integers), got dtype {x.dtype}")
    with cupy.cuda.Device(x.device.id):
        x = x.reshape(rows, cols)
        if x.dtype != np.float32:
            x = x.astype(np.float32)
        if x.strides[1] != 4 or x.strides[0] < 4 * cols or x.strides[0] % 4:
            x = cupy.ascontiguousarray(x)
        stream = int(cupy.cuda.get_current_stream().ptr)
    return DeviceMatrix(
        x, int(x.data.ptr), rows, cols, x.strides[0] // 4, int(x.device.id), stream, "cupy", was_1d
    )


def _cai_view(x: Any, name: str, dim: int | None, mod: ModuleType) -> DeviceMatrix:
    cai = x.__cuda_array_interface__
    shape = tuple(int(s) for s in cai["shape"])
    rows, cols, was_1d = check_shape(shape, name, dim)
    strides = cai.get("strides")
    try:
        import cupy  # noqa: F401

        kind = "simdex" if isinstance(x, DeviceArray) else "cupy"
    except ImportError:
        kind = "simdex"
    if cai["typestr"] not in ("<f4", "=f4") or (strides is not None and strides[-1] != 4):
        # Convert through CuPy (it wraps the interface without a copy, then converts).
        cupy = import_cupy(f"{name} ({cai['typestr']}, strides {strides})")
        return _cupy_view(cupy.asarray(x), name, dim)
    ptr = int(cai["data"][0])
    ld = cols if strides is None or len(shape) == 1 else int(strides[0]) // 4
    stream = int(cai.get("stream") or 0)
    device = int(mod.pointer_device(ptr))
    return DeviceMatrix(x, ptr, rows, cols, ld, device, stream, kind, was_1d)


def device_view(x: Any, name: str, dim: int | None, mod: ModuleType) -> DeviceMatrix:
    if _is_torch_cuda(x):
        dev = _torch_view(x, name, dim)
    elif _is_cupy(x):
        dev = _cupy_view(x, name, dim)
    elif hasattr(x, "__cuda_array_interface__"):
        dev = _cai_view(x, name, dim, mod)
    else:  # DLPack only
        cupy = import_cupy(f"{name} (a DLPack array)")
        dev = _cupy_view(cupy.from_dlpack(x), name, dim)
    bad = int(mod.count_nonfinite_device(dev.ptr, dev.rows, dev.cols, dev.ld, dev.stream, dev.device))
    if bad:
        raise ValueError(f"{name} contains {bad} NaN or infinite value(s)")
    return dev


def upload_like(x: np.ndarray, like: DeviceMatrix, mod: ModuleType) -> DeviceMatrix:
    """Copy a host float32 matrix to the device in the framework of ``like``."""
    if like.kind == "torch":
        import torch

        t = torch.as_tensor(x, device=torch.device("cuda", like.device))
        return DeviceMatrix(
            t, int(t.data_ptr()), x.shape[0], x.shape[1], x.shape[1], like.device, like.stream, "torch", False
        )
    if like.kind == "simdex":
        a = DeviceArray.from_host(x)
        ptr = int(a.__cuda_array_interface__["data"][0])
        return DeviceMatrix(
            a, ptr, x.shape[0], x.shape[1], x.shape[1], like.device, like.stream, "simdex", False
        )
    cupy = import_cupy("a device array")
    with cupy.cuda.Device(like.device):
        a = cupy.asarray(x)
    return DeviceMatrix(
        a, int(a.data.ptr), x.shape[0], x.shape[1], x.shape[1], like.device, like.stream, "cupy", False
    )


def empty_like(like: DeviceMatrix, shape: tuple[int, int], dtype: Any) -> tuple[Any, int]:
    if like.kind == "torch":
        import torch

        tdtype = torch.float32 if dtype == np.float32 else torch.int64  # torch has no uint64
        t = torch.empty(shape, dtype=tdtype, device=torch.device("cuda", like.device))
        return t, int(t.data_ptr())
    if like.kind == "simdex":
        a = DeviceArray.empty(shape, dtype)
        return a, int(a.__cuda_array_interface__["data"][0])
    cupy = import_cupy("a device array")
    with cupy.cuda.Device(like.device):
        a = cupy.empty(shape, dtype=dtype)
    return a, int(a.data.ptr)


def empty_results(like: DeviceMatrix, k: int) -> tuple[Any, int, Any, int]:
    """``(distances, distances_ptr, ids, ids_ptr)``: (rows, k) float32 / int64 outputs next to ``like``."""
    D, d_ptr = empty_like(like, (like.rows, k), np.float32)
    ids, i_ptr = empty_like(like, (like.rows, k), np.int64)
    return D, d_ptr, ids, i_ptr


def to_host(a: Any) -> np.ndarray:
    if hasattr(a, "get"):
        return a.get()
    return a.cpu().numpy()


def staging(x: np.ndarray) -> DeviceMatrix:
    """Upload a host float32 matrix (CuPy if installed, else a DeviceArray)."""
    try:
        import cupy  # noqa: F401

        kind = "cupy"
    except ImportError:
        kind = "simdex"
    like = DeviceMatrix(None, 0, 0, 0, 0, 0, 0, kind, False)
    return upload_like(x, like, require_cuda())
