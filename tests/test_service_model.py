"""POST /lookup: raw inputs embedded by a served SimilarityModel, then searched."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("fastapi")
keras = pytest.importorskip("keras")
from fastapi.testclient import TestClient  # noqa: E402

from simdex.apps.service import create_app  # noqa: E402
from simdex.index import ExactIndex  # noqa: E402
from simdex.index.collection import Collection  # noqa: E402
from simdex.learn.models import SimilarityModel  # noqa: E402


@pytest.fixture(scope="module")
def served():
    inp = keras.Input((6,))
    model = SimilarityModel(inp, keras.layers.Dense(4, use_bias=False)(inp))
    x = np.random.default_rng(0).normal(size=(20, 6)).astype(np.float32)
    collection = Collection(ExactIndex(4))
    collection.add(model.embed(x), np.arange(20) * 10, labels=[f"item{i}" for i in range(20)])
    app = create_app(collection, embedder=model)
    with TestClient(app) as c:
        yield c, x


def test_lookup_embeds_then_searches(served):
    client, x = served
    r = client.post("/lookup", json={"inputs": x[3:5].tolist(), "k": 2})
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert [row["ids"][0] for row in res] == [30, 40]
    assert [row["labels"][0] for row in res] == ["item3", "item4"]
    assert "/lookup" in client.get("/openapi.json").json()["paths"]


@pytest.mark.parametrize(
    "body,words",
    [
        ({"inputs": [[1.0] * 5]}, "model cannot take"),
        ({"inputs": [["a"] * 6]}, "numbers"),
        ({"inputs": [[1.0] * 6, [1.0] * 5]}, "regular array"),
        ({"inputs": []}, "non-empty"),
        ({"inputs": [[1.0] * 6], "k": 0}, "k must be"),
        ({"k": 3}, "inputs"),
    ],
)
def test_bad_lookup_is_a_named_4xx(served, body, words):
    client, _ = served
    r = client.post("/lookup", json=body)
    assert 400 <= r.status_code < 500, r.text
    assert words in str(r.json()["detail"])
