"""GPU (CUDA) backend: exact k-NN, a GPU flat index and random-projection hashing.

Everything here runs the kernels of the optional extension ``simdex._cuda``, which
is built only when ``nvcc`` is found at install time. Importing this module never
needs a GPU: :func:`cuda_available` says whether the GPU path can run, and every
other function raises a :class:`RuntimeError` saying why not (built without CUDA,
no driver, no device).

Arrays:
    * NumPy (and anything :func:`numpy.asarray` accepts) is copied to the device and
      results come back as NumPy arrays.
    * CuPy arrays, PyTorch CUDA tensors and any object with
      ``__cuda_array_interface__`` are used in place (no copy) when they are
      float32 with unit column stride; other dtypes / layouts are converted on the
      device first. Results come back as the same kind of array as ``queries``
      (CuPy in -> CuPy out, torch in -> torch out, :class:`DeviceArray` in ->
      DeviceArray out; other device objects -> CuPy, or DeviceArray without CuPy).
    * Objects that only offer DLPack (``__dlpack__`` on a CUDA device) are viewed
      through ``cupy.from_dlpack`` (no copy; needs CuPy) and give CuPy results.

Device work is queued on the producer's current stream (CuPy's / PyTorch's current
stream, or the stream named in ``__cuda_array_interface__``) and every call
synchronises that stream before returning.

Precision: exact search is full FP32 by default; ``precision="tf32x3"`` / ``"tf32"``
use tensor cores (see :func:`knn`). Hash codes follow the float64
in-order rule documented in :func:`hash_vectors_gpu` and are reproducible bit for
bit by :func:`hash_reference`.
"""

from __future__ import annotations

import operator
import os
from dataclasses import dataclass
from functools import cache
from types import ModuleType
from typing import Any

import numpy as np

from simdex.index import as_matrix, canonical_metric, check_k

__all__ = [
    "cuda_available",
    "no_cuda_reason",
    "device_info",
    "knn",
    "GpuFlatIndex",
    "hash_vectors_gpu",
    "hash_reference",
    "MAX_K",
    "DeviceArray",
    "to_device",
    "GpuLSHIndex",
    "MAX_PROBES",
]

MAX_K = 1024  # kMaxK in cuda/include/simdex/cuda/knn.h
MAX_PROBES = 17  # kMaxProbes in cuda/include/simdex/cuda/lsh.h
PRECISIONS = ("fp32", "tf32x3", "tf32")


def _check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    return precision


# --------------------------------------------------------------------------- availability
EMULATOR_ENV = "SIMDEX_CUDA_EMULATOR"


def _emulator_module(folder: str) -> tuple[ModuleType | None, str]:
    """Load the CPU emulator of the CUDA module (a test tool built by ``make check-cuda-emu``)."""
    import importlib.machinery
    import importlib.util

    spec = importlib.machinery.PathFinder.find_spec("simdex_cuda_emu", [folder])
    if spec is None or spec.loader is None:
        return None, f"{EMULATOR_ENV}={folder!r} but that folder holds no simdex_cuda_emu module"
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod, ""


@cache
def _module() -> tuple[ModuleType | None, str]:
    emulator = os.environ.get(EMULATOR_ENV)
    if emulator:
        return _emulator_module(emulator)
    try:
        from simdex import _cuda
    except ImportError as e:
        return None, (
            "simdex was built without CUDA support (the extension simdex._cuda is missing: "
            f"{e}); reinstall simdex on a machine where nvcc is on PATH"
        )
    return _cuda, ""


def no_cuda_reason() -> str:
    """Why the GPU path cannot run here, or ``""`` when it can."""
    mod, why = _module()
    if mod is None:
        return why
    try:
        if mod.device_count() > 0:
            return ""
        return str(mod.no_device_reason())
    except Exception as e:  # pragma: no cover - device_count never raises by design
        return f"the CUDA runtime failed: {e}"


def cuda_available() -> bool:
    """Whether simdex was built with CUDA and a CUDA device is usable (never raises)."""
    return no_cuda_reason() == ""


def _require() -> ModuleType:
    why = no_cuda_reason()
    if why:
        raise RuntimeError(f"device='cuda' is not available: {why}. Use device='cpu'.")
    mod, _ = _module()
    assert mod is not None
    return mod


def device_info(device: int = 0) -> str:
    """Name, compute capability, memory and SM count of CUDA device ``device``."""
    return str(_require().device_description(int(device)))


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
        return cls(_require().DeviceArray(list(shape), _TYPESTR[dt]), shape, dt)

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
    _require()
    try:
        import cupy
    except ImportError:
        return DeviceArray.from_host(np.asarray(a))
    return cupy.asarray(a)


@dataclass
class _Dev:
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


def _import_cupy(why: str) -> Any:
    try:
        import cupy
    except ImportError:
        raise TypeError(f'{why} needs CuPy: pip install "simdex[gpu]"') from None
    return cupy


def _check_shape(shape: tuple[int, ...], name: str, dim: int | None) -> tuple[int, int, bool]:
    if len(shape) == 1:
        rows, cols, was_1d = 1, int(shape[0]), True
    elif len(shape) == 2:
        rows, cols, was_1d = int(shape[0]), int(shape[1]), False
    else:
        raise ValueError(f"{name} must be a 2-D array (n, d) or a single 1-D vector, got shape {shape}")
    if rows == 0:
        raise ValueError(f"{name} is empty (shape {shape}); pass at least one vector")
    if cols == 0:
        raise ValueError(f"{name} has dimension 0 (shape {shape})")
    if dim is not None and cols != dim:
        raise ValueError(f"{name} has dimension {cols}, expected {dim} (shape {shape})")
    return rows, cols, was_1d


def _torch_view(x: Any, name: str, dim: int | None) -> _Dev:
    import torch

    rows, cols, was_1d = _check_shape(tuple(x.shape), name, dim)
    if x.dtype.is_complex or x.dtype == torch.bool:
        raise TypeError(f"{name} must hold real numbers, got dtype {x.dtype}")
    x = x.detach().reshape(rows, cols)
    if x.dtype != torch.float32:
        x = x.to(torch.float32)
    if x.stride(1) != 1 or x.stride(0) < cols:
        x = x.contiguous()
    stream = int(torch.cuda.current_stream(x.device).cuda_stream)
    return _Dev(
        x, int(x.data_ptr()), rows, cols, int(x.stride(0)), int(x.device.index or 0), stream, "torch", was_1d
    )


def _cupy_view(x: Any, name: str, dim: int | None) -> _Dev:
    cupy = _import_cupy(name)
    rows, cols, was_1d = _check_shape(tuple(x.shape), name, dim)
    if x.dtype.kind not in "fiu":
        raise TypeError(f"{name} must hold real numbers (float32, float64 or integers), got dtype {x.dtype}")
    with cupy.cuda.Device(x.device.id):
        x = x.reshape(rows, cols)
        if x.dtype != np.float32:
            x = x.astype(np.float32)
        if x.strides[1] != 4 or x.strides[0] < 4 * cols or x.strides[0] % 4:
            x = cupy.ascontiguousarray(x)
        stream = int(cupy.cuda.get_current_stream().ptr)
    return _Dev(x, int(x.data.ptr), rows, cols, x.strides[0] // 4, int(x.device.id), stream, "cupy", was_1d)


def _cai_view(x: Any, name: str, dim: int | None, mod: ModuleType) -> _Dev:
    cai = x.__cuda_array_interface__
    shape = tuple(int(s) for s in cai["shape"])
    rows, cols, was_1d = _check_shape(shape, name, dim)
    strides = cai.get("strides")
    try:
        import cupy  # noqa: F401

        kind = "simdex" if isinstance(x, DeviceArray) else "cupy"
    except ImportError:
        kind = "simdex"
    if cai["typestr"] not in ("<f4", "=f4") or (strides is not None and strides[-1] != 4):
        # Convert through CuPy (it wraps the interface without a copy, then converts).
        cupy = _import_cupy(f"{name} ({cai['typestr']}, strides {strides})")
        return _cupy_view(cupy.asarray(x), name, dim)
    ptr = int(cai["data"][0])
    ld = cols if strides is None or len(shape) == 1 else int(strides[0]) // 4
    stream = int(cai.get("stream") or 0)
    device = int(mod.pointer_device(ptr))
    return _Dev(x, ptr, rows, cols, ld, device, stream, kind, was_1d)


def _device_view(x: Any, name: str, dim: int | None, mod: ModuleType) -> _Dev:
    if _is_torch_cuda(x):
        dev = _torch_view(x, name, dim)
    elif _is_cupy(x):
        dev = _cupy_view(x, name, dim)
    elif hasattr(x, "__cuda_array_interface__"):
        dev = _cai_view(x, name, dim, mod)
    else:  # DLPack only
        cupy = _import_cupy(f"{name} (a DLPack array)")
        dev = _cupy_view(cupy.from_dlpack(x), name, dim)
    bad = int(mod.count_nonfinite_device(dev.ptr, dev.rows, dev.cols, dev.ld, dev.stream, dev.device))
    if bad:
        raise ValueError(f"{name} contains {bad} NaN or infinite value(s)")
    return dev


def _upload_like(x: np.ndarray, like: _Dev, mod: ModuleType) -> _Dev:
    """Copy a host float32 matrix to the device in the framework of ``like``."""
    if like.kind == "torch":
        import torch

        t = torch.as_tensor(x, device=torch.device("cuda", like.device))
        return _Dev(
            t, int(t.data_ptr()), x.shape[0], x.shape[1], x.shape[1], like.device, like.stream, "torch", False
        )
    if like.kind == "simdex":
        a = DeviceArray.from_host(x)
        ptr = int(a.__cuda_array_interface__["data"][0])
        return _Dev(a, ptr, x.shape[0], x.shape[1], x.shape[1], like.device, like.stream, "simdex", False)
    cupy = _import_cupy("a device array")
    with cupy.cuda.Device(like.device):
        a = cupy.asarray(x)
    return _Dev(
        a, int(a.data.ptr), x.shape[0], x.shape[1], x.shape[1], like.device, like.stream, "cupy", False
    )


def _empty_like(like: _Dev, shape: tuple[int, int], dtype: Any) -> tuple[Any, int]:
    if like.kind == "torch":
        import torch

        tdtype = torch.float32 if dtype == np.float32 else torch.int64  # torch has no uint64
        t = torch.empty(shape, dtype=tdtype, device=torch.device("cuda", like.device))
        return t, int(t.data_ptr())
    if like.kind == "simdex":
        a = DeviceArray.empty(shape, dtype)
        return a, int(a.__cuda_array_interface__["data"][0])
    cupy = _import_cupy("a device array")
    with cupy.cuda.Device(like.device):
        a = cupy.empty(shape, dtype=dtype)
    return a, int(a.data.ptr)


def _to_host(a: Any) -> np.ndarray:
    if hasattr(a, "get"):
        return a.get()
    return a.cpu().numpy()


def _block(v: int | None, name: str) -> int:
    if v is None:
        return 0
    v = operator.index(v)
    if v < 1:
        raise ValueError(f"{name} must be >= 1 or None, got {v}")
    return v


def _check_gpu_k(k: Any) -> int:
    k = check_k(k)
    if k > MAX_K:
        raise ValueError(f"k={k} is larger than the GPU top-k supports ({MAX_K}); use device='cpu'")
    return k


# --------------------------------------------------------------------------- exact search
def knn(
    queries: Any,
    base: Any,
    k: int = 10,
    metric: str = "cosine",
    *,
    query_block: int | None = None,
    base_block: int | None = None,
    precision: str = "fp32",
) -> tuple[Any, Any]:
    """Exact k nearest neighbours on the GPU (same contract as :func:`simdex.knn`).

    Args:
        queries: (q, d) or (d,) array: NumPy, CuPy, PyTorch CUDA tensor, or any
            ``__cuda_array_interface__`` / DLPack device array.
        base: (n, d) array of the same kinds.
        k: Neighbours per query, 1 <= k <= 1024; slots beyond n hold id -1 and
            distance +inf.
        metric: ``"cosine"``, ``"ip"``, ``"l2"`` or ``"sql2"``.
        query_block: Queries per tile (default 4096).
        base_block: Base vectors per tile (default 4096); two tiles of
            ``4 * query_block * base_block`` bytes each live in device memory.
        precision: ``"fp32"`` (default; SIMT FP32, matches the CPU to ~1e-6),
            ``"tf32x3"`` (tensor cores with a 3xTF32 split: about FP32 accuracy) or
            ``"tf32"`` (tensor cores, ~1e-3 relative error: near-ties may reorder).
            The TF32 modes need compute capability >= 8.0.

    Returns:
        ``(distances, ids)``: float32 and int64 of shape (q, k) ((k,) for a 1-D
        query), distances ascending, ties by smaller id; the same kind of array as
        ``queries``.

    Raises:
        RuntimeError: no CUDA build, driver or device.
        ValueError: bad shapes, NaN / infinity, k out of range, unknown metric.
        TypeError: non-numeric input.
    """
    metric = canonical_metric(metric)
    k = _check_gpu_k(k)
    qb, bb = _block(query_block, "query_block"), _block(base_block, "base_block")
    precision = _check_precision(precision)
    mod = _require()
    q_dev, x_dev = is_device_array(queries), is_device_array(base)
    if not q_dev and not x_dev:
        q, was_1d = as_matrix(queries, "queries")
        x, _ = as_matrix(base, "base", dim=q.shape[1])
        D, ids = mod.knn(q, x, k, metric, query_block=qb, base_block=bb, precision=precision)
        return (D[0], ids[0]) if was_1d else (D, ids)

    if q_dev:
        qv = _device_view(queries, "queries", None, mod)
        if x_dev:
            xv = _device_view(base, "base", qv.cols, mod)
        else:
            xv = _upload_like(as_matrix(base, "base", dim=qv.cols)[0], qv, mod)
    else:
        xv = _device_view(base, "base", None, mod)
        q_host, was_1d_host = as_matrix(queries, "queries", dim=xv.cols)
        qv = _upload_like(q_host, xv, mod)
        qv.was_1d = was_1d_host
    if qv.device != xv.device:
        raise ValueError(f"queries are on CUDA device {qv.device} but base is on device {xv.device}")
    D, d_ptr = _empty_like(qv, (qv.rows, k), np.float32)
    ids, i_ptr = _empty_like(qv, (qv.rows, k), np.int64)
    mod.knn_device(
        qv.ptr,
        qv.rows,
        qv.ld,
        xv.ptr,
        xv.rows,
        xv.ld,
        qv.cols,
        k,
        metric,
        d_ptr,
        i_ptr,
        stream=qv.stream,
        query_block=qb,
        base_block=bb,
        device=qv.device,
        precision=precision,
    )
    if not q_dev:  # host queries -> host results
        D, ids = _to_host(D), _to_host(ids)
    return (D[0], ids[0]) if qv.was_1d else (D, ids)


# --------------------------------------------------------------------------- flat index
class GpuFlatIndex:
    """Vectors in device memory with exact search; the GPU twin of ``simdex._core.FlatIndex``.

    :class:`simdex.ExactIndex` (``device="cuda"``) builds one and handles ids,
    validation and saving; use that unless you need device arrays in and out.
    The saved format is the CPU one (``export_all`` returns host arrays), so an
    index saved from the GPU loads on the CPU and the reverse.

    Args:
        dim: Vector dimension.
        metric: ``"cosine"``, ``"ip"``, ``"l2"`` or ``"sql2"``.
        device: CUDA device ordinal.

    Raises:
        RuntimeError: no CUDA build, driver or device.
    """

    def __init__(self, dim: int, metric: str = "cosine", device: int = 0) -> None:
        self._mod = _require()
        self.metric = canonical_metric(metric)
        self._index = self._mod.FlatIndex(int(dim), self.metric, int(device))
        self.dim = int(dim)
        self.device = int(device)

    def add(self, vectors: Any, ids: np.ndarray, replace: bool = False) -> None:
        """Add (n, dim) vectors with n int64 ids (host); vectors may be a device array."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if is_device_array(vectors):
            v = _device_view(vectors, "vectors", self.dim, self._mod)
            if v.device != self.device:
                raise ValueError(f"vectors are on CUDA device {v.device}, the index on {self.device}")
            self._index.add_device(v.ptr, v.rows, v.ld, ids, bool(replace), stream=v.stream)
        else:
            x, _ = as_matrix(vectors, "vectors", dim=self.dim)
            self._index.add(x, ids, bool(replace))

    def remove(self, ids: np.ndarray) -> None:
        """Remove ids (all or nothing). Raises KeyError for an unknown id."""
        self._index.remove(np.ascontiguousarray(ids, dtype=np.int64))

    def search(
        self,
        queries: Any,
        k: int,
        num_threads: int = 0,
        *,
        query_block: int | None = None,
        base_block: int | None = None,
        precision: str = "fp32",
    ) -> tuple[Any, Any]:
        """k-NN of (q, dim) queries; results are the same kind of array as ``queries``.

        ``num_threads`` is accepted for parity with the CPU index and ignored; the
        other options are those of :func:`knn`.
        """
        del num_threads
        k = _check_gpu_k(k)
        qb, bb = _block(query_block, "query_block"), _block(base_block, "base_block")
        precision = _check_precision(precision)
        if is_device_array(queries):
            qv = _device_view(queries, "queries", self.dim, self._mod)
            if qv.device != self.device:
                raise ValueError(f"queries are on CUDA device {qv.device}, the index on {self.device}")
            D, d_ptr = _empty_like(qv, (qv.rows, k), np.float32)
            ids, i_ptr = _empty_like(qv, (qv.rows, k), np.int64)
            self._index.search_device(
                qv.ptr,
                qv.rows,
                qv.ld,
                k,
                d_ptr,
                i_ptr,
                query_block=qb,
                base_block=bb,
                stream=qv.stream,
                precision=precision,
            )
            return (D[0], ids[0]) if qv.was_1d else (D, ids)
        q, was_1d = as_matrix(queries, "queries", dim=self.dim)
        D, ids = self._index.search(q, k, query_block=qb, base_block=bb, precision=precision)
        return (D[0], ids[0]) if was_1d else (D, ids)

    def get_vectors(self, ids: np.ndarray) -> np.ndarray:
        """Stored vectors (host float32, (n, dim)) of int64 ids. Raises KeyError."""
        return self._index.get_vectors(np.ascontiguousarray(ids, dtype=np.int64))

    def contains(self, ids: np.ndarray) -> np.ndarray:
        """Bool array: whether each id is present."""
        return self._index.contains(np.ascontiguousarray(ids, dtype=np.int64))

    def export_all(self) -> tuple[np.ndarray, np.ndarray]:
        """All vectors (host float32 (n, dim)) and ids (host int64 (n,)) in storage order."""
        return self._index.export_all()

    def reset(self) -> None:
        """Remove everything."""
        self._index.reset()

    def __len__(self) -> int:
        return len(self._index)


# --------------------------------------------------------------------------- hashing
def _split_planes(planes_shape: tuple[int, ...], num_tables: int | None) -> tuple[int, int]:
    if len(planes_shape) == 3:
        L, K = int(planes_shape[0]), int(planes_shape[1])
        if num_tables is not None and int(num_tables) != L:
            raise ValueError(f"planes has {L} tables but num_tables={num_tables}")
    elif len(planes_shape) == 2:
        if num_tables is None:
            raise ValueError("planes of shape (L*K, d) need num_tables=L")
        L = operator.index(num_tables)
        if L < 1 or planes_shape[0] % L:
            raise ValueError(f"num_tables={L} must be >= 1 and divide the {planes_shape[0]} planes")
        K = planes_shape[0] // L
    else:
        raise ValueError(f"planes must be (L*K, d) or (L, K, d), got shape {planes_shape}")
    if not 1 <= K <= 64:
        raise ValueError(f"bits per table must be in [1, 64], got {K}")
    return L, K


def hash_reference(x: Any, planes: Any, num_tables: int | None = None) -> np.ndarray:
    """NumPy implementation of the GPU hashing rule (slow; for tests and other backends).

    Projection ``p = sum_c double(x[c]) * double(plane[c])`` accumulated in order
    c = 0, 1, ..., d-1 in float64 (each product is exact); bit j of the code of
    table t is ``p(plane[t*K + j]) > 0``, least significant bit first.

    Args:
        x: (n, d) vectors (float32; other dtypes are converted to float32 first).
        planes: (L*K, d) or (L, K, d) hyperplane normals (float32).
        num_tables: L, needed when ``planes`` is 2-D.

    Returns:
        uint64 codes of shape (n, L).
    """
    xs = np.ascontiguousarray(np.asarray(x, dtype=np.float32).reshape(len(x), -1), dtype=np.float64)
    p_arr = np.asarray(planes, dtype=np.float32)
    L, K = _split_planes(p_arr.shape, num_tables)
    P = p_arr.reshape(L * K, -1).astype(np.float64)
    acc = np.zeros((xs.shape[0], L * K), dtype=np.float64)
    for c in range(xs.shape[1]):  # in-order accumulation: the rule, not np.dot's order
        acc += xs[:, c, None] * P[None, :, c]
    bits = (acc > 0).reshape(xs.shape[0], L, K).astype(np.uint64)
    return (bits << np.arange(K, dtype=np.uint64)).sum(axis=2, dtype=np.uint64)


def hash_vectors_gpu(x: Any, planes: Any, num_tables: int | None = None) -> Any:
    """Sign-random-projection codes on the GPU.

    Bit j (LSB first) of the code of vector i in table t is 1 iff
    ``<x_i, planes[t*K + j]> > 0``. The projection is accumulated in float64 in
    dimension order (see :func:`hash_reference`), so the codes are the same bit
    for bit on every GPU and equal to :func:`hash_reference`. An implementation
    that projects in float32 (e.g. a BLAS) can differ only on bits whose
    projection is within its rounding error of zero.

    Args:
        x: (n, d) vectors: NumPy or a device array (CuPy, torch, CAI, DLPack).
        planes: (L*K, d) or (L, K, d) float32 hyperplane normals, 1 <= K <= 64.
        num_tables: L, needed when ``planes`` is 2-D.

    Returns:
        uint64 codes of shape (n, L), the same kind of array as ``x`` (torch
        input gives an int64 tensor holding the same 64 bits: torch has no uint64).
    """
    mod = _require()
    if is_device_array(x):
        xv = _device_view(x, "vectors", None, mod)
        pshape = (
            tuple(int(s) for s in np.shape(planes)) if not is_device_array(planes) else tuple(planes.shape)
        )
        L, K = _split_planes(pshape, num_tables)
        if is_device_array(planes):
            if len(pshape) == 3:
                planes = planes.reshape(L * K, pshape[2])
            pv = _device_view(planes, "planes", xv.cols, mod)
        else:
            p_host, _ = as_matrix(np.asarray(planes).reshape(L * K, -1), "planes", dim=xv.cols)
            pv = _upload_like(p_host, xv, mod)
        codes, c_ptr = _empty_like(xv, (xv.rows, L), np.uint64)
        mod.hash_vectors_device(
            xv.ptr,
            xv.rows,
            xv.ld,
            pv.ptr,
            pv.rows,
            pv.ld,
            xv.cols,
            L,
            K,
            c_ptr,
            stream=xv.stream,
            device=xv.device,
        )
        return codes[0] if xv.was_1d else codes
    xh, was_1d = as_matrix(x, "vectors")
    p_np = np.asarray(planes)
    L, K = _split_planes(p_np.shape, num_tables)
    ph, _ = as_matrix(p_np.reshape(L * K, -1), "planes", dim=xh.shape[1])
    codes = mod.hash_vectors(xh, ph, L, K)
    return codes[0] if was_1d else codes


# --------------------------------------------------------------------------- LSH tables
def _staging(x: np.ndarray) -> _Dev:
    """Upload a host float32 matrix (CuPy if installed, else a DeviceArray)."""
    try:
        import cupy  # noqa: F401

        kind = "cupy"
    except ImportError:
        kind = "simdex"
    like = _Dev(None, 0, 0, 0, 0, 0, 0, kind, False)
    return _upload_like(x, like, _require())


class GpuLSHIndex:
    """Multi-table sign-projection LSH built and queried on the GPU.

    Build: the base is hashed with the rule of :func:`hash_vectors_gpu` and each
    table's (code, row) pairs are radix-sorted (CUB), so a bucket is a range.
    Search: each query is hashed; probe 0 of a table is its code, probe p flips the
    p-th least confident bit (smallest |projection|); the union of the probed
    buckets over all tables is re-ranked exactly (duplicates removed) and the k
    best are returned, ties by smaller row. Made for large query batches.

    Args:
        base: (n, d) vectors (host or device array); copied to the index.
        planes: (L*K, d) or (L, K, d) float32 hyperplanes, 1 <= K <= 64.
        num_tables: L, needed when ``planes`` is 2-D.
        metric: ``"cosine"`` (default), ``"ip"``, ``"l2"`` or ``"sql2"`` (for re-ranking).
        ids: Optional int64 id of each base row (host array, n distinct values >= 0);
            searches then return these ids, ties broken by the smaller id, instead of
            row numbers.

    Raises:
        RuntimeError: no CUDA build, driver or device.
        ValueError: ``ids`` of the wrong length, negative or repeated.
    """

    def __init__(
        self,
        base: Any,
        planes: Any,
        num_tables: int | None = None,
        metric: str = "cosine",
        ids: Any = None,
    ) -> None:
        mod = _require()
        self.metric = canonical_metric(metric)
        if is_device_array(base):
            xv = _device_view(base, "base", None, mod)
        elif np.ndim(base) == 2 and np.shape(base)[0] == 0 and np.shape(base)[1] >= 1:
            xv = _staging(np.empty(np.shape(base), np.float32))  # empty tables: every search finds nothing
        else:
            xv = _staging(as_matrix(base, "base")[0])
        pshape = tuple(int(s) for s in (planes.shape if is_device_array(planes) else np.shape(planes)))
        L, K = _split_planes(pshape, num_tables)
        if is_device_array(planes):
            pv = _device_view(
                planes.reshape(L * K, pshape[-1]) if len(pshape) == 3 else planes, "planes", xv.cols, mod
            )
        else:
            pv = _upload_like(
                as_matrix(np.asarray(planes).reshape(L * K, -1), "planes", dim=xv.cols)[0], xv, mod
            )
        self._device = xv.device
        self._lsh = mod.LSH(
            xv.ptr,
            xv.rows,
            xv.ld,
            pv.ptr,
            pv.rows,
            pv.ld,
            xv.cols,
            L,
            K,
            self.metric,
            stream=xv.stream,
            device=xv.device,
        )
        self.dim, self.num_tables, self.bits = xv.cols, L, K
        self._ids: DeviceArray | None = None
        if ids is not None:
            ids_arr = np.asarray(ids)
            if ids_arr.dtype.kind not in "iu" or ids_arr.shape != (xv.rows,):
                raise ValueError(
                    f"ids must be {xv.rows} integers (one per base row), got {ids_arr.dtype} {ids_arr.shape}"
                )
            ids_arr = np.ascontiguousarray(ids_arr, dtype=np.int64)
            if ids_arr.size and (ids_arr.min() < 0 or np.unique(ids_arr).size != ids_arr.size):
                raise ValueError("ids must be distinct and >= 0")
            if ids_arr.size:
                self._ids = DeviceArray.from_host(ids_arr)

    def __len__(self) -> int:
        return len(self._lsh)

    def table(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """Sorted codes (uint64) of table ``t`` and the base row (int32) of each."""
        return self._lsh.table(int(t), device=self._device)

    def search(self, queries: Any, k: int = 10, num_probes: int = 1) -> tuple[Any, Any]:
        """k best candidates of each query (same contract and array kinds as :func:`knn`).

        Args:
            queries: (q, d) or (d,) host or device array.
            k: Neighbours per query, <= 1024; missing slots hold id -1, distance +inf.
            num_probes: Buckets per table, 1 <= num_probes <= min(17, bits + 1).
        """
        k = _check_gpu_k(k)
        num_probes = operator.index(num_probes)
        top = min(MAX_PROBES, self.bits + 1)
        if not 1 <= num_probes <= top:
            raise ValueError(f"num_probes must be in [1, {top}], got {num_probes}")
        mod = _require()
        on_device = is_device_array(queries)
        if on_device:
            qv = _device_view(queries, "queries", self.dim, mod)
        else:
            q, was_1d = as_matrix(queries, "queries", dim=self.dim)
            qv = _staging(q)
            qv.was_1d = was_1d
        D, d_ptr = _empty_like(qv, (qv.rows, k), np.float32)
        ids, i_ptr = _empty_like(qv, (qv.rows, k), np.int64)
        self._lsh.search_device(
            qv.ptr,
            qv.rows,
            qv.ld,
            k,
            num_probes,
            d_ptr,
            i_ptr,
            stream=qv.stream,
            device=qv.device,
            ids_ptr=int(self._ids.__cuda_array_interface__["data"][0]) if self._ids is not None else 0,
        )
        if not on_device:
            D, ids = _to_host(D), _to_host(ids)
        return (D[0], ids[0]) if qv.was_1d else (D, ids)
