"""Tests for simdex.export: ONNX export/inference and the TensorRT paths.

No TensorRT backend exists on the test machines (TensorFlow from PyPI is built
without TensorRT, onnxruntime here is the CPU build, the ``tensorrt`` package is
not installed), so the TensorRT tests check detection, backend choice and the
error paths with the detection functions monkeypatched; they never run TensorRT.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
keras = pytest.importorskip("keras")
pytest.importorskip("tf2onnx")
ort = pytest.importorskip("onnxruntime")

import simdex  # noqa: E402
from simdex import embeddings  # noqa: E402
from simdex import export as X  # noqa: E402
from simdex.index import io as _io  # noqa: E402


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return embeddings.small_cnn((12, 12, 1), embedding_dim=8, filters=(4, 8))


@pytest.fixture(scope="module")
def onnx_path(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    assert simdex.export_onnx(model, path) == str(path)
    return path


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).random((70, 12, 12, 1)).astype(np.float32)


# -- ONNX export and inference ----------------------------------------------------------


def test_onnx_matches_keras(model, onnx_path, images):
    onnx = simdex.OnnxEmbedder(onnx_path)
    assert onnx.input_shape == (12, 12, 1) and onnx.dim == 8
    assert isinstance(onnx, embeddings.Embedder)
    ref = embeddings.embed(model, images)
    for batch_size in (1, 32, 256):
        out = onnx.embed(images, batch_size=batch_size)
        assert out.dtype == np.float32 and out.shape == (70, 8)
        assert np.abs(out - ref).max() <= 1e-5


def test_onnx_backbone_matches_keras(tmp_path):
    keras.utils.set_random_seed(0)
    backbone = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), alpha=0.35, classes=5)
    emb = embeddings.from_backbone(backbone, embedding_dim=16)
    simdex.export_onnx(emb, tmp_path / "mnv2.onnx", opset=13)
    x = np.random.default_rng(0).random((5, 32, 32, 3)).astype(np.float32)
    out = simdex.OnnxEmbedder(tmp_path / "mnv2.onnx").embed(x)
    assert np.abs(out - embeddings.embed(emb, x)).max() <= 1e-5


def test_onnx_embedder_from_bytes_and_streaming(onnx_path, images):
    data = onnx_path.read_bytes()
    onnx = simdex.OnnxEmbedder(data)
    assert onnx.path is None and onnx.model_bytes == data
    one_shot = onnx.embed(images)
    np.testing.assert_allclose(onnx.embed([images[:30], images[30:]], batch_size=7), one_shot, atol=1e-6)
    np.testing.assert_allclose(onnx(images[..., 0]), one_shot, atol=1e-6)
    assert onnx.embed(np.zeros((0, 12, 12, 1))).shape == (0, 8)


def test_fixed_batch_graph_is_padded(onnx_path, model, images):
    onnx = pytest.importorskip("onnx")
    proto = onnx.load(str(onnx_path))
    dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    dim.ClearField("dim_param")
    dim.dim_value = 4  # as if exported with a fixed batch of 4
    fixed = simdex.OnnxEmbedder(proto.SerializeToString())
    out = fixed.embed(images[:10], batch_size=256)  # runs 4 + 4 + (2 padded to 4)
    assert out.shape == (10, 8)
    assert np.abs(out - embeddings.embed(model, images[:10])).max() <= 1e-5


def test_default_providers_prefer_accelerators():
    assert X._default_providers(["AzureExecutionProvider", "CPUExecutionProvider"]) == [
        "CPUExecutionProvider"
    ]
    assert X._default_providers(
        ["CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"]
    ) == [
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    onnx_default = X._default_providers(ort.get_available_providers())
    assert onnx_default[-1] == "CPUExecutionProvider"


@pytest.mark.parametrize(
    ("x", "exc", "match"),
    [
        (np.zeros((2, 12, 13, 1)), ValueError, "axis 2"),
        (np.zeros((2, 12, 12, 3)), ValueError, "axis 3"),
        (np.zeros(5), ValueError, "shape"),
        (np.full((1, 12, 12, 1), np.inf), ValueError, "NaN or infinite"),
        (np.array(["x"] * 3), TypeError, "numeric"),
        (np.zeros((1, 12, 12, 1), dtype=complex), TypeError, "real"),
        (None, TypeError, "array"),
    ],
)
def test_onnx_embedder_bad_inputs(onnx_path, x, exc, match):
    with pytest.raises(exc, match=match):
        simdex.OnnxEmbedder(onnx_path).embed(x)


def test_onnx_embedder_bad_construction(onnx_path, tmp_path):
    with pytest.raises(FileNotFoundError):
        simdex.OnnxEmbedder(tmp_path / "missing.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"definitely not protobuf" * 10)
    with pytest.raises(ValueError, match="not a valid ONNX model"):
        simdex.OnnxEmbedder(garbage)
    with pytest.raises(ValueError, match="not available"):
        simdex.OnnxEmbedder(onnx_path, providers=["NoSuchExecutionProvider"])
    with pytest.raises(TypeError):
        simdex.OnnxEmbedder(12345)
    with pytest.raises(ValueError, match="batch_size"):
        simdex.OnnxEmbedder(onnx_path).embed(np.zeros((1, 12, 12, 1)), batch_size=0)


def test_export_bad_arguments(model, tmp_path):
    with pytest.raises(ValueError, match="opset"):
        simdex.export_onnx(model, tmp_path / "a.onnx", opset=99)
    with pytest.raises(TypeError, match="opset"):
        simdex.export_onnx(model, tmp_path / "a.onnx", opset="15")
    with pytest.raises(ValueError, match="directory"):
        simdex.export_onnx(model, tmp_path)
    with pytest.raises(TypeError, match="keras.Model"):
        simdex.export_onnx(object(), tmp_path / "a.onnx")
    with pytest.raises(FileNotFoundError):
        simdex.export_onnx(model, tmp_path / "no" / "such" / "dir.onnx")
    assert not (tmp_path / "a.onnx").exists()


def test_failed_conversion_keeps_old_file(model, tmp_path, monkeypatch):
    import tf2onnx

    target = tmp_path / "model.onnx"
    target.write_bytes(b"previous export")

    def broken(*args, **kwargs):
        raise Exception("Unsupported ops: Counter({'FancyOp': 1})")

    monkeypatch.setattr(tf2onnx.convert, "from_function", broken)
    with pytest.raises(RuntimeError, match="could not convert"):
        simdex.export_onnx(model, target)
    assert target.read_bytes() == b"previous export"


def test_failed_write_keeps_old_file(model, tmp_path, monkeypatch):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"previous export")
    real_writer = _io.atomic_writer

    class HalfDisk:
        """Writes half of the data to the real temporary file, then fails."""

        def __init__(self, f):
            self.f = f

        def write(self, data):
            self.f.write(data[: len(data) // 2])
            raise OSError(28, "No space left on device")

    def failing_writer(path):
        class _Ctx:
            def __enter__(self):
                self.cm = real_writer(path)
                return HalfDisk(self.cm.__enter__())

            def __exit__(self, *exc):
                return self.cm.__exit__(*exc)

        return _Ctx()

    monkeypatch.setattr(X, "atomic_writer", failing_writer)
    with pytest.raises(OSError, match="No space"):
        simdex.export_onnx(model, target)
    assert target.read_bytes() == b"previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # no temp file left


# -- TensorRT ---------------------------------------------------------------------------


def test_detection_reflects_this_machine():
    tf = pytest.importorskip("tensorflow")
    built_with_trt = bool(tf.sysconfig.get_build_info().get("is_tensorrt_build", False))
    if not built_with_trt:
        assert X.tf_trt_available() is False
    assert X.onnxruntime_trt_available() == ("TensorrtExecutionProvider" in ort.get_available_providers())
    assert X.tensorrt_package_available() == (importlib.util.find_spec("tensorrt") is not None)
    expected = [
        name
        for name, ok in [
            ("tf-trt", X.tf_trt_available()),
            ("onnxruntime-trt", X.onnxruntime_trt_available()),
            ("tensorrt", X.tensorrt_package_available()),
        ]
        if ok
    ]
    assert X.tensorrt_backends() == expected


def _fake_backends(monkeypatch, tf_trt=False, ort_trt=False, package=False):
    monkeypatch.setattr(X, "tf_trt_available", lambda: tf_trt)
    monkeypatch.setattr(X, "onnxruntime_trt_available", lambda: ort_trt)
    monkeypatch.setattr(X, "tensorrt_package_available", lambda: package)
    calls = []
    for name, fn in [("tf-trt", "_convert_tf_trt"), ("onnxruntime-trt", "_convert_ort_trt"),
                     ("tensorrt", "_convert_tensorrt_engine")]:  # fmt: skip
        monkeypatch.setattr(
            X,
            fn,
            lambda m, p, prec, cal, mb, name=name: (
                calls.append((name, p, prec)) or X.TensorRTResult(p, name, prec, None)
            ),
        )
    return calls


def test_no_backend_raises_clear_error(model, tmp_path, monkeypatch):
    _fake_backends(monkeypatch)
    with pytest.raises(X.TensorRTUnavailableError) as info:
        simdex.convert_tensorrt(model, tmp_path / "m.trt")
    assert isinstance(info.value, RuntimeError)
    msg = str(info.value)
    for needle in (
        "without TensorRT",
        "TensorrtExecutionProvider",
        "'tensorrt' package",
        "export_onnx",
        "OnnxEmbedder",
    ):
        assert needle in msg
    assert not (tmp_path / "m.trt").exists()


def test_requested_backend_missing(model, tmp_path, monkeypatch):
    _fake_backends(monkeypatch, package=True)
    with pytest.raises(
        X.TensorRTUnavailableError, match="'tf-trt' TensorRT backend.*available here: tensorrt"
    ):
        simdex.convert_tensorrt(model, tmp_path / "m", backend="tf-trt")


@pytest.mark.parametrize(
    ("present", "expected"),
    [
        ({"tf_trt": True, "ort_trt": True, "package": True}, "tf-trt"),
        ({"ort_trt": True, "package": True}, "onnxruntime-trt"),
        ({"package": True}, "tensorrt"),
    ],
)
def test_backend_order(model, tmp_path, monkeypatch, present, expected):
    calls = _fake_backends(monkeypatch, **present)
    result = simdex.convert_tensorrt(model, tmp_path / "m", precision="fp32")
    assert calls == [(expected, str(tmp_path / "m"), "fp32")]
    assert result.backend == expected


def test_int8_needs_calibration_and_tf_trt(model, tmp_path, monkeypatch):
    calls = _fake_backends(monkeypatch, ort_trt=True, package=True)
    with pytest.raises(ValueError, match="calibration_data"):
        simdex.convert_tensorrt(model, tmp_path / "m", precision="int8")
    calib = np.zeros((4, 12, 12, 1), np.float32)
    with pytest.raises(ValueError, match="only supported through 'tf-trt'"):
        simdex.convert_tensorrt(
            model, tmp_path / "m", precision="int8", calibration_data=calib, backend="tensorrt"
        )
    with pytest.raises(X.TensorRTUnavailableError, match="'tf-trt'"):
        simdex.convert_tensorrt(model, tmp_path / "m", precision="int8", calibration_data=calib)
    assert calls == []


def test_convert_tensorrt_bad_arguments(model, tmp_path):
    with pytest.raises(ValueError, match="precision"):
        simdex.convert_tensorrt(model, tmp_path / "m", precision="fp8")
    with pytest.raises(ValueError, match="backend"):
        simdex.convert_tensorrt(model, tmp_path / "m", backend="tvm")
    with pytest.raises(ValueError, match="batch_size"):
        simdex.convert_tensorrt(model, tmp_path / "m", max_batch_size=0)
    with pytest.raises(TypeError, match="keras.Model"):
        simdex.convert_tensorrt("model", tmp_path / "m")


def test_ort_trt_provider_options():
    providers = X._ort_trt_provider_options("fp16", "/cache")
    name, options = providers[0]
    assert name == "TensorrtExecutionProvider"
    assert options == {
        "trt_fp16_enable": True,
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": "/cache",
    }
    assert providers[1:] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert X._ort_trt_provider_options("fp32", "/c")[0][1]["trt_fp16_enable"] is False
