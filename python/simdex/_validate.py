"""Input checks shared by every layer of simdex (the ground floor: NumPy and simdex._runtime).

One function per kind of check, so a bad argument gets the same message whether it
reaches the exact index, LSH, the GPU backend, a loss or a metric:

* :func:`check_int` / :func:`check_positive_int` / :func:`check_k` /
  :func:`check_num_threads`: integer arguments.
* :func:`canonical_metric` and :data:`METRICS`: metric names and their aliases.
* :func:`check_device`: ``"cpu"`` or ``"cuda"``.
* :func:`check_shape` / :func:`as_matrix`: (n, d) vectors (shape, dtype, NaN/inf).
* :func:`as_ids` / :func:`lookup_ids`: integer ids.
* :func:`as_labels` and :data:`MISSING_LABEL`: integer class labels.

Distances are always "smaller is closer":

============  ===============================================  ==================
metric        distance                                          aliases
============  ===============================================  ==================
``"cosine"``  ``1 - cos(q, x)`` in [0, 2]                       ``"cos"``
``"ip"``      ``-<q, x>`` (so the largest product comes first)  ``"dot"``, ``"inner_product"``
``"l2"``      ``|q - x|`` (Euclidean)                           ``"euclidean"``
``"sql2"``    ``|q - x|^2``                                     ``"squared_l2"``, ``"sqeuclidean"``
============  ===============================================  ==================
"""

from __future__ import annotations

import math
import operator
from typing import Any

import numpy as np

from simdex._runtime import core

__all__ = [
    "METRICS",
    "DEVICES",
    "MISSING_LABEL",
    "canonical_metric",
    "check_int",
    "check_positive_int",
    "check_positive_number",
    "check_k",
    "check_num_threads",
    "optional_positive_int",
    "check_device",
    "check_shape",
    "as_matrix",
    "as_ids",
    "lookup_ids",
    "as_labels",
]

METRICS: tuple[str, ...] = ("cosine", "ip", "l2", "sql2")
METRIC_ALIASES: dict[str, str] = {
    "cosine": "cosine",
    "cos": "cosine",
    "ip": "ip",
    "dot": "ip",
    "inner_product": "ip",
    "l2": "l2",
    "euclidean": "l2",
    "sql2": "sql2",
    "squared_l2": "sql2",
    "sqeuclidean": "sql2",
}
DEVICES: tuple[str, ...] = ("cpu", "cuda")
MAX_ID = 2**63 - 2  # the largest id; 2**63 - 1 is the native "no result" marker
_TINY = 2.0**-60  # smallest largest-|component| of a nonzero row (squares stay normal float32)
MISSING_LABEL = -1  # the label of an item indexed without one, and of a missing neighbour (id -1)


# --------------------------------------------------------------------------- scalars
def canonical_metric(metric: str, name: str = "metric") -> str:
    """Return the canonical metric name for ``metric`` (see the module docstring).

    Args:
        metric: A metric name or alias, any case.
        name: The argument's name, for error messages (losses call it ``distance``).
    """
    if not isinstance(metric, str):
        raise TypeError(f"{name} must be a string, got {type(metric).__name__}")
    try:
        return METRIC_ALIASES[metric.lower()]
    except KeyError:
        raise ValueError(f"unknown {name} {metric!r}; expected one of {', '.join(METRICS)}") from None


def check_int(value: Any, name: str, low: int | None = None, high: int | None = None) -> int:
    """Validate an integer argument in ``[low, high]`` (either bound may be None).

    Python and NumPy integers pass; bools, floats and strings raise ``TypeError``.

    Raises:
        TypeError: not an integer.
        ValueError: out of range (the message gives the bounds and the value).
    """
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer, got bool")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}") from None
    if (low is not None and value < low) or (high is not None and value > high):
        if low is not None and high is not None:
            raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
        bound = f">= {low}" if low is not None else f"<= {high}"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return int(value)


def check_positive_int(value: Any, name: str) -> int:
    """Validate a positive integer argument (``dim``, ``batch_size``...)."""
    return check_int(value, name, 1)


def check_positive_number(value: Any, name: str, allow_zero: bool = False) -> float:
    """Validate a finite real number > 0 (or >= 0 with ``allow_zero``): margins, scales, temperatures."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'} and finite, got {value}")
    return value


def check_k(k: Any) -> int:
    """Validate ``k`` (a positive integer)."""
    return check_int(k, "k", 1)


def optional_positive_int(value: Any, name: str) -> int:
    """``None`` (meaning "the default", returned as 0 for the native code) or an integer >= 1."""
    if value is None:
        return 0
    try:
        return check_int(value, name, 1)
    except ValueError:
        raise ValueError(f"{name} must be >= 1 or None, got {value}") from None


def check_num_threads(num_threads: Any) -> int:
    """A thread count: None (the default, returned as 0) or an integer >= 1."""
    return optional_positive_int(num_threads, "num_threads")


def check_device(device: str) -> str:
    """Validate a device name (``"cpu"`` or ``"cuda"``)."""
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; expected 'cpu' or 'cuda'")
    return device


# --------------------------------------------------------------------------- arrays
def check_shape(shape: tuple[int, ...], name: str, dim: int | None = None) -> tuple[int, int, bool]:
    """Check the shape of a matrix argument: (n, d) or one (d,) vector, n >= 1, d >= 1.

    Returns:
        ``(rows, cols, was_1d)``.

    Raises:
        ValueError: wrong number of dimensions, no rows, d == 0, or d != ``dim``.
    """
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


_DLPACK_CPU = 1  # kDLCPU in DLPack's DLDeviceType


def from_dlpack(x: Any) -> np.ndarray:
    """A NumPy view of a CPU DLPack producer (PyTorch, JAX, ...), without a copy.

    Device tensors and producers NumPy cannot view (a tensor that requires grad,
    an unsupported dtype) go through ``np.asarray`` instead, which copies or raises
    a clear error.
    """
    try:
        on_cpu = x.__dlpack_device__()[0] == _DLPACK_CPU
    except Exception:  # no or broken __dlpack_device__
        on_cpu = False
    if on_cpu:
        try:
            return np.from_dlpack(x)
        except (TypeError, RuntimeError, BufferError, ValueError):
            if hasattr(x, "detach"):  # a PyTorch tensor that requires grad
                try:
                    return np.from_dlpack(x.detach())
                except (TypeError, RuntimeError, BufferError, ValueError):
                    pass
    return np.asarray(x)


def as_matrix(x: Any, name: str, dim: int | None = None) -> tuple[np.ndarray, bool]:
    """Convert ``x`` to a C-contiguous float32 matrix, checking everything.

    Accepts NumPy arrays (any memory order), sequences, objects with
    ``__array_interface__`` / ``__array__``, CPU DLPack producers (PyTorch CPU
    tensors, JAX CPU arrays: viewed without a copy when C-contiguous float32) and GPU
    arrays that offer ``.get()`` (CuPy), which are copied to the host.

    Args:
        x: (n, d) or (d,) numbers.
        name: The argument's name, for error messages.
        dim: The expected d, or None.

    Returns:
        ``(array, was_1d)``; a 1-D input becomes one row.

    Raises:
        TypeError: non-numeric dtype (strings, objects, complex, bool).
        ValueError: wrong number of dimensions, wrong d, no rows, NaN or infinity,
            a row whose float32 squares overflow or underflow (see the README conventions).
    """
    if hasattr(x, "__cuda_array_interface__") and hasattr(x, "get"):
        x = x.get()  # CuPy array -> NumPy for the CPU path
    arr = from_dlpack(x) if not isinstance(x, np.ndarray) and hasattr(x, "__dlpack__") else np.asarray(x)
    if arr.dtype.kind not in "fiu":
        raise TypeError(
            f"{name} must hold real numbers (float32, float64 or integers), got dtype {arr.dtype}"
        )
    _, _, was_1d = check_shape(arr.shape, name, dim)
    if was_1d:
        arr = arr.reshape(1, -1)
    with np.errstate(over="ignore", invalid="ignore"):  # reported just below, with the position
        out = np.ascontiguousarray(arr, dtype=np.float32)
    # Magnitude rule (README "Conventions"): computing in float32, a row's squares and
    # products must neither overflow nor underflow. The largest |component| of each
    # nonzero row must lie in [_TINY, sqrt(FLT_MAX / (4 d))]; NaN/inf fail too. One
    # native pass (no temporaries, one GIL release at most).
    hi = float(np.sqrt(np.finfo(np.float32).max / (4.0 * arr.shape[1])))
    row, code, zero_rows = core()._check_rows(out, hi, _TINY)
    if code == 2:
        col = int(np.argmax(~np.isfinite(out[row])))
        what = "NaN" if np.isnan(out[row, col]) else "infinity"
        extra = " (a float64 value out of float32 range becomes infinity)" if arr.dtype != np.float32 else ""
        raise ValueError(f"{name} contains {what} at row {row}, column {col}{extra}")
    if code == 1:
        raise ValueError(
            f"{name} row {row} has a component of magnitude {float(np.abs(out[row]).max()):.3g}; simdex "
            f"computes in float32 and accepts |values| <= {hi:.3g} for dimension {arr.shape[1]} (larger "
            "squares overflow): scale the data down"
        )
    if code == 0 and zero_rows and arr.dtype.kind == "f" and arr.dtype.itemsize > 4:
        zero = np.flatnonzero(~out.any(axis=1))  # float64 rows float32 flushed to zero?
        lost = zero[np.abs(arr[zero]).max(axis=1) > 0]
        if lost.size:
            row, code = int(lost[0]), 3
    if code == 3:
        m = float(np.abs(arr[row]).max())
        raise ValueError(
            f"{name} row {row} is nonzero but its largest |component| is {m:.3g} < {_TINY:.3g}: its "
            "float32 squares underflow, so its direction and norm would be lost; scale the data up "
            "or set the row to zero"
        )
    return out, was_1d


def as_ids(ids: Any, n: int, name: str = "ids") -> np.ndarray:
    """Convert ``ids`` to a 1-D int64 array of length ``n`` of non-negative integers."""
    arr = np.asarray(ids)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.size == 0 and arr.dtype.kind == "f":
        arr = arr.astype(np.int64)  # [] is float64 to NumPy
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must be integers, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.shape[0] != n:
        raise ValueError(f"got {n} vectors but {arr.shape[0]} {name}")
    if arr.dtype.kind == "u" and arr.size and arr.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{name} must fit in int64, got {int(arr.max())}")
    out = np.ascontiguousarray(arr, dtype=np.int64)
    if out.size and out.min() < 0:
        raise ValueError(f"{name} must be >= 0 (-1 marks a missing neighbour), got {int(out.min())}")
    if out.size and out.max() > MAX_ID:
        raise ValueError(f"{name} must be <= 2**63 - 2 (2**63 - 1 is reserved), got {int(out.max())}")
    return out


def lookup_ids(ids: Any) -> tuple[np.ndarray, bool]:
    """Ids to look up (any shape, flattened) as int64, and whether ``ids`` was a scalar."""
    arr = np.asarray(ids)
    scalar = arr.ndim == 0
    if arr.size == 0 and arr.dtype.kind == "f":
        arr = arr.astype(np.int64)  # [] is float64 to NumPy
    if arr.dtype.kind not in "iu":
        raise TypeError(f"ids must be integers, got dtype {arr.dtype}")
    if arr.dtype.kind == "u" and arr.size and arr.max() > np.iinfo(np.int64).max:
        raise ValueError(f"ids must fit in int64, got {int(arr.max())}")
    return np.ascontiguousarray(arr.reshape(-1), dtype=np.int64), scalar


def as_labels(
    y: Any, name: str = "y", *, ndim: int = 1, n: int | None = None, column_ok: bool = False
) -> np.ndarray:
    """Integer class labels as int64, checked.

    Integers, bools and integral floats are accepted; anything else is a ``TypeError``.

    Args:
        y: The labels.
        name: The argument's name, for error messages.
        ndim: Required number of dimensions (1 for per-example labels, 2 for
            neighbour labels).
        n: Required length of the first axis, or None.
        column_ok: Also accept an (n, 1) column where ``ndim == 1``.

    Raises:
        TypeError: not integer labels.
        ValueError: wrong shape.
    """
    arr = np.asarray(y)
    if column_ok and ndim == 1 and arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.dtype.kind not in "iubf":
        raise TypeError(f"{name} must hold integer labels, got dtype {arr.dtype}")
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D integer labels, got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"x has {n} examples but {name} has {arr.shape[0]} labels")
    if arr.dtype.kind == "f" and not (np.all(np.isfinite(arr)) and np.all(arr == np.round(arr))):
        raise TypeError(f"{name} must hold integer labels, got non-integral floats")
    return arr.astype(np.int64, copy=False)
