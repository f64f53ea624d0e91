"""The HTTP layer: :func:`create_router` (mount it in your own FastAPI app) and
:func:`create_app`.

Endpoints (all JSON unless noted; errors are ``{"detail": ...}`` with a 4xx status):

==========================  ==========================================================
``POST /search``            k nearest neighbours of a batch of vectors. Body: JSON
                            ``{"vectors": [[...]], "k": 10, "filter_ids": [...]}``, or
                            ``application/x-npy`` (an .npy float32/float64 array), or
                            ``application/octet-stream`` (raw little-endian float32,
                            rows of ``dim``; optional ``X-Shape: n,d`` header checked);
                            binary bodies take ``k`` from the query string.
``POST /vectors``           add vectors by id, with optional labels and payloads
                            (``replace: true`` overwrites existing ids; else 409).
``PUT /vectors/{id}``       add or replace one vector (label, payload).
``GET /vectors/{id}``       the stored vector, label and payload (404 if absent).
``DELETE /vectors/{id}``    remove one id (404 if absent).
``POST /vectors/delete``    remove several ids, all or nothing.
``POST /snapshot``          save a snapshot now (and truncate the write-ahead log).
``GET /info``               dim, metric, size, log sequence numbers.
``GET /health``             liveness (no API key needed).
``GET /ready``              readiness: 200 once loaded and accepting work, else 503.
``GET /metrics``            Prometheus metrics (text format).
==========================  ==========================================================

Writes return after their write-ahead log record is durable (see
:mod:`simdex.apps.service.durable` for the exact guarantee).
"""

# No ``from __future__ import annotations``: FastAPI reads the endpoint annotations,
# which refer to names local to create_router.
import asyncio
import io
import json
import secrets
import time
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, Optional, Union

import numpy as np

from simdex.apps.service.batcher import MicroBatcher
from simdex.apps.service.durable import (
    MAX_ABS,
    MAX_ID,
    DurableCollection,
    IdConflictError,
    UnknownIdError,
    as_vectors,
)
from simdex.index import Index
from simdex.index.collection import Collection

try:
    from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request, Response
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from fastapi.routing import APIRoute
    from fastapi.security import APIKeyHeader
    from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        f"simdex's service needs FastAPI, uvicorn and prometheus-client ({e}); "
        'install them with: pip install "simdex[serve]"'
    ) from e

__all__ = ["create_router", "create_app", "ServiceState"]

_JSON_TYPES = ("application/json",)
_BINARY_TYPES = ("application/x-npy", "application/octet-stream")

Label = Union[StrictInt, StrictStr, None]
Id = Annotated[int, Field(ge=0, le=MAX_ID, strict=True)]


class ErrorResponse(BaseModel):
    """What every 4xx reply holds."""

    detail: Union[str, list[dict[str, Any]]] = Field(description="What was wrong with the request.")


class WriteResponse(BaseModel):
    ids: list[int] = Field(description="The ids written or removed.")
    lsn: int = Field(description="Log sequence number of the operation (durable when this reply is sent).")


class SearchResult(BaseModel):
    ids: list[int] = Field(
        description="Neighbour ids, nearest first (fewer than k when the index is smaller)."
    )
    distances: list[float] = Field(description="Their distances (smaller is closer).")
    labels: list[Union[int, str, None]] = Field(description="Their labels (null where none).")


class SearchResponse(BaseModel):
    results: list[SearchResult]


class VectorRecord(BaseModel):
    id: int
    vector: list[float]
    label: Union[int, str, None] = None
    payload: Optional[dict[str, Any]] = None


class DeleteRequest(BaseModel):
    ids: list[Id] = Field(min_length=1, description="Ids (for a removal: all or nothing).")


class GetManyResponse(BaseModel):
    records: list[VectorRecord] = Field(description="The ids found, in request order.")
    missing: list[int] = Field(description="The ids not in the index.")


class SnapshotResponse(BaseModel):
    lsn: int = Field(description="Operations included in the snapshot.")
    path: str
    seconds: float


class InfoResponse(BaseModel):
    kind: str
    dim: int
    metric: str
    size: int
    lsn: int
    snapshot_lsn: int
    wal_lag: int
    durable: bool
    batching: bool
    batch_window_ms: float
    filter: str = Field(description="How filter_ids is applied: 'index' (native) or 'exact-subset'.")


class HealthResponse(BaseModel):
    status: str


class ReadyResponse(BaseModel):
    ready: bool
    size: int


def _validation_errors(e: RequestValidationError) -> list[dict[str, Any]]:
    return [
        {
            "loc": [x if isinstance(x, int) else str(x) for x in err.get("loc", ())],
            "msg": str(err.get("msg")),
            "type": str(err.get("type")),
        }
        for err in e.errors()
    ]


def _error(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


def _bad(status: int, detail: str) -> HTTPException:
    return HTTPException(status_code=status, detail=detail)


class ServiceState:
    """What a router serves: the collection, the batcher and the metrics registry.

    ``router.state`` of a router made by :func:`create_router`; call :meth:`close`
    when the host app stops (``create_app`` does it in its lifespan).
    """

    def __init__(
        self,
        collection: DurableCollection,
        *,
        api_key: Optional[str],
        batching: bool,
        batch_window: float,
        max_batch: int,
        max_body_bytes: int,
        max_vectors: int,
        max_k: int,
        max_filter_ids: int,
        owns_collection: bool,
    ) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.collection = collection
        self.api_key = api_key.encode() if api_key else None
        self.key_header = APIKeyHeader(
            name="X-API-Key", auto_error=False, description="The API key, if one is set."
        )
        self.max_body_bytes = int(max_body_bytes)
        self.max_vectors = int(max_vectors)
        self.max_k = int(max_k)
        self.max_filter_ids = int(max_filter_ids)
        self.owns_collection = owns_collection
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "simdex_requests", "HTTP requests by route and status", ["route", "method", "status"], registry=r
        )
        self.latency = Histogram(
            "simdex_request_seconds",
            "Request latency by route",
            ["route"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0),
            registry=r,
        )
        self.batch_rows = Histogram(
            "simdex_search_batch_rows",
            "Query rows per native search call",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=r,
        )
        Gauge("simdex_index_size", "Vectors in the index", registry=r).set_function(lambda: len(collection))
        Gauge(
            "simdex_wal_lag_operations",
            "Logged operations since the last snapshot (replayed on restart)",
            registry=r,
        ).set_function(lambda: collection.wal_lag)
        Gauge("simdex_wal_bytes", "Bytes in live write-ahead log segments", registry=r).set_function(
            lambda: collection.wal_bytes
        )
        Gauge("simdex_lsn", "Last durable log sequence number", registry=r).set_function(
            lambda: collection.lsn
        )
        self.batching = bool(batching)
        self.batcher = MicroBatcher(
            collection.index.search,
            window=batch_window,
            max_batch=max_batch,
            coalesce=self.batching,
            on_batch=self._on_batch,
        )
        self.batch_window = batch_window

    def _on_batch(self, rows: int, requests: int, seconds: float) -> None:
        self.batch_rows.observe(rows)

    def check_key(self, request: Request) -> None:
        if self.api_key is None:
            return
        given = request.headers.get("x-api-key")
        if given is None:
            auth = request.headers.get("authorization", "")
            if auth[:7].lower() == "bearer ":
                given = auth[7:]
        if given is None or not secrets.compare_digest(
            given.encode("utf-8", "surrogateescape"), self.api_key
        ):
            raise HTTPException(
                status_code=401,
                detail="missing or wrong API key: send it in the X-API-Key header (or Authorization: Bearer)",
                headers={"WWW-Authenticate": "ApiKey"},
            )

    def close(self) -> None:
        """Stop the batcher, and the collection if this state opened it."""
        self.batcher.close()
        if self.owns_collection:
            self.collection.close()


def _route_class(state: ServiceState) -> type:
    """An APIRoute that caps and buffers the body, checks its content type, and records metrics."""

    class ServiceRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            original = super().get_route_handler()
            route = self.path_format
            accepted = (self.openapi_extra or {}).get("x-simdex-content-types", _JSON_TYPES)
            takes_body = self.body_field is not None or "requestBody" in (self.openapi_extra or {})
            # The APIKeyHeader dependency documents the key in OpenAPI; the check itself
            # runs here, before the body is read, so strangers learn nothing about it.
            secured = any(getattr(d, "dependency", None) is state.key_header for d in self.dependencies)

            async def handler(request: Request) -> Response:
                t0 = time.perf_counter()
                status = 500
                try:
                    if secured:
                        state.check_key(request)
                    if takes_body:
                        response = await _buffer_body(request, state.max_body_bytes, accepted)
                        if isinstance(response, Response):
                            status = response.status_code
                            return response
                        request = response
                    out = await original(request)
                    status = out.status_code
                    return out
                except HTTPException as e:
                    status = e.status_code
                    raise
                except RequestValidationError as e:
                    # Answered here, not by the host app's handler, which would echo the
                    # offending input back (and fail on NaN, which JSON cannot carry).
                    status = 422
                    return JSONResponse({"detail": _validation_errors(e)}, status_code=422)
                finally:
                    state.requests.labels(route, request.method, str(status)).inc()
                    state.latency.labels(route).observe(time.perf_counter() - t0)

            return handler

    return ServiceRoute


async def _buffer_body(request: Request, limit: int, accepted: tuple[str, ...]) -> Union[Request, Response]:
    """Read the body (at most ``limit`` bytes) and return a request that replays it."""
    length = request.headers.get("content-length")
    if length is not None:
        try:
            n = int(length)
        except ValueError:
            return _error(400, f"Content-Length {length!r} is not an integer")
        if n > limit:
            return _error(413, f"request body of {n} bytes exceeds the limit of {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return _error(413, f"request body exceeds the limit of {limit} bytes")
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if body and ctype not in accepted:
        return _error(
            415, f"content type {ctype or '(none)'!r} is not accepted here; send one of {', '.join(accepted)}"
        )
    data = bytes(body)
    sent = False
    receive = request.receive

    async def replay() -> Any:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": data, "more_body": False}
        return await receive()

    return Request(request.scope, replay)


# --------------------------------------------------------------------------- body parsing
def _parse_npy(body: bytes) -> np.ndarray:
    """An .npy array from untrusted bytes: header checked against the data size first."""
    from numpy.lib import format as npf

    f = io.BytesIO(body)
    try:
        version = npf.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = npf.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = npf.read_array_header_2_0(f)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except (ValueError, OSError, EOFError, SyntaxError, TypeError) as e:
        raise _bad(400, f"body is not a valid .npy array: {e}") from None
    if dtype.hasobject or dtype.kind not in "fiu" or dtype.byteorder == ">":
        raise _bad(422, f".npy dtype {dtype} is not a little-endian number type (send float32)")
    count = int(np.prod(shape, dtype=np.int64)) if len(shape) else 1
    offset = f.tell()
    if count * dtype.itemsize != len(body) - offset:
        raise _bad(
            400,
            f".npy header says shape {shape} ({count * dtype.itemsize} bytes) but the body holds "
            f"{len(body) - offset} bytes of data",
        )
    arr = np.frombuffer(body, dtype=dtype, count=count, offset=offset)
    return arr.reshape(shape, order="F" if fortran else "C")


def _parse_raw(body: bytes, dim: int, shape_header: Optional[str]) -> np.ndarray:
    if len(body) % (4 * dim):
        raise _bad(
            422,
            f"raw float32 body of {len(body)} bytes is not a whole number of {dim}-d rows "
            f"({4 * dim} bytes each)",
        )
    arr = np.frombuffer(body, dtype="<f4").reshape(-1, dim)
    if shape_header is not None:
        try:
            shape = tuple(int(s) for s in shape_header.split(","))
        except ValueError:
            raise _bad(400, f"X-Shape header {shape_header!r} is not 'n,d'") from None
        if shape != arr.shape:
            raise _bad(422, f"X-Shape {shape} does not match the body, which holds {arr.shape} float32")
    return arr


def _as_int(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad(422, f"{name} must be an integer, got {json.dumps(value)[:40]}")
    if isinstance(value, float) and not value.is_integer():
        raise _bad(422, f"{name} must be an integer, got {value}")
    v = int(value)
    if not low <= v <= high:
        raise _bad(422, f"{name} must be between {low} and {high}, got {v}")
    return v


def _check_queries(arr: Any, dim: int, max_rows: int, name: str = "vectors") -> np.ndarray:
    if isinstance(arr, np.ndarray) and arr.ndim not in (1, 2):
        raise _bad(422, f"{name} must be (n, {dim}) or ({dim},), got shape {arr.shape}")
    try:
        q = as_vectors(arr, name, dim)
    except (TypeError, ValueError) as e:
        raise _bad(422, str(e)) from None
    if q.shape[0] > max_rows:
        raise _bad(413, f"{q.shape[0]} vectors in one request; the limit is {max_rows}")
    return q


def _json_matrix(value: Any, dim: int, max_rows: int) -> np.ndarray:
    if not isinstance(value, list) or not value:
        raise _bad(422, f"vectors must be a non-empty list of {dim}-number lists")
    if len(value) > max_rows:
        raise _bad(413, f"{len(value)} vectors in one request; the limit is {max_rows}")
    for j, row in enumerate(value):
        if not isinstance(row, list):
            raise _bad(422, f"vectors[{j}] must be a list of {dim} numbers")
        if len(row) != dim:
            raise _bad(422, f"vectors[{j}] has dimension {len(row)}, expected {dim}")
    try:
        arr = np.array(value)
    except (ValueError, OverflowError, TypeError) as e:
        raise _bad(422, f"vectors must hold numbers only: {e}") from None
    if arr.dtype.kind not in "fi":  # bools, strings, nulls, objects, out-of-range integers
        raise _bad(422, f"vectors must hold numbers only (got values of type {arr.dtype})")
    return _check_queries(arr, dim, max_rows)


def _search_json_schema(dim: int, max_rows: int, max_k: int, max_filter: int) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["vectors"],
        "properties": {
            "vectors": {
                "type": "array",
                "minItems": 1,
                "maxItems": max_rows,
                "items": {
                    "type": "array",
                    "minItems": dim,
                    "maxItems": dim,
                    "items": {"type": "number", "minimum": -MAX_ABS, "maximum": MAX_ABS},
                },
                "description": f"Query vectors, each of dimension {dim}.",
            },
            "k": {"type": "integer", "minimum": 1, "maximum": max_k, "default": 10},
            "filter_ids": {
                "anyOf": [
                    {
                        "type": "array",
                        "maxItems": max_filter,
                        "items": {"type": "integer", "minimum": 0, "maximum": MAX_ID},
                    },
                    {"type": "null"},
                ],
                "description": "Only these ids may be returned (an allow-list); unknown ids are ignored.",
            },
        },
    }


# --------------------------------------------------------------------------- router
def create_router(
    target: Union[DurableCollection, Collection, Index],
    *,
    api_key: Optional[str] = None,
    batching: bool = True,
    batch_window: float = 0.001,
    max_batch: int = 256,
    max_body_bytes: int = 16 << 20,
    max_vectors: int = 1024,
    max_k: int = 1000,
    max_filter_ids: int = 100_000,
    prefix: str = "",
    embedder: Any = None,
) -> APIRouter:
    """A FastAPI router serving an index (or a :class:`DurableCollection`) over HTTP.

    Mount it in your own app with ``app.include_router(router)``; call
    ``router.state.close()`` when your app stops (``create_app`` does this).

    Args:
        target: A :class:`DurableCollection` (durable when opened with a data
            directory), or a :class:`simdex.index.collection.Collection` or an index
            (served from memory: writes last until the process ends).
        api_key: If set, every endpoint but ``/health`` and ``/ready`` needs it in
            the ``X-API-Key`` header (compared in constant time); else 401.
        batching: Coalesce concurrent searches into one native call.
        batch_window: Seconds a search waits for others to join its batch.
        max_batch: Most query rows per native search call.
        max_body_bytes: Larger request bodies get 413.
        max_vectors: Most vectors per request (search or add).
        max_k: Largest ``k``.
        max_filter_ids: Longest ``filter_ids`` allow-list.
        prefix: Path prefix of every endpoint.
        embedder: A :class:`simdex.SimilarityModel`, :class:`simdex.OnnxEmbedder` or
            anything with ``embed(x) -> (n, dim) array``: adds ``POST /lookup``,
            which embeds raw inputs and searches with the vectors.

    Returns:
        The router; ``router.state`` is its :class:`ServiceState`.
    """
    owns = False
    if isinstance(target, (Index, Collection)):
        target, owns = DurableCollection(target), True
    if not isinstance(target, DurableCollection):
        raise TypeError(f"create_router needs a DurableCollection or an Index, got {type(target).__name__}")
    if not 0 <= batch_window <= 1:
        raise ValueError(f"batch_window is in seconds and must be in [0, 1], got {batch_window}")
    state = ServiceState(
        target,
        api_key=api_key,
        batching=batching,
        batch_window=batch_window,
        max_batch=max_batch,
        max_body_bytes=max_body_bytes,
        max_vectors=max_vectors,
        max_k=max_k,
        max_filter_ids=max_filter_ids,
        owns_collection=owns,
    )
    col = target
    index = col.index
    dim = index.dim
    from simdex.apps.service.durable import search_supports_filter

    filter_mode = "index" if search_supports_filter(index) else "exact-subset"
    router = APIRouter(prefix=prefix, route_class=_route_class(state), tags=["simdex"])
    router.state = state  # type: ignore[attr-defined]
    err: dict[str, Any] = {"model": ErrorResponse}
    errors: dict[Union[int, str], dict[str, Any]] = {
        400: err,
        401: err,
        413: err,
        415: err,
        422: err,
        503: err,
    }
    secured = [Depends(state.key_header)]

    Component = Annotated[float, Field(ge=-MAX_ABS, le=MAX_ABS, allow_inf_nan=False)]
    Vector = Annotated[
        list[Component],
        Field(min_length=dim, max_length=dim, description=f"{dim} numbers within +-{MAX_ABS:g}"),
    ]

    class AddRequest(BaseModel):
        model_config = ConfigDict(title="AddRequest")
        ids: list[Id] = Field(min_length=1, max_length=max_vectors)
        vectors: list[Vector] = Field(min_length=1, max_length=max_vectors)
        labels: Optional[list[Label]] = Field(None, description="One label per vector (int, string or null).")
        payloads: Optional[list[Optional[dict[str, Any]]]] = Field(
            None, description="One JSON object (or null) per vector, stored beside it."
        )
        replace: bool = Field(False, description="Overwrite ids that exist (else 409).")

    class PutRequest(BaseModel):
        model_config = ConfigDict(title="PutRequest")
        vector: Vector
        label: Label = None
        payload: Optional[dict[str, Any]] = None

    async def _write(fut_maker: Callable[[], Any], ids: list[int]) -> WriteResponse:
        try:
            fut = fut_maker()
        except (TypeError, ValueError) as e:
            raise _bad(422, str(e)) from None
        except RuntimeError as e:  # closed
            raise HTTPException(503, str(e)) from None
        try:
            lsn = await asyncio.wrap_future(fut)
        except UnknownIdError as e:
            raise _bad(404, str(e)) from None
        except IdConflictError as e:
            raise _bad(409, str(e)) from None
        return WriteResponse(ids=ids, lsn=lsn)

    def _results(D: np.ndarray, I: np.ndarray) -> dict[str, Any]:
        if not np.isfinite(D).all():  # JSON has no infinity (only from oversized vectors in a base file)
            big = float(np.finfo(np.float32).max)
            D = np.nan_to_num(D, nan=big, posinf=big, neginf=-big)
        out = []
        for d_row, i_row in zip(D.tolist(), I.tolist()):
            n = len(i_row)
            while n and i_row[n - 1] < 0:
                n -= 1
            ids = i_row[:n]
            out.append(
                {"ids": ids, "distances": d_row[:n], "labels": col.labels_of(np.asarray(ids, np.int64))}
            )
        return {"results": out}

    @router.post(
        "/search",
        summary="k nearest neighbours of a batch of vectors",
        response_model=SearchResponse,
        responses=errors,
        dependencies=secured,
        openapi_extra={
            "x-simdex-content-types": ("application/json", *_BINARY_TYPES),
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": _search_json_schema(dim, max_vectors, max_k, max_filter_ids)
                    },
                    "application/x-npy": {
                        "schema": {"type": "string", "format": "binary"},
                        "description": f"An .npy array of shape (n, {dim}) or ({dim},), float32 or float64.",
                    },
                    "application/octet-stream": {
                        "schema": {"type": "string", "format": "binary"},
                        "description": f"Raw little-endian float32, n rows of {dim}; X-Shape: n,{dim}.",
                    },
                },
            },
        },
    )
    async def search(
        request: Request,
        k: Annotated[int, Query(ge=1, le=max_k, description="Neighbours per query (binary bodies).")] = 10,
    ) -> Response:
        """Search. JSON bodies carry ``k`` and ``filter_ids`` themselves; binary bodies
        take ``k`` from the query string. Results hold fewer than ``k`` neighbours only
        when the index (or the allow-list) is smaller."""
        body = await request.body()
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        filter_ids = None
        if ctype == "application/x-npy":
            q = _check_queries(_parse_npy(body), dim, max_vectors)
        elif ctype == "application/octet-stream":
            q = _check_queries(_parse_raw(body, dim, request.headers.get("x-shape")), dim, max_vectors)
        else:
            try:
                obj = json.loads(body)
            except (ValueError, UnicodeDecodeError) as e:
                raise _bad(400, f"body is not valid JSON: {e}") from None
            if not isinstance(obj, dict):
                raise _bad(
                    422, "body must be a JSON object with 'vectors' (and optionally 'k', 'filter_ids')"
                )
            if "vectors" not in obj:
                raise _bad(422, "body has no 'vectors'")
            q = _json_matrix(obj["vectors"], dim, max_vectors)
            k = _as_int(obj.get("k", 10), "k", 1, max_k)
            fids = obj.get("filter_ids")
            if fids is not None:
                if not isinstance(fids, list) or len(fids) > max_filter_ids:
                    raise _bad(422, f"filter_ids must be a list of at most {max_filter_ids} ids")
                filter_ids = np.array([_as_int(v, "filter_ids[]", 0, MAX_ID) for v in fids], dtype=np.int64)
        # All searches run on the batcher's one worker thread, never side by side:
        # a write waits for at most one native call.
        try:
            if filter_ids is not None:
                D, I = await state.batcher.run(lambda: col.search(q, k, filter_ids=filter_ids))
            else:
                D, I = await state.batcher.search(q, k)
        except RuntimeError as e:
            raise HTTPException(503, str(e)) from None
        return JSONResponse(_results(D, I))

    if embedder is not None:
        if not callable(getattr(embedder, "embed", None)):
            raise TypeError(f"embedder must have an embed(x) method, got {type(embedder).__name__}")

        @router.post(
            "/lookup",
            summary="embed raw inputs and search with them",
            response_model=SearchResponse,
            responses=errors,
            dependencies=secured,
            openapi_extra={
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["inputs"],
                                "properties": {
                                    "inputs": {
                                        "type": "array",
                                        "minItems": 1,
                                        "maxItems": max_vectors,
                                        "description": "A batch of raw examples (nested numbers), "
                                        "each of the shape the model takes.",
                                    },
                                    "k": {"type": "integer", "minimum": 1, "maximum": max_k, "default": 10},
                                },
                            }
                        }
                    },
                }
            },
        )
        async def lookup(request: Request) -> Response:
            """The ``k`` nearest stored vectors of each input's embedding (same reply as
            ``/search``). The model runs on the search worker thread, off the event loop."""
            try:
                obj = json.loads(await request.body())
            except (ValueError, UnicodeDecodeError) as e:
                raise _bad(400, f"body is not valid JSON: {e}") from None
            if not isinstance(obj, dict) or "inputs" not in obj:
                raise _bad(422, "body must be a JSON object with 'inputs' (and optionally 'k')")
            k = _as_int(obj.get("k", 10), "k", 1, max_k)
            raw = obj["inputs"]
            if not isinstance(raw, list) or not raw:
                raise _bad(422, "inputs must be a non-empty list of examples")
            if len(raw) > max_vectors:
                raise _bad(413, f"{len(raw)} inputs in one request; the limit is {max_vectors}")
            try:
                x = np.array(raw)
            except (ValueError, OverflowError, TypeError) as e:
                raise _bad(422, f"inputs must be a regular array of numbers: {e}") from None
            if x.dtype.kind not in "fi":
                raise _bad(422, f"inputs must hold numbers only (got values of type {x.dtype})")
            if not np.isfinite(x).all():
                raise _bad(422, "inputs contain NaN or infinity")
            try:
                vectors = await state.batcher.run(lambda: np.asarray(embedder.embed(x.astype(np.float32))))
            except (TypeError, ValueError) as e:  # the model's own checks: shape, dtype
                raise _bad(422, f"the model cannot take these inputs: {e}") from None
            except RuntimeError as e:
                raise HTTPException(503, str(e)) from None
            q = _check_queries(vectors, dim, max_vectors, name="embeddings")
            try:
                D, I = await state.batcher.search(q, k)
            except RuntimeError as e:
                raise HTTPException(503, str(e)) from None
            return JSONResponse(_results(D, I))

    @router.post(
        "/vectors",
        summary="add vectors by id",
        response_model=WriteResponse,
        responses={**errors, 409: err},
        dependencies=secured,
    )
    async def add_vectors(req: AddRequest) -> WriteResponse:
        """Add vectors with ids, optional labels and payloads. Replies once the
        operation is in the durable write-ahead log. 409 if an id exists and
        ``replace`` is false; nothing is written on any error."""
        if len(req.ids) != len(req.vectors):
            raise _bad(422, f"got {len(req.vectors)} vectors but {len(req.ids)} ids")
        return await _write(
            lambda: col.submit_add(req.ids, req.vectors, req.labels, req.payloads, replace=req.replace),
            list(req.ids),
        )

    @router.put(
        "/vectors/{id}",
        summary="add or replace one vector",
        response_model=WriteResponse,
        responses=errors,
        dependencies=secured,
    )
    async def put_vector(id: Annotated[int, Path(ge=0, le=MAX_ID)], req: PutRequest) -> WriteResponse:
        """Add the vector under ``id``, replacing any vector, label and payload it had."""
        return await _write(
            lambda: col.submit_add([id], [req.vector], [req.label], [req.payload], replace=True), [id]
        )

    @router.get(
        "/vectors/{id}",
        summary="get one vector",
        response_model=VectorRecord,
        responses={**errors, 404: err},
        dependencies=secured,
    )
    async def get_vector(id: Annotated[int, Path(ge=0, le=MAX_ID)]) -> Any:
        """The stored float32 vector (as numbers), label and payload of ``id``."""
        try:
            return JSONResponse(col.get([id])[0])
        except UnknownIdError as e:
            raise _bad(404, str(e)) from None

    @router.post(
        "/vectors/get",
        summary="get several vectors",
        response_model=GetManyResponse,
        responses=errors,
        dependencies=secured,
    )
    async def get_vectors(req: DeleteRequest) -> Any:
        """The stored vectors, labels and payloads of the ids found, and the ids missing."""
        if len(req.ids) > max_vectors:
            raise _bad(413, f"{len(req.ids)} ids in one request; the limit is {max_vectors}")
        try:
            ids = np.asarray(req.ids, np.int64)
            present = np.asarray(index.contains(ids), dtype=bool)
        except (TypeError, ValueError) as e:
            raise _bad(422, str(e)) from None
        found = ids[present]
        try:
            records = col.get(np.unique(found)) if found.size else []
        except UnknownIdError as e:  # removed while we looked
            raise _bad(404, str(e)) from None
        by_id = {r["id"]: r for r in records}
        return JSONResponse(
            {"records": [by_id[i] for i in found.tolist() if i in by_id], "missing": ids[~present].tolist()}
        )

    @router.delete(
        "/vectors/{id}",
        summary="remove one vector",
        response_model=WriteResponse,
        responses={**errors, 404: err},
        dependencies=secured,
    )
    async def delete_vector(id: Annotated[int, Path(ge=0, le=MAX_ID)]) -> WriteResponse:
        """Remove ``id`` (404 if it is not there)."""
        return await _write(lambda: col.submit_remove([id]), [id])

    @router.post(
        "/vectors/delete",
        summary="remove several vectors",
        response_model=WriteResponse,
        responses={**errors, 404: err},
        dependencies=secured,
    )
    async def delete_vectors(req: DeleteRequest) -> WriteResponse:
        """Remove every id listed, or none of them (404 naming the first unknown id)."""
        if len(req.ids) > max_vectors:
            raise _bad(413, f"{len(req.ids)} ids in one request; the limit is {max_vectors}")
        return await _write(lambda: col.submit_remove(req.ids), list(req.ids))

    @router.post(
        "/snapshot",
        summary="save a snapshot now",
        response_model=SnapshotResponse,
        responses={**errors, 409: err},
        dependencies=secured,
    )
    async def snapshot() -> SnapshotResponse:
        """Save the index and payloads atomically and truncate the write-ahead log.
        Writes wait while it runs; searches do not. 409 when there is nowhere to save."""
        if col.data_dir is None and col.snapshot_path is None:
            raise _bad(409, "this collection has no data directory and no snapshot path")
        try:
            out = await asyncio.wrap_future(col.submit_snapshot())
        except RuntimeError as e:
            raise HTTPException(503, str(e)) from None
        return SnapshotResponse(**out)

    @router.get(
        "/info",
        summary="what is served",
        response_model=InfoResponse,
        responses={401: err},
        dependencies=secured,
    )
    async def info() -> InfoResponse:
        return InfoResponse(
            kind=type(index).__name__,
            dim=dim,
            metric=index.metric,
            size=len(index),
            lsn=col.lsn,
            snapshot_lsn=col.snapshot_lsn,
            wal_lag=col.wal_lag,
            durable=col.wal is not None,
            batching=state.batching,
            batch_window_ms=state.batch_window * 1e3,
            filter=filter_mode,
        )

    @router.get("/health", summary="liveness", response_model=HealthResponse)
    async def health() -> HealthResponse:
        """200 while the process serves requests (no API key needed)."""
        return HealthResponse(status="ok")

    @router.get(
        "/ready", summary="readiness", response_model=ReadyResponse, responses={503: {"model": ReadyResponse}}
    )
    async def ready() -> Response:
        """200 once the collection is loaded (log replayed) and accepting work; 503 while closing."""
        ok = col.ready
        return JSONResponse({"ready": ok, "size": len(index)}, status_code=200 if ok else 503)

    @router.get(
        "/metrics",
        summary="Prometheus metrics",
        responses={
            401: err,
            200: {
                "content": {"text/plain": {"schema": {"type": "string"}}},
                "description": "Prometheus text format.",
            },
        },
        dependencies=secured,
        response_class=Response,
    )
    async def metrics() -> Response:
        """Request counts and latencies by route, index size, WAL lag and bytes, batch sizes."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(state.registry), media_type=CONTENT_TYPE_LATEST)

    return router


def create_app(
    target: Union[DurableCollection, Collection, Index], *, title: str = "simdex", **router_kwargs: Any
) -> FastAPI:
    """A FastAPI app serving ``target`` (see :func:`create_router` for the options).

    The app closes the router's batcher (and a collection it wrapped) on shutdown.
    """
    from contextlib import asynccontextmanager

    router = create_router(target, **router_kwargs)

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202
        try:
            yield
        finally:
            router.state.close()  # type: ignore[attr-defined]

    app = FastAPI(title=title, version=_version(), lifespan=lifespan)
    app.include_router(router)
    app.state.simdex = router.state  # type: ignore[attr-defined]
    return app


def _version() -> str:
    import simdex

    return simdex.__version__
