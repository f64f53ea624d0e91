"""The HTTP layer in process (FastAPI TestClient): endpoints, encodings, every bad input a 4xx,
API key, and the router mounted in a user's own app."""

from __future__ import annotations

import io

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi import FastAPI  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from simdex.apps.service import DurableCollection, create_app, create_router  # noqa: E402
from simdex.index import ExactIndex  # noqa: E402

DIM = 16
N = 300


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(N, DIM)).astype(np.float32)


def _index(data):
    index = ExactIndex(DIM)
    index.add(data, np.arange(N) * 2)  # even ids
    return index


@pytest.fixture(params=[True, False], ids=["batched", "unbatched"])
def client(request, data, tmp_path):
    col = DurableCollection.open(tmp_path / "data", _index(data))
    app = create_app(col, batching=request.param, max_vectors=64, max_body_bytes=1 << 20)
    try:
        with TestClient(app) as c:
            c.collection = col
            yield c
    finally:
        col.close()


@pytest.fixture(scope="module")
def shared_client(data, tmp_path_factory):
    """One server for the many bad-input cases (they must not change it)."""
    col = DurableCollection.open(tmp_path_factory.mktemp("shared") / "data", _index(data))
    app = create_app(col, max_vectors=64, max_body_bytes=1 << 20)
    try:
        with TestClient(app) as c:
            c.collection = col
            yield c
    finally:
        col.close()


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def _oracle(data, q, k):
    ids = np.arange(N) * 2
    xn = data / np.linalg.norm(data, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    d = 1 - qn @ xn.T
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, order, 1), ids[order]


def test_search_json_npy_raw_agree_with_oracle(client, data):
    q = data[:5] + 0.01
    D0, I0 = _oracle(data, q, 7)
    r = client.post("/search", json={"vectors": q.tolist(), "k": 7})
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert [x["ids"] for x in res] == I0.tolist()
    np.testing.assert_allclose([x["distances"] for x in res], D0, atol=1e-5)
    r2 = client.post("/search?k=7", content=_npy(q), headers={"content-type": "application/x-npy"})
    assert r2.status_code == 200 and r2.json()["results"] == res
    r3 = client.post(
        "/search?k=7",
        content=q.astype("<f4").tobytes(),
        headers={"content-type": "application/octet-stream", "x-shape": f"5,{DIM}"},
    )
    assert r3.status_code == 200 and r3.json()["results"] == res
    # one 1-D .npy vector is one query
    r4 = client.post("/search?k=7", content=_npy(q[0]), headers={"content-type": "application/x-npy"})
    assert r4.json()["results"] == res[:1]


def test_search_filter_and_small_index(client, data):
    allow = [4, 8, 10, 9999]  # an unknown id is ignored
    r = client.post("/search", json={"vectors": data[:2].tolist(), "k": 10, "filter_ids": allow})
    assert r.status_code == 200, r.text
    for res in r.json()["results"]:
        assert sorted(res["ids"]) == [4, 8, 10]
    r = client.post("/search", json={"vectors": data[:1].tolist(), "k": 10, "filter_ids": []})
    assert r.json()["results"][0]["ids"] == []
    r = client.post("/search", json={"vectors": data[:1].tolist(), "k": 1000})
    assert len(r.json()["results"][0]["ids"]) == N  # fewer than k: no -1 padding


def test_writes_get_payload_and_labels(client, data):
    v = (data[0] * 3).tolist()
    r = client.post(
        "/vectors",
        json={"ids": [1, 3], "vectors": [v, v], "labels": ["cat", 5], "payloads": [{"url": "a"}, None]},
    )
    assert r.status_code == 200, r.text
    assert r.json()["ids"] == [1, 3] and r.json()["lsn"] >= 1
    g = client.get("/vectors/1").json()
    assert g["label"] == "cat" and g["payload"] == {"url": "a"}
    np.testing.assert_array_equal(np.float32(g["vector"]), np.float32(v))
    assert client.post("/vectors", json={"ids": [1], "vectors": [v]}).status_code == 409
    assert client.put("/vectors/1", json={"vector": data[1].tolist(), "label": None}).status_code == 200
    g = client.get("/vectors/1").json()
    assert g["label"] is None and g["payload"] is None
    s = client.post("/search", json={"vectors": [data[1].tolist()], "k": 1}).json()["results"][0]
    assert s["ids"][0] in (1, 2)  # data[1] is stored under id 2 as well: tie broken by the smaller id
    assert client.delete("/vectors/1").status_code == 200
    assert client.get("/vectors/1").status_code == 404
    assert client.delete("/vectors/1").status_code == 404
    r = client.post("/vectors/delete", json={"ids": [3, 777]})
    assert r.status_code == 404 and "777" in r.json()["detail"]
    assert client.get("/vectors/3").status_code == 200  # all or nothing
    assert client.post("/vectors/delete", json={"ids": [3]}).status_code == 200


def test_snapshot_info_metrics_health(client):
    client.post("/vectors", json={"ids": [11], "vectors": [[1.0] * DIM]})
    info = client.get("/info").json()
    assert info["dim"] == DIM and info["size"] == N + 1 and info["wal_lag"] == 1 and info["durable"]
    snap = client.post("/snapshot")
    assert snap.status_code == 200 and snap.json()["lsn"] == info["lsn"]
    assert client.get("/info").json()["wal_lag"] == 0
    client.post("/search", json={"vectors": [[1.0] * DIM]})
    m = client.get("/metrics")
    assert m.status_code == 200 and m.headers["content-type"].startswith("text/plain")
    body = m.text
    assert f"simdex_index_size {float(N + 1)}" in body
    assert "simdex_wal_lag_operations 0.0" in body
    assert 'simdex_requests_total{method="POST",route="/search",status="200"}' in body
    assert "simdex_request_seconds_bucket" in body
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json()["ready"] is True


BAD_SEARCHES = [
    # (kwargs for client.post, status, words the error names)
    ({"json": {"vectors": [[1.0] * (DIM - 1)]}}, 422, "dimension 15"),
    ({"json": {"vectors": [[1.0] * DIM], "k": 0}}, 422, "k must be"),
    ({"json": {"vectors": [[1.0] * DIM], "k": 10**6}}, 422, "k must be"),
    ({"json": {"vectors": [[1.0] * DIM], "k": "5"}}, 422, "k must be an integer"),
    ({"json": {"vectors": [[1.0] * DIM], "k": True}}, 422, "k must be an integer"),
    ({"json": {"vectors": []}}, 422, "non-empty"),
    ({"json": {"vectors": [1.0] * DIM}}, 422, "vectors[0]"),
    ({"json": {"vectors": [["a"] * DIM]}}, 422, "numbers"),
    ({"json": {"vectors": [[None] * DIM]}}, 422, "numbers"),
    ({"json": {"vectors": [[True] * DIM]}}, 422, "numbers"),
    ({"json": {"vectors": [[10**40] * DIM]}}, 422, ""),
    ({"json": {"vectors": [[1e300] * DIM]}}, 422, "infinity"),
    ({"json": {"vectors": [[3e38] * DIM]}}, 422, "magnitude"),
    ({"json": {"vectors": [[1.0] * DIM] * 65}}, 413, "limit"),
    ({"json": {"vectors": [[1.0] * DIM], "filter_ids": [-1]}}, 422, "filter_ids"),
    ({"json": {"vectors": [[1.0] * DIM], "filter_ids": "x"}}, 422, "filter_ids"),
    ({"json": {"k": 3}}, 422, "vectors"),
    ({"json": [1, 2]}, 422, "JSON object"),
    ({"content": b"{nope", "headers": {"content-type": "application/json"}}, 400, "not valid JSON"),
    ({"content": b"NaN", "headers": {"content-type": "application/json"}}, 422, "JSON object"),
    ({"content": b"\xff\xfe", "headers": {"content-type": "application/json"}}, 400, "not valid JSON"),
    ({"content": b"hello", "headers": {"content-type": "text/plain"}}, 415, "content type"),
    ({"content": b"hello", "headers": {"content-type": "application/x-npy"}}, 400, ".npy"),
    (
        {
            "content": b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, "
            + b"'shape': (100000000000,), }"
            + b" " * 49
            + b"\n",
            "headers": {"content-type": "application/x-npy"},
        },
        400,
        "header says",
    ),
    ({"content": b"", "headers": {"content-type": "application/x-npy"}}, 400, ".npy"),
    ({"content": b"\x00" * 7, "headers": {"content-type": "application/octet-stream"}}, 422, "whole number"),
    (
        {
            "content": b"\x00" * (4 * DIM),
            "headers": {"content-type": "application/octet-stream", "x-shape": "2,3"},
        },
        422,
        "X-Shape",
    ),
    (
        {
            "content": b"\x00" * (4 * DIM),
            "headers": {"content-type": "application/octet-stream", "x-shape": "a"},
        },
        400,
        "X-Shape",
    ),
    (
        {
            "content": np.full(DIM, np.nan, "<f4").tobytes(),
            "headers": {"content-type": "application/octet-stream"},
        },
        422,
        "NaN",
    ),
    ({"content": b"x" * (2 << 20), "headers": {"content-type": "application/json"}}, 413, "limit"),
]


@pytest.mark.parametrize("kwargs,status,words", BAD_SEARCHES)
def test_bad_search_is_a_named_4xx(shared_client, kwargs, status, words):
    client = shared_client
    r = client.post("/search", **kwargs)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert words in str(r.json()["detail"])


def test_npy_wrong_dtype_and_shape(client):
    for arr, words in [
        (np.zeros((2, DIM), ">f4"), "little-endian"),
        (np.array(["x"] * DIM), "number"),
        (np.zeros((2, 3, DIM), "<f4"), "shape"),
        (np.zeros((2, DIM + 1), "<f4"), "dimension"),
    ]:
        r = client.post("/search", content=_npy(arr), headers={"content-type": "application/x-npy"})
        assert r.status_code == 422 and words in r.json()["detail"], r.text
    r = client.post(
        "/search",
        content=b"\x93NUMPY\x01\x00\x10\x00{'descr':'|O'}   \n",
        headers={"content-type": "application/x-npy"},
    )
    assert 400 <= r.status_code < 500


@pytest.mark.parametrize(
    "method,url,kwargs,status",
    [
        ("post", "/vectors", {"json": {"ids": [1], "vectors": [[1.0] * 3]}}, 422),
        ("post", "/vectors", {"json": {"ids": [1], "vectors": [[2e15] * DIM]}}, 422),
        ("post", "/vectors", {"json": {"ids": [1, 5], "vectors": [[1.0] * DIM]}}, 422),
        ("post", "/vectors", {"json": {"ids": [5, 5], "vectors": [[1.0] * DIM] * 2}}, 422),
        ("post", "/vectors", {"json": {"ids": [-5], "vectors": [[1.0] * DIM]}}, 422),
        ("post", "/vectors", {"json": {"ids": [2**63], "vectors": [[1.0] * DIM]}}, 422),
        ("post", "/vectors", {"json": {"ids": [1.5], "vectors": [[1.0] * DIM]}}, 422),
        ("post", "/vectors", {"json": {"ids": [1], "vectors": [[1.0] * DIM], "labels": [1, 2]}}, 422),
        ("post", "/vectors", {"json": {"ids": [1], "vectors": [[1.0] * DIM], "payloads": [3]}}, 422),
        ("post", "/vectors", {"json": {"ids": [0], "vectors": [[1.0] * DIM]}}, 409),
        ("post", "/vectors", {"content": b"{", "headers": {"content-type": "application/json"}}, 422),
        ("post", "/vectors", {"content": b"ids=1", "headers": {"content-type": "text/plain"}}, 415),
        ("put", "/vectors/-1", {"json": {"vector": [1.0] * DIM}}, 422),
        ("put", "/vectors/7", {"json": {"vector": [1.0] * 2}}, 422),
        ("put", "/vectors/7", {"content": b"[1]", "headers": {"content-type": "application/json"}}, 422),
        ("get", "/vectors/1", {}, 404),
        ("get", "/vectors/abc", {}, 422),
        ("get", "/vectors/99999999999999999999", {}, 422),
        ("delete", "/vectors/1", {}, 404),
        ("post", "/vectors/delete", {"json": {"ids": []}}, 422),
    ],
)
def test_bad_writes_are_4xx_and_write_nothing(shared_client, method, url, kwargs, status):
    client = shared_client
    lsn = client.collection.lsn
    size = len(client.collection)
    r = getattr(client, method)(url, **kwargs) if method != "post" or kwargs else client.post(url)
    assert r.status_code == status, r.text
    assert r.json()["detail"]
    assert client.collection.lsn == lsn and len(client.collection) == size


def test_nan_in_add_is_rejected_before_the_log(client):
    lsn = client.collection.lsn
    r = client.post(
        "/vectors",
        content=b'{"ids": [1], "vectors": [[NaN' + b", 1" * (DIM - 1) + b"]]}",
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 422 and "finite number" in r.text
    assert client.collection.lsn == lsn


def test_api_key(data):
    app = create_app(_index(data), api_key="s3cret-key")
    with TestClient(app) as c:
        body = {"vectors": [data[0].tolist()], "k": 1}
        assert c.post("/search", json=body).status_code == 401
        assert c.post("/search", json=body, headers={"x-api-key": "wrong"}).status_code == 401
        assert c.post("/search", content=b"garbage", headers={"x-api-key": "wrong"}).status_code == 401
        assert c.get("/metrics").status_code == 401
        assert c.get("/vectors/0").status_code == 401
        r = c.post("/search", json=body, headers={"x-api-key": "s3cret-key"})
        assert r.status_code == 200 and r.json()["results"][0]["ids"] == [0]
        assert c.post("/search", json=body, headers={"authorization": "Bearer s3cret-key"}).status_code == 200
        assert c.get("/health").status_code == 200 and c.get("/ready").status_code == 200
        schema = c.get("/openapi.json").json()
        assert "APIKeyHeader" in schema["components"]["securitySchemes"]


def test_router_in_a_users_own_app(data):
    app = FastAPI(title="my app")

    @app.get("/hello")
    def hello() -> dict:
        return {"hi": 1}

    router = create_router(_index(data), batch_window=0.002)
    app.include_router(router, prefix="/similar")
    try:
        with TestClient(app) as c:
            assert c.get("/hello").json() == {"hi": 1}
            r = c.post("/similar/search", json={"vectors": [data[3].tolist()], "k": 2})
            assert r.status_code == 200 and r.json()["results"][0]["ids"][0] == 6
            assert (
                c.put("/similar/vectors/1", json={"vector": data[3].tolist(), "label": "x"}).status_code
                == 200
            )
            r = c.post("/similar/search", json={"vectors": [data[3].tolist()], "k": 2})
            assert r.json()["results"][0]["ids"] == [1, 6] and r.json()["results"][0]["labels"] == ["x", None]
            paths = c.get("/openapi.json").json()["paths"]
            assert "/similar/search" in paths and "/hello" in paths
            assert c.post("/similar/search", json={"vectors": [[1.0]]}).status_code == 422
    finally:
        router.state.close()


def test_concurrent_searches_are_coalesced(data):
    """Many concurrent single-vector searches take fewer native calls than requests,
    and every request gets its own rows back."""
    import asyncio

    import httpx

    router_app = create_app(_index(data), batch_window=0.005)

    async def run() -> list:
        transport = httpx.ASGITransport(app=router_app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            rs = await asyncio.gather(
                *[c.post("/search", json={"vectors": [data[i].tolist()], "k": 1 + i % 3}) for i in range(40)]
            )
            metrics = (await c.get("/metrics")).text
        return rs, metrics

    rs, metrics = asyncio.run(run())
    for i, r in enumerate(rs):
        assert r.status_code == 200
        res = r.json()["results"][0]
        assert res["ids"][0] == 2 * i and len(res["ids"]) == 1 + i % 3
    count = [ln for ln in metrics.splitlines() if ln.startswith("simdex_search_batch_rows_count")]
    calls = float(count[0].split()[-1])
    assert 1 <= calls < 40
    router_app.state.simdex.close()


def test_an_lsh_index_is_served_too(data, tmp_path):
    from simdex.index import LSHIndex

    index = LSHIndex(DIM, num_tables=4, hash_bits=6)
    index.add(data, np.arange(N))
    col = DurableCollection.open(tmp_path / "data", index)
    try:
        with TestClient(create_app(col)) as c:
            r = c.post("/search", json={"vectors": [data[7].tolist()], "k": 1})
            assert r.status_code == 200 and r.json()["results"][0]["ids"] == [7]
            assert (
                c.put("/vectors/100000", json={"vector": data[7].tolist(), "label": "x"}).status_code == 200
            )
            assert c.post("/snapshot").status_code == 200
            assert c.get("/info").json()["kind"] == "LSHIndex"
    finally:
        col.close()
    col = DurableCollection.open(tmp_path / "data")  # from the snapshot alone
    try:
        assert type(col.index).__name__ == "LSHIndex" and 100000 in col.index
        assert col.get([100000])[0]["label"] == "x"
    finally:
        col.close()
