"""Whether the GPU path can run here: the CUDA module (or its CPU emulator) and a device.

Importing this module never needs a GPU: :func:`cuda_available` says whether the
GPU path can run, and :func:`require_cuda` raises a :class:`RuntimeError` saying
why not (built without CUDA, no driver, no device).
"""

from __future__ import annotations

import os
from functools import cache
from types import ModuleType

__all__ = ["EMULATOR_ENV", "cuda_available", "cuda_module", "device_info", "no_cuda_reason", "require_cuda"]

EMULATOR_ENV = "SIMDEX_CUDA_EMULATOR"


def emulator_module(folder: str) -> tuple[ModuleType | None, str]:
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
def cuda_module() -> tuple[ModuleType | None, str]:
    emulator = os.environ.get(EMULATOR_ENV)
    if emulator:
        return emulator_module(emulator)
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
    mod, why = cuda_module()
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


def require_cuda() -> ModuleType:
    """The CUDA module, or a ``RuntimeError`` saying why the GPU path cannot run."""
    why = no_cuda_reason()
    if why:
        raise RuntimeError(f"device='cuda' is not available: {why}. Use device='cpu'.")
    mod, _ = cuda_module()
    assert mod is not None
    return mod


def device_info(device: int = 0) -> str:
    """Name, compute capability, memory and SM count of CUDA device ``device``."""
    return str(require_cuda().device_description(int(device)))
