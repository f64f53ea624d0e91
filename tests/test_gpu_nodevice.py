"""GPU path on a machine without a usable GPU: clean detection and clear errors.

These run everywhere (CI has no GPU). Where a device *is* present the checks that
need its absence are skipped; tests/test_gpu.py covers that case.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import simdex
from simdex import gpu
from simdex.index.gpu import availability

_cuda, _ = (
    availability.cuda_module()
)  # simdex._cuda (None without nvcc), or the CPU emulator (SIMDEX_CUDA_EMULATOR)

HAS_DEVICE = _cuda is not None and _cuda.device_count() > 0
no_device_only = pytest.mark.skipif(HAS_DEVICE, reason="a CUDA device is present")


def test_cuda_available_is_a_bool_and_never_raises():
    assert isinstance(simdex.cuda_available(), bool)
    assert simdex.cuda_available() == (gpu.no_cuda_reason() == "")


@no_device_only
def test_cuda_available_false_without_device():
    assert simdex.cuda_available() is False
    reason = gpu.no_cuda_reason()
    assert reason
    assert any(w in reason for w in ("built without CUDA", "driver", "device"))


@no_device_only
@pytest.mark.parametrize(
    "call",
    [
        lambda x: simdex.knn(x, x, k=2, device="cuda"),
        lambda x: simdex.ExactIndex(4, device="cuda"),
        lambda x: simdex.LSHIndex(4, device="cuda"),
        lambda x: gpu.knn(x, x, k=2),
        lambda x: gpu.GpuExactIndex(4),
        lambda x: gpu.hash_vectors_gpu(x, np.ones((8, 4), np.float32), num_tables=2),
        lambda x: gpu.device_info(),
        lambda x: gpu.GpuLSHIndex(x, np.ones((8, 4), np.float32), num_tables=2),
        lambda x: gpu.to_device(x),
    ],
    ids=[
        "simdex.knn",
        "ExactIndex",
        "LSHIndex",
        "gpu.knn",
        "GpuExactIndex",
        "hash_vectors_gpu",
        "device_info",
        "GpuLSHIndex",
        "to_device",
    ],
)
def test_device_cuda_raises_clear_runtime_error(call):
    x = np.eye(4, dtype=np.float32)
    with pytest.raises(
        RuntimeError, match=r"device='cuda' is not available: .*(built without CUDA|driver|device)"
    ):
        call(x)


@no_device_only
def test_load_index_on_cuda_without_device(tmp_path):
    index = simdex.ExactIndex(3)
    index.add(np.eye(3))
    index.save(tmp_path / "i.simdex")
    with pytest.raises(RuntimeError, match="not available"):
        simdex.load_index(tmp_path / "i.simdex", device="cuda")
    assert len(simdex.load_index(tmp_path / "i.simdex")) == 3


def test_bad_arguments_are_checked_before_the_device():
    # Argument errors win over "no device", so they read the same everywhere.
    x = np.eye(4, dtype=np.float32)
    with pytest.raises(ValueError, match="larger than the GPU top-k"):
        gpu.knn(x, x, k=gpu.MAX_K + 1)
    with pytest.raises(ValueError, match="unknown metric"):
        gpu.knn(x, x, k=1, metric="hamming")
    with pytest.raises(ValueError, match="query_block"):
        gpu.knn(x, x, k=1, query_block=0)
    with pytest.raises(ValueError, match="unknown precision"):
        gpu.knn(x, x, k=1, precision="fp16")


def test_import_simdex_needs_no_driver():
    code = "import simdex; print(simdex.cuda_available())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() in ("True", "False")


def test_cuda_module_imports_and_reports_no_device():
    if _cuda is None:
        pytest.skip("simdex built without CUDA (no simdex._cuda)")
    assert _cuda.MAX_K == gpu.MAX_K
    assert _cuda.CUDA_RUNTIME_VERSION >= 11000
    if HAS_DEVICE:
        pytest.skip("a CUDA device is present")
    assert _cuda.device_count() == 0
    assert _cuda.no_device_reason()
    x = np.eye(4, dtype=np.float32)
    with pytest.raises(RuntimeError, match="no usable CUDA device"):
        _cuda.knn(x, x, 2, "cosine")
    with pytest.raises(RuntimeError, match="cannot create a GPU index"):
        _cuda.GpuExactIndex(4, "cosine")
    with pytest.raises(ValueError, match="unknown metric"):
        _cuda.GpuExactIndex(4, "nope")


# ---------------------------------------------------------------- the hashing rule (NumPy only)
def test_hash_reference_bit_order_by_hand():
    # Plane j of each table is the unit vector e_j: bit j is set iff x[j] > 0.
    planes = np.vstack([np.eye(4), -np.eye(4)]).astype(np.float32)  # table 0: +e_j, table 1: -e_j
    x = np.array([[1, -1, 2, 0], [0, 0, 0, 0], [-3, 5, 5, -1]], dtype=np.float32)
    codes = gpu.hash_reference(x, planes, num_tables=2)
    assert codes.dtype == np.uint64 and codes.shape == (3, 2)
    assert codes.tolist() == [[0b0101, 0b0010], [0, 0], [0b0110, 0b1001]]
    # (L, K, d) planes give the same codes.
    assert np.array_equal(gpu.hash_reference(x, planes.reshape(2, 4, 4)), codes)


def test_hash_reference_matches_float64_signs_away_from_zero():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 37)).astype(np.float32)
    planes = rng.normal(size=(3 * 64, 37)).astype(np.float32)
    codes = gpu.hash_reference(x, planes, num_tables=3)
    proj = x.astype(np.float64) @ planes.astype(np.float64).T
    bits = ((codes[:, :, None] >> np.arange(64, dtype=np.uint64)) & np.uint64(1)).reshape(200, -1)
    scale = np.abs(x).astype(np.float64) @ np.abs(planes).astype(np.float64).T
    clear = np.abs(proj) > 1e-12 * scale
    assert clear.mean() > 0.99
    assert np.array_equal(bits[clear].astype(bool), (proj > 0)[clear])


def test_hash_reference_rejects_bad_shapes():
    x = np.ones((2, 4), np.float32)
    with pytest.raises(ValueError, match="num_tables"):
        gpu.hash_reference(x, np.ones((8, 4), np.float32))
    with pytest.raises(ValueError, match="divide"):
        gpu.hash_reference(x, np.ones((8, 4), np.float32), num_tables=3)
    with pytest.raises(ValueError, match=r"\[1, 64\]"):
        gpu.hash_reference(x, np.ones((65, 4), np.float32), num_tables=1)


def test_emulator_folder_without_module_is_reported(tmp_path):
    mod, why = availability.emulator_module(str(tmp_path))
    assert mod is None
    assert gpu.EMULATOR_ENV in why and str(tmp_path) in why
