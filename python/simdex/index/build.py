"""Build facts of the native core, for bug reports and benchmark logs."""

from __future__ import annotations

import platform
from typing import Any

from simdex._runtime import __version__, core

__all__ = ["build_info"]


def build_info() -> dict[str, Any]:
    """Versions and build facts, for bug reports and benchmark logs.

    Returns:
        A dict with the simdex version, the BLAS (and the CPU kernel it picked), the
        SIMD level of the top-k filter, thread count, and whether CUDA support was
        built.
    """
    from simdex.index.gpu.availability import cuda_available

    c = core()
    return {
        "simdex": __version__,
        "blas": c.blas_info(),
        "simd": c.simd_level(),
        "num_threads": c.get_num_threads(),
        "cuda_available": cuda_available(),
        "machine": platform.machine(),
        "python": platform.python_version(),
    }
