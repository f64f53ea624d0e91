"""Type stubs for the C++ extension module simdex._core (private; use simdex.* instead)."""

import numpy as np
import numpy.typing as npt

def set_num_threads(n: int) -> None: ...
def get_num_threads() -> int: ...
def max_threads() -> int: ...
def _interrupt_polls() -> int: ...
def _check_rows(x: npt.NDArray[np.float32], hi: float, lo: float) -> tuple[int, int, int]: ...
def blas_info() -> str: ...
def simd_level() -> str: ...
def knn(
    queries: npt.NDArray[np.float32],
    base: npt.NDArray[np.float32],
    k: int,
    metric: str,
    num_threads: int = 0,
    query_block: int = 0,
    base_block: int = 0,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]: ...
def fp16_simd_level() -> str: ...
def _set_fp16_kernel(name: str) -> bool: ...

class _StoreAccessors:
    """Stub-only: the accessors every id-addressed store binds (cpp/bindings/common.h
    def_store_accessors), declared once for FlatIndex, LshIndex and _cuda.GpuExactIndex."""

    def remove(self, ids: npt.NDArray[np.int64]) -> None: ...
    def reset(self) -> None: ...
    def get_vectors(self, ids: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]: ...
    def contains(self, ids: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]: ...
    def export_all(self) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]: ...
    def __len__(self) -> int: ...

class FlatIndex(_StoreAccessors):
    def __init__(self, dim: int, metric: str, fp16_prefilter: bool = True) -> None: ...
    @staticmethod
    def view(
        dim: int,
        metric: str,
        vectors: npt.NDArray[np.float32],
        ids: npt.NDArray[np.int64],
        num_threads: int = 0,
    ) -> FlatIndex: ...
    @property
    def is_view(self) -> bool: ...
    @property
    def dim(self) -> int: ...
    @property
    def fp16_prefilter(self) -> bool: ...
    def prefilter_stats(self) -> dict[str, int]: ...
    def add(
        self, vectors: npt.NDArray[np.float32], ids: npt.NDArray[np.int64], replace: bool = False
    ) -> None: ...
    def search(
        self,
        queries: npt.NDArray[np.float32],
        k: int,
        num_threads: int = 0,
        query_block: int = 0,
        base_block: int = 0,
        filter_ids: npt.NDArray[np.int64] | None = None,
        filter_deny: bool = False,
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]: ...
    def range_search(
        self,
        queries: npt.NDArray[np.float32],
        radius: float,
        num_threads: int = 0,
        filter_ids: npt.NDArray[np.int64] | None = None,
        filter_deny: bool = False,
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32], npt.NDArray[np.int64]]: ...

def lsh_hash(
    x: npt.NDArray[np.float32],
    planes: npt.NDArray[np.float32],
    num_tables: int,
    hash_bits: int,
    num_threads: int = 0,
) -> npt.NDArray[np.uint64]: ...
def lsh_project_only(
    x: npt.NDArray[np.float32], planes: npt.NDArray[np.float32], num_threads: int = 0
) -> None: ...
def lsh_probe_masks(margins: npt.NDArray[np.float32], num_probes: int) -> npt.NDArray[np.uint64]: ...
def lsh_hamming(
    codes: npt.NDArray[np.uint64], q: npt.NDArray[np.uint64], rows: npt.NDArray[np.uint32] | None = None
) -> npt.NDArray[np.uint16]: ...
def popcount_kernel() -> str: ...

class LshIndex(_StoreAccessors):
    def __init__(
        self,
        dim: int,
        num_tables: int,
        hash_bits: int,
        planes: npt.NDArray[np.float32],
        metric: str,
        *,
        center: npt.NDArray[np.float32] | None = None,
        sketch_words: int = 0,
        sketch_planes: npt.NDArray[np.float32] | None = None,
        table_sketches: bool = False,
    ) -> None: ...
    def rebuild(
        self,
        num_tables: int,
        hash_bits: int,
        planes: npt.NDArray[np.float32],
        *,
        center: npt.NDArray[np.float32] | None = None,
        sketch_words: int = 0,
        sketch_planes: npt.NDArray[np.float32] | None = None,
        table_sketches: bool = False,
        num_threads: int = 0,
    ) -> None: ...
    @property
    def sketch_words(self) -> int: ...
    @property
    def table_sketches(self) -> bool: ...
    @property
    def dim(self) -> int: ...
    @property
    def num_tables(self) -> int: ...
    @property
    def hash_bits(self) -> int: ...
    def add(
        self,
        vectors: npt.NDArray[np.float32],
        ids: npt.NDArray[np.int64],
        replace: bool = False,
        num_threads: int = 0,
    ) -> None: ...
    def search(
        self,
        queries: npt.NDArray[np.float32],
        k: int,
        num_probes: int,
        num_threads: int = 0,
        refine: int = 16,
        rerank: int = 0,
        scan: bool = False,
        filter_ids: npt.NDArray[np.int64] | None = None,
        filter_deny: bool = False,
        scan_fraction: float = 1.0,
    ) -> tuple[
        npt.NDArray[np.float32], npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]
    ]: ...
    def range_search(
        self,
        queries: npt.NDArray[np.float32],
        radius: float,
        num_probes: int,
        num_threads: int = 0,
        rerank: int = 0,
        scan: bool = False,
        filter_ids: npt.NDArray[np.int64] | None = None,
        filter_deny: bool = False,
        scan_fraction: float = 1.0,
    ) -> tuple[
        npt.NDArray[np.int64], npt.NDArray[np.float32], npt.NDArray[np.int64], npt.NDArray[np.int64]
    ]: ...
    def search_exact(
        self, queries: npt.NDArray[np.float32], k: int, num_threads: int = 0
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]: ...
    def live_ids(self) -> npt.NDArray[np.int64]: ...
    def mean_unit(self) -> npt.NDArray[np.float32]: ...
    def table_stats(self, table: int) -> dict[str, float]: ...
    def memory_bytes(self) -> int: ...
