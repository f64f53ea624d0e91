"""Loading of the native core, the package version and process-wide runtime settings."""

from __future__ import annotations

import ctypes
import os
from functools import cache
from importlib import metadata
from types import ModuleType

try:
    __version__: str = metadata.version("simdex")  # one source: pyproject.toml
except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"


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
