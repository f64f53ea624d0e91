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


@cache
def core() -> ModuleType:
    """Return the C++ extension module ``simdex._core``, loading its BLAS first.

    The extension links the OpenBLAS shipped by the ``scipy-openblas32`` wheel.
    Its RPATH points there already; preloading it by full path as well makes the
    import work from unusual layouts (editable installs, relocated venvs).
    """
    try:
        import scipy_openblas32

        lib = os.path.join(scipy_openblas32.get_lib_dir(), scipy_openblas32.get_library(fullname=True))
        ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)
    except (ImportError, OSError):  # pragma: no cover - falls through to the real import error
        pass
    try:
        from simdex import _core
    except ImportError as e:  # pragma: no cover - broken installation
        raise ImportError(
            "the simdex native extension could not be loaded; reinstall with "
            "`pip install --force-reinstall simdex` (and make sure scipy-openblas32 is installed): "
            f"{e}"
        ) from e
    return _core


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
