"""CPU arrays from other libraries reach the native code without copies (issue 14, item 9)."""

from __future__ import annotations

import numpy as np
import pytest

import simdex
from simdex._validate import as_matrix


class DLPackOnly:
    """A producer that offers only the DLPack protocol (like a framework tensor)."""

    def __init__(self, a: np.ndarray) -> None:
        self._a = a

    def __dlpack__(self, **kwargs):
        return self._a.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._a.__dlpack_device__()


class InterfaceOnly:
    """A producer that offers only ``__array_interface__``."""

    def __init__(self, a: np.ndarray) -> None:
        self._a = a
        self.__array_interface__ = a.__array_interface__


@pytest.mark.parametrize("wrap", [DLPackOnly, InterfaceOnly])
def test_zero_copy_for_contiguous_float32(wrap):
    a = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    out, _ = as_matrix(wrap(a), "x")
    assert np.shares_memory(out, a)
    index = simdex.ExactIndex(4)
    index.add(wrap(a))
    D, I = index.search(wrap(a), k=1)
    assert I[:, 0].tolist() == [0, 1, 2, 3, 4]
    lims, _, _ = index.range_search(wrap(a), 1e-5)
    assert lims.tolist() == [0, 1, 2, 3, 4, 5]


def test_non_contiguous_or_float64_producers_are_converted():
    a = np.random.default_rng(0).standard_normal((4, 6))  # float64
    out, _ = as_matrix(DLPackOnly(a), "x")
    assert out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_allclose(out, a.astype(np.float32))
    t = np.asfortranarray(a.astype(np.float32))
    out, _ = as_matrix(DLPackOnly(t), "x")
    np.testing.assert_array_equal(out, t)


def test_torch_cpu_tensors_when_installed():
    torch = pytest.importorskip("torch")
    t = torch.randn(6, 4)
    out, _ = as_matrix(t, "x")
    assert out.__array_interface__["data"][0] == t.data_ptr()
    grad = torch.randn(3, 4, requires_grad=True)
    np.testing.assert_array_equal(as_matrix(grad, "x")[0], grad.detach().numpy())
