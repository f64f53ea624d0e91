"""The Python layer of simdex.gpu against a stand-in for simdex._cuda (runs anywhere).

The stand-in runs the CPU core on "device" pointers that are really host addresses,
so the array plumbing (pointers, row strides, 1-D queries, output kinds, validation)
is tested without a GPU. The kernels themselves are tested in test_gpu.py.
"""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

import simdex
from conftest import random_vectors
from simdex import gpu
from simdex._runtime import core
from simdex.index.gpu import availability


def _view(ptr, rows, cols, ld, dtype=np.float32):
    """(rows, cols) array over the memory at ptr with a row stride of ld elements."""
    item = np.dtype(dtype).itemsize
    size = (rows - 1) * ld + cols if rows else 0
    buf = (ctypes.c_char * (size * item)).from_address(ptr)
    flat = np.frombuffer(buf, dtype=dtype, count=size)
    return np.lib.stride_tricks.as_strided(flat, shape=(rows, cols), strides=(ld * item, item))


class _FakeDeviceArray:
    def __init__(self, shape, typestr):
        self.shape = tuple(shape)
        self.typestr = typestr
        self._buf = np.zeros(self.shape, dtype=np.dtype(typestr))
        self.device_id = 0

    @property
    def __cuda_array_interface__(self):
        return {
            "shape": self.shape,
            "typestr": self.typestr,
            "data": (self._buf.ctypes.data, False),
            "strides": None,
            "version": 3,
        }

    def upload(self, b):
        self._buf.reshape(-1).view(np.uint8)[:] = np.asarray(b).reshape(-1).view(np.uint8)

    def download(self, b):
        b[:] = self._buf.reshape(-1).view(np.uint8)


class _FakeFlatIndex:
    def __init__(self, dim, metric, device=0):
        self._cpu = core().FlatIndex(dim, metric)
        self.dim = dim

    def __len__(self):
        return len(self._cpu)

    def add(self, x, ids, replace=False):
        self._cpu.add(x, ids, replace)

    def add_device(self, ptr, n, ld, ids, replace=False, stream=0):
        self._cpu.add(np.ascontiguousarray(_view(ptr, n, self.dim, ld)), ids, replace)

    def search(self, q, k, num_threads=0, query_block=0, base_block=0, precision="fp32"):
        return self._cpu.search(q, k)

    def search_device(
        self, q_ptr, nq, ld, k, d_ptr, i_ptr, query_block=0, base_block=0, stream=0, precision="fp32"
    ):
        D, ids = self._cpu.search(np.ascontiguousarray(_view(q_ptr, nq, self.dim, ld)), k)
        _view(d_ptr, nq, k, k)[:] = D
        _view(i_ptr, nq, k, k, np.int64)[:] = ids

    def __getattr__(self, name):  # remove, reset, get_vectors, contains, export_all
        return getattr(self._cpu, name)


class _FakeLSH:
    """Records the build; 'searches' by brute force (the plumbing is what is tested)."""

    def __init__(
        self, x_ptr, n, x_ld, p_ptr, num_planes, p_ld, d, num_tables, bits, metric, stream=0, device=0
    ):
        self.x = np.array(_view(x_ptr, n, d, x_ld))
        self.planes = np.array(_view(p_ptr, num_planes, d, p_ld))
        self.num_tables, self.bits, self.metric, self.dim = num_tables, bits, metric, d

    def __len__(self):
        return self.x.shape[0]

    def search_device(self, q_ptr, nq, ld, k, num_probes, d_ptr, i_ptr, stream=0, device=0, ids_ptr=0):
        D, ids = core().knn(np.ascontiguousarray(_view(q_ptr, nq, self.dim, ld)), self.x, k, self.metric)
        if ids_ptr:  # row numbers -> the ids the caller uploaded
            row_ids = _view(ids_ptr, 1, len(self.x), len(self.x), np.int64)[0]
            ids = np.where(ids >= 0, row_ids[np.maximum(ids, 0)], -1)
        _view(d_ptr, nq, k, k)[:] = D
        _view(i_ptr, nq, k, k, np.int64)[:] = ids


class FakeCuda:
    GpuLSHIndex = _FakeLSH
    MAX_K = 1024
    CUDA_RUNTIME_VERSION = 13000
    DeviceArray = _FakeDeviceArray
    GpuExactIndex = _FakeFlatIndex
    calls: list

    def __init__(self):
        self.calls = []

    @staticmethod
    def device_count():
        return 1

    @staticmethod
    def no_device_reason():
        return ""

    @staticmethod
    def device_description(device=0):
        return "fake device"

    @staticmethod
    def pointer_device(ptr):
        return 0

    @staticmethod
    def count_nonfinite_device(ptr, rows, cols, ld, stream=0, device=0):
        return int((~np.isfinite(_view(ptr, rows, cols, ld))).sum())

    def knn(self, q, x, k, metric, query_block=0, base_block=0, device=0, precision="fp32"):
        self.calls.append(("knn", q.shape, x.shape))
        return core().knn(q, x, k, metric)

    def knn_device(
        self,
        q_ptr,
        nq,
        q_ld,
        x_ptr,
        nb,
        x_ld,
        d,
        k,
        metric,
        d_ptr,
        i_ptr,
        stream=0,
        query_block=0,
        base_block=0,
        device=0,
        precision="fp32",
    ):
        self.calls.append(("knn_device", nq, q_ld, nb, x_ld, d))
        q = np.ascontiguousarray(_view(q_ptr, nq, d, q_ld))
        x = np.ascontiguousarray(_view(x_ptr, nb, d, x_ld))
        D, ids = core().knn(q, x, k, metric)
        _view(d_ptr, nq, k, k)[:] = D
        _view(i_ptr, nq, k, k, np.int64)[:] = ids

    def hash_vectors(self, x, planes, num_tables, bits, device=0):
        return gpu.hash_reference(x, planes, num_tables)

    def hash_vectors_device(
        self, x_ptr, n, x_ld, p_ptr, num_planes, p_ld, d, num_tables, bits, codes_ptr, stream=0, device=0
    ):
        codes = gpu.hash_reference(_view(x_ptr, n, d, x_ld), _view(p_ptr, num_planes, d, p_ld), num_tables)
        _view(codes_ptr, n, num_tables, num_tables, np.uint64)[:] = codes


@pytest.fixture()
def fake(monkeypatch):
    f = FakeCuda()
    monkeypatch.setattr(availability, "cuda_module", lambda: (f, ""))
    return f


_data = random_vectors


def test_host_arrays_take_the_host_entry_point(fake):
    q, x = _data(5, 8, 0), _data(50, 8, 1)
    D, ids = gpu.knn(q, x, k=3, metric="l2")
    assert fake.calls[-1][0] == "knn" and isinstance(D, np.ndarray)
    np.testing.assert_array_equal(ids, simdex.knn(q, x, k=3, metric="l2")[1])
    D1, I1 = gpu.knn(q[0].astype(np.float64), x, k=3, metric="l2")
    assert D1.shape == (3,)
    np.testing.assert_array_equal(I1, ids[0])


def test_device_arrays_are_passed_by_pointer_and_come_back_as_device_arrays(fake):
    q, x = _data(6, 12, 2), _data(40, 12, 3)
    qd, xd = gpu.DeviceArray.from_host(q), gpu.DeviceArray.from_host(x)
    D, ids = gpu.knn(qd, xd, k=4, metric="cosine")
    name, nq, q_ld, nb, x_ld, d = fake.calls[-1]
    assert (name, nq, q_ld, nb, x_ld, d) == ("knn_device", 6, 12, 40, 12, 12)
    assert isinstance(D, gpu.DeviceArray) and isinstance(ids, gpu.DeviceArray)
    Dr, Ir = simdex.knn(q, x, k=4, metric="cosine")
    np.testing.assert_array_equal(ids.get(), Ir)
    np.testing.assert_allclose(D.get(), Dr, atol=1e-6)
    # Mixed: host queries with device base -> host results; 1-D device query -> 1-D result.
    D2, I2 = gpu.knn(q, xd, k=4, metric="cosine")
    assert isinstance(I2, np.ndarray)
    np.testing.assert_array_equal(I2, Ir)
    D3, I3 = gpu.knn(gpu.DeviceArray.from_host(q[2]), xd, k=4, metric="cosine")
    assert I3.shape == (4,)
    np.testing.assert_array_equal(I3.get(), Ir[2])


def test_device_input_validation(fake):
    x = _data(10, 4, 4)
    bad = x.copy()
    bad[1, 2] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        gpu.knn(gpu.DeviceArray.from_host(bad), gpu.DeviceArray.from_host(x), k=1)
    with pytest.raises(ValueError, match="dimension"):
        gpu.knn(gpu.DeviceArray.from_host(x), gpu.DeviceArray.from_host(_data(10, 5, 5)), k=1)
    with pytest.raises(TypeError, match="CuPy"):  # int64 on the device needs CuPy to convert
        gpu.knn(gpu.DeviceArray.from_host(np.ones((2, 4), np.int64)), gpu.DeviceArray.from_host(x), k=1)


def test_hash_glue_host_and_device(fake):
    x, planes = _data(30, 10, 6), _data(4 * 5, 10, 7)
    ref = gpu.hash_reference(x, planes, num_tables=4)
    np.testing.assert_array_equal(gpu.hash_vectors_gpu(x, planes, num_tables=4), ref)
    np.testing.assert_array_equal(gpu.hash_vectors_gpu(x, planes.reshape(4, 5, 10)), ref)
    codes = gpu.hash_vectors_gpu(gpu.DeviceArray.from_host(x), planes, num_tables=4)
    assert isinstance(codes, gpu.DeviceArray) and codes.dtype == np.uint64
    np.testing.assert_array_equal(codes.get(), ref)


def test_exact_index_on_cuda_goes_through_gpu_flat_index(fake, tmp_path):
    x = _data(100, 6, 8)
    index = simdex.ExactIndex(6, metric="ip", device="cuda")
    assert isinstance(index._store, gpu.GpuExactIndex)
    index.add(x)
    index.remove([3])
    D, ids = index.search(x[:4], k=2)
    assert ids[0, 0] == 0 and 3 not in ids[:, 0]
    index.save(tmp_path / "g.simdex")
    cpu = simdex.load_index(tmp_path / "g.simdex")
    np.testing.assert_array_equal(cpu.search(x[:4], k=2)[1], ids)
    # Device queries on the GPU store directly: device results.
    store = index._store
    Dd, Id = store.search(gpu.DeviceArray.from_host(x[:4]), 2)
    np.testing.assert_array_equal(Id.get(), ids)
    store.add(gpu.DeviceArray.from_host(x[:2] * 3), np.array([500, 501]))
    assert len(store) == 101
    np.testing.assert_array_equal(store.get_vectors(np.array([501])), x[1:2] * 3)


def test_lsh_glue(fake):
    x, planes = _data(60, 8, 9), _data(3 * 4, 8, 10)
    lsh = gpu.GpuLSHIndex(x, planes.reshape(3, 4, 8), metric="l2")
    assert (lsh.num_tables, lsh.hash_bits, len(lsh)) == (3, 4, 60)
    np.testing.assert_array_equal(lsh._lsh.x, x)
    np.testing.assert_array_equal(lsh._lsh.planes, planes)
    D, ids = lsh.search(x[:5], k=2, num_probes=5)
    assert isinstance(ids, np.ndarray) and (ids[:, 0] == np.arange(5)).all()
    Dd, Id = lsh.search(gpu.DeviceArray.from_host(x[:5]), k=2)
    assert isinstance(Id, gpu.DeviceArray)
    np.testing.assert_array_equal(Id.get(), ids)
    with pytest.raises(ValueError, match=r"num_probes must be in \[1, 5\]"):
        lsh.search(x[:5], k=2, num_probes=6)
