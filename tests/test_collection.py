"""Collection (index + labels + data) and the public index state hooks: nesting without temp files."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import simdex
from simdex.index import Index
from simdex.index.collection import Collection
from simdex.index.io import CorruptFileError


def _vectors(n: int, d: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


@pytest.mark.parametrize(
    "make", [lambda: simdex.ExactIndex(8, "l2"), lambda: simdex.LSHIndex(8, 4, 3, seed=5)]
)
def test_index_state_round_trip(make):
    index = make()
    x = _vectors(50)
    index.add(x, ids=np.arange(100, 150))
    index.remove([101, 120])
    params, arrays = index.state()
    assert params["kind"] == index.kind and set(arrays) >= {"vectors", "ids"}
    back = Index.from_state(params, arrays)
    assert type(back) is type(index) and back.metric == index.metric and len(back) == 48
    np.testing.assert_array_equal(np.sort(back.ids), np.sort(index.ids))
    q = _vectors(5, seed=1)
    np.testing.assert_array_equal(back.search(q, 4)[1], index.search(q, 4)[1])
    assert back.add(x[:1])[0] == 150  # the id counter travels too


def test_index_from_state_rejects_bad_state():
    params, arrays = simdex.ExactIndex(4).state()
    with pytest.raises(CorruptFileError, match="not an index"):
        Index.from_state({**params, "kind": "Nope"}, arrays)
    with pytest.raises(CorruptFileError, match="inconsistent"):
        Index.from_state(params, {"vectors": arrays["vectors"]})


def test_collection_records_labels_and_data_and_nests():
    made = []

    def new_index(dim: int) -> Index:
        made.append(dim)
        return simdex.ExactIndex(dim)

    c = Collection(new_index=new_index)
    assert c.index is None and len(c) == 0
    ids = c.add(_vectors(4), labels=[1, 2, 3, 1], data=[np.full(2, i) for i in range(4)])
    c.add(_vectors(2, seed=3), labels=["x", None])
    assert made == [8] and len(c) == 6
    assert c.labels_of(np.array([[ids[1], -1]]), missing=-1).tolist() == [[2, -1]]
    with pytest.raises(ValueError, match="3 labels for 2"):
        c.add(_vectors(2), labels=[1, 2, 3])
    with pytest.raises(ValueError, match="8-d"):
        c.add(_vectors(2, d=5))
    params, arrays = c.state()
    back = Collection.from_state(params, arrays, new_index)
    assert back.labels == c.labels
    assert sorted(back.data) == sorted(c.data)
    np.testing.assert_array_equal(back.data[int(ids[2])], c.data[int(ids[2])])
    np.testing.assert_array_equal(back.index.get_vectors(ids), c.index.get_vectors(ids))
    back.reset()
    assert len(back) == 0 and not back.labels and not back.data


def test_collection_state_names_what_cannot_be_saved():
    c = Collection(simdex.ExactIndex(8))
    c.add(_vectors(1), data=[object()])
    with pytest.raises(TypeError, match="data cannot be saved"):
        c.state()


def test_no_temp_file_on_save(tmp_path, monkeypatch):
    """A finder's save is one atomic write: the writer's own temporary file, no nested index file."""
    import tempfile

    made = []
    real_mkstemp = tempfile.mkstemp

    def counting_mkstemp(*args, **kwargs):
        made.append(kwargs.get("dir"))
        return real_mkstemp(*args, **kwargs)

    def forbidden(*args, **kwargs):
        raise AssertionError("a save used a temporary directory")

    monkeypatch.setattr(tempfile, "mkstemp", counting_mkstemp)
    monkeypatch.setattr(tempfile, "TemporaryDirectory", forbidden)
    finder = simdex.NearDuplicateFinder(
        lambda b: np.asarray(b, np.float32).reshape(len(b), -1), simdex.ExactIndex(8)
    )
    finder.add(_vectors(3), labels=["a", "b", "c"], verbose=0)
    finder.save(tmp_path / "f.simdex")
    assert made == [str(tmp_path)]  # only the atomic writer's, beside the target
    assert os.listdir(tmp_path) == ["f.simdex"]


def test_saved_model_loads_in_a_fresh_interpreter(tmp_path):
    """load_model alone must register simdex's Keras layers (a fresh process imports nothing else)."""
    pytest.importorskip("tensorflow")
    code_save = (
        "import numpy as np, keras, simdex\n"
        "inp = keras.Input((6,)); m = simdex.SimilarityModel(inp, simdex.MetricEmbedding(4)(inp))\n"
        "m.index(np.eye(6, dtype='float32'), y=np.arange(6), verbose=0)\n"
        f"m.save({str(tmp_path / 'm.simdex')!r})\n"
    )
    code_load = (
        "import numpy as np, simdex\n"
        f"m = simdex.load_model({str(tmp_path / 'm.simdex')!r})\n"
        "r = m.lookup(np.eye(6, dtype='float32')[2:3], k=1)[0][0]\n"
        "assert (r.id, r.label) == (2, 2), r\n"
    )
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2"}
    for code in (code_save, code_load):
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
        )
        assert done.returncode == 0, done.stderr[-3000:]
