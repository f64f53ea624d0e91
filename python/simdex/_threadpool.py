"""threadpoolctl support: simdex's native thread pool as a threadpoolctl library.

After ``import simdex`` (once the native core is loaded) and with threadpoolctl
installed, ``threadpoolctl.threadpool_info()`` lists simdex's pool
(``user_api="simdex"``) and ``threadpool_limits(1)`` or
``threadpool_limits(2, user_api="simdex")`` limit it like BLAS and OpenMP pools,
so joblib, scikit-learn and Ray workers that guard against oversubscription cover
simdex too. The controller calls the extension's C entry points
``simdex_get_num_threads`` / ``simdex_set_num_threads`` through ctypes.
"""

from __future__ import annotations

from typing import Any

_registered = False


def register(version: str) -> bool:
    """Register the controller with threadpoolctl (idempotent).

    Args:
        version: simdex's version, reported by threadpoolctl.

    Returns:
        True when threadpoolctl is installed and the controller is registered.
    """
    global _registered
    if _registered:
        return True
    try:
        import threadpoolctl
    except ImportError:
        return False
    if not hasattr(threadpoolctl, "register"):  # threadpoolctl < 3.0
        return False

    class SimdexController(threadpoolctl.LibController):  # type: ignore[misc,name-defined]
        """threadpoolctl controller of simdex's native pool."""

        user_api = "simdex"
        internal_api = "simdex"
        filename_prefixes = ("_core",)
        check_symbols = ("simdex_get_num_threads", "simdex_set_num_threads")

        def get_num_threads(self) -> int:
            return int(self.dynlib.simdex_get_num_threads())

        def set_num_threads(self, num_threads: int) -> Any:
            return self.dynlib.simdex_set_num_threads(int(num_threads))

        def get_version(self) -> str:
            return version

        def set_additional_attributes(self) -> None:
            pass

    threadpoolctl.register(SimdexController)
    _registered = True
    return True
