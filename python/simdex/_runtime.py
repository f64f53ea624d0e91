"""Loading of the native core and process-wide runtime settings."""

from __future__ import annotations

import ctypes
import os
import platform
from functools import cache
from types import ModuleType
from typing import Any


def _preload_scipy_openblas() -> bool:
    """Load the OpenBLAS of the ``scipy-openblas32`` wheel globally; False if absent."""
    try:
        import scipy_openblas32

        lib = os.path.join(scipy_openblas32.get_lib_dir(), scipy_openblas32.get_library(fullname=True))
        ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)
    except (ImportError, OSError):
        return False
    return True


@cache
def core() -> ModuleType:
    """Return the C++ extension module ``simdex._core``.

    Installed packages carry their own copy of the BLAS next to ``_core`` (found via
    its RPATH). A build with ``-DSIMDEX_BUNDLE_BLAS=OFF`` links the OpenBLAS of the
    ``scipy-openblas32`` wheel instead; if the plain import cannot find it (editable
    installs, relocated venvs), it is preloaded from there by full path and the import
    retried.
    """
    try:
        from simdex import _core
    except ImportError as first:
        if not _preload_scipy_openblas():
            raise ImportError(_BROKEN_INSTALL.format(first)) from first
        try:
            from simdex import _core
        except ImportError as e:  # pragma: no cover - broken installation
            raise ImportError(_BROKEN_INSTALL.format(e)) from e
    return _core


_BROKEN_INSTALL = (
    "the simdex native extension could not be loaded; reinstall with "
    "`pip install --force-reinstall simdex`: {}"
)


def set_num_threads(n: int) -> None:
    """Set the number of threads simdex's native code uses by default.

    Args:
        n: Thread count; ``0`` or a negative value restores the default (the CPUs
            this process may run on).
    """
    core().set_num_threads(int(n))


def get_num_threads() -> int:
    """Number of threads simdex's native code uses by default."""
    return int(core().get_num_threads())


def build_info() -> dict[str, Any]:
    """Versions and build facts, for bug reports and benchmark logs.

    Returns:
        A dict with the simdex version, the BLAS (and the CPU kernel it picked), the
        SIMD level of the top-k filter, thread count, and whether CUDA support was
        built.
    """
    from simdex import __version__

    c = core()
    try:
        from simdex.gpu import cuda_available

        cuda = cuda_available()
    except ImportError:
        cuda = False
    return {
        "simdex": __version__,
        "blas": c.blas_info(),
        "simd": c.simd_level(),
        "num_threads": c.get_num_threads(),
        "cuda_available": cuda,
        "machine": platform.machine(),
        "python": platform.python_version(),
    }
