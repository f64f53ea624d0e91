# Type stubs for the CUDA extension simdex._cuda (cuda/bindings/module.cpp).
# Pointers are ints (device addresses), strides are in elements, streams are
# cudaStream_t handles as ints (0: the legacy default stream).
import numpy as np
import numpy.typing as npt

from simdex._core import _StoreAccessors

MAX_K: int
MAX_PROBES: int
CUDA_RUNTIME_VERSION: int

def device_count() -> int: ...
def no_device_reason() -> str: ...
def pointer_device(ptr: int) -> int: ...
def device_description(device: int = 0) -> str: ...
def knn(
    queries: npt.NDArray[np.float32],
    base: npt.NDArray[np.float32],
    k: int,
    metric: str,
    query_block: int = 0,
    base_block: int = 0,
    device: int = 0,
    precision: str = "fp32",
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]: ...
def knn_device(
    q_ptr: int,
    nq: int,
    q_ld: int,
    x_ptr: int,
    nb: int,
    x_ld: int,
    d: int,
    k: int,
    metric: str,
    out_d_ptr: int,
    out_i_ptr: int,
    stream: int = 0,
    query_block: int = 0,
    base_block: int = 0,
    device: int = 0,
    precision: str = "fp32",
) -> None: ...
def count_nonfinite_device(
    x_ptr: int, rows: int, cols: int, ld: int, stream: int = 0, device: int = 0
) -> int: ...
def hash_vectors(
    vectors: npt.NDArray[np.float32],
    planes: npt.NDArray[np.float32],
    num_tables: int,
    hash_bits: int,
    device: int = 0,
) -> npt.NDArray[np.uint64]: ...
def hash_vectors_device(
    x_ptr: int,
    n: int,
    x_ld: int,
    planes_ptr: int,
    num_planes: int,
    p_ld: int,
    d: int,
    num_tables: int,
    hash_bits: int,
    codes_ptr: int,
    stream: int = 0,
    device: int = 0,
) -> None: ...

class DeviceArray:
    def __init__(self, shape: list[int], typestr: str) -> None: ...
    @property
    def shape(self) -> tuple[int, ...]: ...
    @property
    def typestr(self) -> str: ...
    @property
    def device_id(self) -> int: ...
    @property
    def __cuda_array_interface__(self) -> dict[str, object]: ...
    def upload(self, b: npt.NDArray[np.uint8]) -> None: ...
    def download(self, b: npt.NDArray[np.uint8]) -> None: ...

class GpuLSHIndex:
    def __init__(
        self,
        x_ptr: int,
        n: int,
        x_ld: int,
        planes_ptr: int,
        num_planes: int,
        p_ld: int,
        d: int,
        num_tables: int,
        hash_bits: int,
        metric: str,
        stream: int = 0,
        device: int = 0,
    ) -> None: ...
    def __len__(self) -> int: ...
    @property
    def dim(self) -> int: ...
    @property
    def num_tables(self) -> int: ...
    @property
    def hash_bits(self) -> int: ...
    @property
    def bits(self) -> int: ...
    def search_device(
        self,
        q_ptr: int,
        nq: int,
        ld: int,
        k: int,
        num_probes: int,
        out_d_ptr: int,
        out_i_ptr: int,
        stream: int = 0,
        device: int = 0,
        ids_ptr: int = 0,
    ) -> None: ...
    def table(self, t: int, device: int = 0) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.int32]]: ...

class GpuExactIndex(_StoreAccessors):
    def __init__(self, dim: int, metric: str, device: int = 0) -> None: ...
    @property
    def dim(self) -> int: ...
    @property
    def device(self) -> int: ...
    def add(
        self, vectors: npt.NDArray[np.float32], ids: npt.NDArray[np.int64], replace: bool = False
    ) -> None: ...
    def add_device(
        self, x_ptr: int, n: int, ld: int, ids: npt.NDArray[np.int64], replace: bool = False, stream: int = 0
    ) -> None: ...
    def search(
        self,
        queries: npt.NDArray[np.float32],
        k: int,
        num_threads: int = 0,
        query_block: int = 0,
        base_block: int = 0,
        precision: str = "fp32",
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]: ...
    def search_device(
        self,
        q_ptr: int,
        nq: int,
        ld: int,
        k: int,
        out_d_ptr: int,
        out_i_ptr: int,
        query_block: int = 0,
        base_block: int = 0,
        stream: int = 0,
        precision: str = "fp32",
    ) -> None: ...

LSH = GpuLSHIndex  # the name before 0.2
FlatIndex = GpuExactIndex  # the name before 0.2
