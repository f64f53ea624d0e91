"""Hostile files (issue 17, items 7 and 9): every loader validates before it allocates.

Files here carry a *valid* checksum (see ``_filefuzz.forge``), so they reach the
validation behind the integrity check. Every refusal must be a
:class:`simdex.CorruptFileError` that chains its cause; allocations proportional to a
claimed size are caught with ``tracemalloc`` (NumPy reports its buffers to it) or, for
native/TensorFlow memory, by the peak RSS of a child process.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pytest

import simdex
from _filefuzz import container, forge, parse

CorruptFileError = simdex.CorruptFileError


def _lsh_file(dim=8, tables=4, bits=6, n=5, **params) -> bytes:
    rng = np.random.default_rng(0)
    planes = rng.standard_normal((tables * bits, dim), dtype=np.float32)
    p = {
        "dim": dim,
        "metric": "cosine",
        "next_id": n,
        "num_tables": tables,
        "hash_bits": bits,
        "num_probes": 2,
        "seed": 0,
        "refine": 16,
        **params,
    }
    return container(
        "LSHIndex",
        p,
        {
            "vectors": rng.standard_normal((n, dim)).astype(np.float32),
            "ids": np.arange(n, dtype=np.int64),
            "planes": planes,
        },
    )


def _exact_file(vectors=None, ids=None, **params) -> bytes:
    v = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32) if vectors is None else vectors
    i = np.arange(len(v), dtype=np.int64) if ids is None else ids
    p = {
        "dim": v.shape[1],
        "metric": "cosine",
        "next_id": int(i.max()) + 1 if len(i) else 0,
        "fp16_prefilter": True,
        **params,
    }
    return container("ExactIndex", p, {"vectors": v, "ids": i})


def _write(tmp_path, data: bytes, name="f.simdex"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _refused(path, loader=simdex.load_index):
    with pytest.raises(CorruptFileError) as info:
        loader(path)
    return info.value


# --------------------------------------------------------------------------- sizes first
def test_lsh_claimed_tables_refused_before_allocating(tmp_path):
    # 3 KB claiming dim=2000, 512 tables x 64 bits: planes would be 262 MB.
    data = _lsh_file(dim=2000, n=0, tables=1, bits=1)
    _, kind, meta, payload = parse(data)
    meta["params"].update(num_tables=512, hash_bits=64)
    path = _write(tmp_path, forge(kind, meta, payload))
    tracemalloc.start()
    try:
        _refused(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20, f"{peak / 2**20:.0f} MiB allocated before refusing"


def test_lsh_huge_dim_refused_not_memoryerror(tmp_path):
    data = _lsh_file(dim=8, n=0)
    _, kind, meta, payload = parse(data)
    meta["params"].update(dim=10**6, num_tables=4096, hash_bits=64)
    _refused(_write(tmp_path, forge(kind, meta, payload)))


def test_nested_json_is_corruption_with_cause(tmp_path):
    meta = {"params": {"dim": 4, "metric": "cosine", "x": None}, "arrays": []}
    raw = json.dumps(meta).encode().replace(b"null", b"[" * 100000 + b"]" * 100000)
    err = _refused(_write(tmp_path, forge("ExactIndex", raw, b"")))
    assert err.__cause__ is not None


def test_overflowing_number_is_corruption(tmp_path):
    _, kind, meta, payload = parse(_exact_file())
    raw = json.dumps(meta).encode().replace(b'"dim": 4', b'"dim": 1e999')
    _refused(_write(tmp_path, forge(kind, raw, payload)))


def test_nan_rows_are_corruption(tmp_path):
    v = np.ones((3, 4), np.float32)
    v[1, 2] = np.nan
    _refused(_write(tmp_path, _exact_file(vectors=v)))
    _, kind, meta, payload = parse(_lsh_file())
    payload = bytearray(payload)
    payload[0:4] = np.float32(np.inf).tobytes()  # first vector component
    _refused(_write(tmp_path, forge(kind, meta, bytes(payload)), "l.simdex"))


def test_next_id_below_stored_ids_is_corruption(tmp_path):
    _refused(_write(tmp_path, _exact_file(next_id=2)))
    _refused(_write(tmp_path, _exact_file(next_id=-1), "b.simdex"))


def test_unbounded_lsh_params_are_corruption(tmp_path):
    _refused(_write(tmp_path, _lsh_file(num_probes=2**63)))
    _refused(_write(tmp_path, _lsh_file(refine=-3), "b.simdex"))
    _refused(_write(tmp_path, _lsh_file(seed=-1), "c.simdex"))


def test_overlapping_or_negative_arrays_are_corruption(tmp_path):
    # distinct positive floats: read as int64 they are distinct valid-looking ids
    vectors = np.arange(1, 21, dtype=np.float32).reshape(5, 4)
    _, kind, meta, payload = parse(_exact_file(vectors=vectors, next_id=2**62))
    ids_spec = next(s for s in meta["arrays"] if s["name"] == "ids")
    vec_spec = next(s for s in meta["arrays"] if s["name"] == "vectors")
    ids_spec["offset"] = vec_spec["offset"]  # ids read the vectors' bytes
    _refused(_write(tmp_path, forge(kind, meta, payload)))
    _, kind, meta, payload = parse(_exact_file())
    spec = next(s for s in meta["arrays"] if s["name"] == "vectors")
    spec["shape"], spec["nbytes"] = [-1, 4], -16
    _refused(_write(tmp_path, forge(kind, meta, payload), "b.simdex"))


def test_lying_header_lengths(tmp_path):
    _, kind, meta, payload = parse(_exact_file())
    for i, (kl, ml) in enumerate([(2**32 - 1, None), (None, 2**64 - 1), (None, 0)]):
        _refused(_write(tmp_path, forge(kind, meta, payload, kind_len=kl, meta_len=ml), f"{i}.simdex"))


def test_bad_utf8_and_wrong_types(tmp_path):
    _, kind, meta, payload = parse(_exact_file())
    raw = json.dumps(meta).encode().replace(b'"cosine"', b'"cos\xffine"')
    _refused(_write(tmp_path, forge(kind, raw, payload)))
    for i, bad in enumerate(
        [[], {"params": []}, {"params": {}, "arrays": {}}, {"params": {}, "arrays": [[]]}]
    ):
        _refused(_write(tmp_path, forge(kind, bad, payload), f"{i}.simdex"))
    meta2 = json.loads(json.dumps(meta))
    meta2["params"]["fp16_prefilter"] = "yes"
    _refused(_write(tmp_path, forge(kind, meta2, payload), "t.simdex"))


# --------------------------------------------------------------------------- not a file
_CHILD = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
import simdex
try:
    simdex.load_index(sys.argv[1])
except simdex.CorruptFileError as e:
    print("CorruptFileError", e)
except BaseException as e:
    print("OTHER", type(e).__name__, e)
"""


@pytest.mark.parametrize("what", ["devzero", "fifo", "directory"])
def test_non_regular_files_refused_without_reading(tmp_path, what):
    if what == "devzero":
        path = "/dev/zero"
    elif what == "fifo":
        path = str(tmp_path / "pipe")
        os.mkfifo(path)
    else:
        path = str(tmp_path)
    try:
        out = subprocess.run([sys.executable, "-c", _CHILD, path], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"load_index({what}) blocked")
    assert out.stdout.startswith("CorruptFileError"), out.stdout + out.stderr


# --------------------------------------------------------------------------- finder / ONNX
def _finder_file(onnx_bytes: bytes | None = None, labels: str = "[]") -> bytes:
    arrays = {"index_file": np.frombuffer(_exact_file(), np.uint8)}
    if onnx_bytes is not None:
        arrays["onnx_model"] = np.frombuffer(onnx_bytes, np.uint8)
    return container("NearDuplicateFinder", {"format": 1, "batch_size": 4, "labels": labels}, arrays)


def _embed(x):
    return np.ones((len(x), 4), np.float32) / 2


def test_finder_nested_labels_is_corruption(tmp_path):
    from simdex.neardup import NearDuplicateFinder

    path = _write(tmp_path, _finder_file(labels="[" * 100000 + "]" * 100000))
    with pytest.raises(CorruptFileError):
        NearDuplicateFinder.load(path, embedder=_embed)


def test_finder_onnx_external_data_is_corruption(tmp_path, monkeypatch):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    from simdex.neardup import NearDuplicateFinder

    secret = np.arange(16, dtype=np.float32)
    (tmp_path / "secret.bin").write_bytes(secret.tobytes())
    w = TensorProto()
    w.name, w.data_type = "w", TensorProto.FLOAT
    w.dims.extend([4, 4])
    w.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "secret.bin"), ("offset", "0"), ("length", "64")):
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])],
        initializer=[w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = _write(tmp_path, _finder_file(onnx.ModelProto.SerializeToString(model)), "finder.simdex")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CorruptFileError, match="external"):
        NearDuplicateFinder.load(path)
    # and the embedder class itself, given the bytes directly
    with pytest.raises(ValueError, match="external"):
        simdex.OnnxEmbedder(onnx.ModelProto.SerializeToString(model))


# --------------------------------------------------------------------------- saving
_KILL_DURING_SAVE = """
import os, signal, sys
import numpy as np, simdex
index = simdex.ExactIndex(8)
index.add(np.ones((1000, 8), np.float32))
real = os.fsync
def die(fd):
    os.kill(os.getpid(), signal.SIGKILL)
os.fsync = die
index.save(sys.argv[1])
"""


def test_killed_save_leftovers_removed_by_next_save(tmp_path):
    target = tmp_path / "idx.simdex"
    index = simdex.ExactIndex(8)
    index.add(np.zeros((3, 8), np.float32) + 1)
    index.save(target)
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", _KILL_DURING_SAVE, str(target)], timeout=60)
        assert out.returncode == -signal.SIGKILL
    # a killed save leaves its temporary file (a later save removes it: here the
    # second killed save already removed the first one's)
    assert len(os.listdir(tmp_path)) >= 2
    assert len(simdex.load_index(target)) == 3  # the killed saves did not touch the target
    index.save(target)
    assert os.listdir(tmp_path) == ["idx.simdex"]


def test_save_follows_umask_and_keeps_mode(tmp_path):
    index = simdex.ExactIndex(4)
    index.add(np.ones((2, 4), np.float32))
    old = os.umask(0o022)
    try:
        index.save(tmp_path / "a.simdex")
        assert stat.S_IMODE(os.stat(tmp_path / "a.simdex").st_mode) == 0o644
        os.umask(0o077)
        index.save(tmp_path / "b.simdex")
        assert stat.S_IMODE(os.stat(tmp_path / "b.simdex").st_mode) == 0o600
        os.chmod(tmp_path / "a.simdex", 0o640)
        index.save(tmp_path / "a.simdex")  # an existing file keeps its mode
        assert stat.S_IMODE(os.stat(tmp_path / "a.simdex").st_mode) == 0o640
    finally:
        os.umask(old)


def test_save_through_symlink_writes_its_target(tmp_path):
    real = tmp_path / "real.simdex"
    link = tmp_path / "link.simdex"
    index = simdex.ExactIndex(4)
    index.add(np.ones((2, 4), np.float32))
    index.save(real)
    link.symlink_to(real.name)
    index.add(np.ones((1, 4), np.float32))
    index.save(link)
    assert link.is_symlink()
    assert len(simdex.load_index(real)) == 3


# --------------------------------------------------------------------------- models (TensorFlow)
_MODEL_CHILD = """
import json, resource, sys
resource.setrlimit(resource.RLIMIT_DATA, (6 << 30, 6 << 30))
import numpy as np, simdex, keras
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    simdex.load_model(sys.argv[1])
    print("LOADED")
except simdex.CorruptFileError as e:
    grew = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    print("CorruptFileError grew_mib=%d" % grew, e)
except BaseException as e:
    print("OTHER", type(e).__name__, str(e)[:300])
"""


def _tiny_model_file(tmp_path) -> bytes:
    keras = pytest.importorskip("keras")
    from simdex.models import SimilarityModel

    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(3, name="emb")(inputs)
    model = SimilarityModel(inputs, outputs)
    model.index(np.eye(4, dtype=np.float32), y=np.arange(4))
    path = tmp_path / "m.simdex"
    model.save(path)
    return path.read_bytes()


def _set_units(obj, units):
    if isinstance(obj, dict):
        if obj.get("class_name") == "Dense":
            obj["config"]["units"] = units
        for v in obj.values():
            _set_units(v, units)
    elif isinstance(obj, list):
        for v in obj:
            _set_units(v, units)


@pytest.mark.slow
def test_model_claiming_huge_layer_refused_cheaply(tmp_path):
    _, kind, meta, payload = parse(_tiny_model_file(tmp_path))
    _set_units(meta["params"]["architecture"], 10**8)
    path = _write(tmp_path, forge(kind, meta, payload), "huge.simdex")
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_MODEL_CHILD), str(path)],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    line = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr[-500:]
    assert line.startswith("CorruptFileError"), line
    assert int(line.split("grew_mib=")[1].split()[0]) < 200, line


@pytest.mark.slow
def test_model_wrong_typed_fields_are_corruption(tmp_path):
    _, kind, meta, payload = parse(_tiny_model_file(tmp_path))
    bad_fields = [
        ("collection", []),
        ("collection", {"index": {"kind": "ExactIndex", "dim": 3}, "labels": [], "data": {}}),
        ("calibration", {"x": 1}),
        ("architecture", {"class_name": 5}),
        ("weights", [{"dtype": "|O", "shape": [4, 3]}, {"dtype": "<f4", "shape": [3]}]),
        ("weights", [{"dtype": "<f4", "shape": [4, 4]}, {"dtype": "<f4", "shape": [3]}]),
        ("distance", "manhattan"),
    ]
    for i, (key, value) in enumerate(bad_fields):
        m = json.loads(json.dumps(meta))
        m["params"][key] = value
        path = _write(tmp_path, forge(kind, m, payload), f"{i}.simdex")
        with pytest.raises(CorruptFileError):
            simdex.load_model(path)


def _format1_model_file(tmp_path, weights_h5: bytes | None = None) -> tuple[dict, bytes]:
    """A model file as simdex 0.1 wrote it (format 1: Keras HDF5 weights inside)."""
    keras = pytest.importorskip("keras")
    from simdex.models import SimilarityModel

    inputs = keras.Input((4,))
    model = SimilarityModel(inputs, keras.layers.Dense(3, name="emb")(inputs))
    model.save_weights(tmp_path / "w.weights.h5")
    architecture = keras.saving.serialize_keras_object(model)
    architecture.pop("compile_config", None)
    params = {"format": 1, "architecture": architecture, "distance": "cosine", "index_spec": "exact"}
    return params, (tmp_path / "w.weights.h5").read_bytes()


@pytest.mark.slow
def test_model_weights_with_external_hdf5_data_are_corruption(tmp_path):
    h5py = pytest.importorskip("h5py")
    params, weights = _format1_model_file(tmp_path)
    ok = {
        "weights": np.frombuffer(weights, np.uint8),
        "item_ids": np.zeros(0, np.int64),
        "labels": np.zeros(0, np.int64),
    }
    simdex.load_model(_write(tmp_path, container("SimilarityModel", params, ok), "ok.simdex"))  # loads
    (tmp_path / "secret.bin").write_bytes(np.arange(4, dtype=np.float32).tobytes())
    for how in ["external_storage", "external_link"]:
        h5 = tmp_path / f"{how}.h5"
        h5.write_bytes(weights)
        with h5py.File(h5, "a") as f:
            if how == "external_storage":
                f.create_dataset(
                    "stolen", shape=(4,), dtype="f4", external=[(str(tmp_path / "secret.bin"), 0, 16)]
                )
            else:
                f["stolen"] = h5py.ExternalLink(str(tmp_path / "other.h5"), "/x")
        arrays = {**ok, "weights": np.frombuffer(h5.read_bytes(), np.uint8)}
        path = _write(tmp_path, container("SimilarityModel", params, arrays), f"{how}.simdex")
        with pytest.raises(CorruptFileError, match="external"):
            simdex.load_model(path)


_KILL_MODEL_SAVE = """
import os, signal, sys
import numpy as np, keras, simdex
from simdex.models import SimilarityModel
inputs = keras.Input((4,))
model = SimilarityModel(inputs, keras.layers.Dense(3)(inputs))
model.index(np.eye(4, dtype=np.float32), y=np.arange(4))
def die(fd):
    os.kill(os.getpid(), signal.SIGKILL)
os.fsync = die
model.save(sys.argv[1])
"""


@pytest.mark.slow
def test_killed_model_save_leaves_nothing_after_the_next_save(tmp_path):
    keras = pytest.importorskip("keras")
    from simdex.models import SimilarityModel

    target = tmp_path / "m.simdex"
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run([sys.executable, "-c", _KILL_MODEL_SAVE, str(target)], env=env, timeout=240)
    assert out.returncode == -signal.SIGKILL
    assert os.listdir(tmp_path)  # the killed save left its temporaries
    inputs = keras.Input((4,))
    model = SimilarityModel(inputs, keras.layers.Dense(3)(inputs))
    model.index(np.eye(4, dtype=np.float32), y=np.arange(4))
    model.save(target)
    assert os.listdir(tmp_path) == ["m.simdex"]
