"""The service as a user runs it: ``python -m simdex serve`` in a subprocess on 127.0.0.1.

* CLI: port, API key file, readiness.
* Crash: a server under a stream of acknowledged writes is SIGKILLed at random moments
  (CRASH_KILLS times); after every restart each acknowledged write is there with its
  exact vector and every unacknowledged request is applied completely or not at all.

Every server is started and killed by the fixture/test that needs it (``finally``).
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from simdex.index import ExactIndex  # noqa: E402

DIM = 8
CRASH_KILLS = 20
START_TIMEOUT = 60.0


@contextmanager
def serve(args: list[str], *, timeout: float = START_TIMEOUT):
    """Run ``python -m simdex serve ARGS --port 0``; yield its base URL; always kill it."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "simdex", "serve", *args, "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines: queue.Queue = queue.Queue()
    seen: list[str] = []

    def pump() -> None:
        for line in proc.stderr:  # type: ignore[union-attr]
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + timeout
        url = None
        while url is None:
            try:
                line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"server did not start in {timeout} s: {''.join(seen)}") from None
            if line is None:
                raise AssertionError(f"server exited with {proc.wait()}: {''.join(seen)}")
            seen.append(line)
            if "listening on " in line:
                url = line.rsplit("listening on ", 1)[1].strip()
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        reader.join(timeout=5)
        proc.stderr.close()  # type: ignore[union-attr]


def _vector(id_: int, version: int = 0) -> list[float]:
    rng = np.random.default_rng(id_ * 7919 + version)
    return rng.normal(size=DIM).astype(np.float32).tolist()


@pytest.fixture
def base_path(tmp_path):
    index = ExactIndex(DIM)
    index.add(np.stack([_vector(i) for i in range(10)]), np.arange(10))
    path = tmp_path / "base.simdex"
    index.save(path)
    return str(path)


def test_cli_serves_with_api_key(tmp_path, base_path):
    key = tmp_path / "key"
    key.write_text("k-123\n")
    with serve([base_path, "--api-key-file", str(key)]) as (url, _):
        with httpx.Client(base_url=url, timeout=10) as c:
            assert c.get("/ready").status_code == 200
            body = {"vectors": [_vector(3)], "k": 1}
            assert c.post("/search", json=body).status_code == 401
            r = c.post("/search", json=body, headers={"x-api-key": "k-123"})
            assert r.status_code == 200 and r.json()["results"][0]["ids"] == [3]
            assert c.get("/info", headers={"x-api-key": "k-123"}).json()["durable"] is False


def test_cli_help_and_errors(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "simdex", "--help"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and "serve" in out.stdout
    out = subprocess.run([sys.executable, "-m", "simdex", "nope"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "unknown command" in out.stderr
    empty = tmp_path / "empty"
    empty.write_text("  \n")
    out = subprocess.run(
        [sys.executable, "-m", "simdex", "serve", "x.simdex", "--api-key-file", str(empty)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "empty" in out.stderr


class _Writer(threading.Thread):
    """Sequential writes on its own id range; remembers what was acknowledged."""

    def __init__(self, url: str, lane: int, state: dict, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.url, self.lane, self.state, self.stop = url, lane, state, stop
        self.inflight: tuple | None = None

    def run(self) -> None:
        rng = np.random.default_rng(self.lane * 1000 + len(self.state["acked"]))
        with httpx.Client(base_url=self.url, timeout=10) as c:
            while not self.stop.is_set():
                st = self.state
                with st["lock"]:
                    mine = [i for i in st["present"] if i % 4 == self.lane]
                if mine and rng.random() < 0.15:
                    ids = [int(rng.choice(mine))]
                    op = ("remove", ids, None)
                    path, body = "/vectors/delete", {"ids": ids}
                else:
                    n = int(rng.integers(1, 5))
                    ids = [st["next"][self.lane] + 4 * j for j in range(n)]
                    st["next"][self.lane] += 4 * n
                    version = int(rng.integers(1 << 30))
                    vecs = [_vector(i, version) for i in ids]
                    op = ("add", ids, vecs)
                    path, body = "/vectors", {"ids": ids, "vectors": vecs, "payloads": [{"v": version}] * n}
                self.inflight = op
                try:
                    r = c.post(path, json=body)
                except httpx.HTTPError:
                    return  # the server died: this op stays in flight (unknown outcome)
                assert r.status_code == 200, r.text
                self.inflight = None
                kind, ids, vecs = op
                with st["lock"]:
                    for j, i in enumerate(ids):
                        if kind == "add":
                            st["present"][i] = vecs[j]
                        else:
                            del st["present"][i]
                    st["acked"].append(op)


def _fetch(c, ids: list[int]) -> tuple[dict, list]:
    found, missing = {}, []
    for s in range(0, len(ids), 1000):
        r = c.post("/vectors/get", json={"ids": ids[s : s + 1000]})
        assert r.status_code == 200, r.text
        found.update({rec["id"]: rec["vector"] for rec in r.json()["records"]})
        missing += r.json()["missing"]
    return found, missing


@pytest.mark.slow
def test_sigkill_under_writes_loses_no_acknowledged_write(tmp_path, base_path):
    data = str(tmp_path / "data")
    rng = np.random.default_rng(1234)
    state = {
        "present": {i: _vector(i) for i in range(10)},
        "acked": [],
        "next": [1000, 1001, 1002, 1003],
        "lock": threading.Lock(),
    }
    removed_ever: set[int] = set()
    kills = checked_inflight = 0
    for round_ in range(CRASH_KILLS + 1):
        with serve([base_path, "--wal", data]) as (url, proc):
            with httpx.Client(base_url=url, timeout=30) as c:
                # 1. everything acknowledged before the last kill is there, with its exact vector
                inflight_ids = {i for op in state.get("inflight", []) for i in op[1]}
                ids = sorted(set(state["present"]) | removed_ever | inflight_ids)
                found, missing = _fetch(c, ids)
                for op in state.get("inflight", []):  # 2. unacknowledged requests: all or nothing
                    kind, op_ids, vecs = op
                    there = [i in found for i in op_ids]
                    assert all(there) or not any(there), (round_, op, there)
                    if kind == "add" and all(there):
                        for j, i in enumerate(op_ids):
                            assert found[i] == vecs[j]
                            state["present"][i] = vecs[j]  # it was applied: now part of the truth
                    if kind == "remove" and not any(there):
                        for i in op_ids:
                            state["present"].pop(i, None)
                    checked_inflight += 1
                for i, vec in state["present"].items():
                    assert i in found, f"round {round_}: acknowledged id {i} is missing after restart"
                    assert found[i] == vec, f"round {round_}: id {i} has a different vector"
                for i in set(ids) - set(state["present"]):
                    assert i not in found, f"round {round_}: removed id {i} came back"
                removed_ever |= {i for op in state["acked"] if op[0] == "remove" for i in op[1]}
                if round_ == CRASH_KILLS:
                    break
                if round_ % 7 == 3:  # now and then a snapshot, so restarts also cross a log truncation
                    assert c.post("/snapshot").status_code == 200
            # 3. a stream of writes, then SIGKILL at a random moment
            stop = threading.Event()
            writers = [_Writer(url, lane, state, stop) for lane in range(4)]
            acked_before = len(state["acked"])
            for w in writers:
                w.start()
            deadline = time.monotonic() + 20  # the stream is flowing, then a random moment
            while len(state["acked"]) == acked_before and time.monotonic() < deadline:
                time.sleep(0.005)
            time.sleep(float(rng.uniform(0.0, 0.3)))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            kills += 1
            stop.set()
            for w in writers:
                w.join(timeout=30)
            state["inflight"] = [w.inflight for w in writers if w.inflight is not None]
    assert kills == CRASH_KILLS
    assert len(state["acked"]) >= CRASH_KILLS  # the writes really happened (>= 1 per round)
    print(f"{kills} kills, {len(state['acked'])} acknowledged writes, {checked_inflight} in-flight checked")


# --------------------------------------------------------------------------- OpenAPI fuzz
schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

FUZZ_KEY = "fuzz-key-0123"
# Examples per (operation, mode) for operations that take input; the count of requests
# actually sent is checked below.
FUZZ_EXAMPLES = {"positive": 80, "negative": 70}
FUZZ_TRIVIAL = 5  # GET /health, /ready, /info, /metrics, POST /snapshot: little to vary
FUZZ_MIN_REQUESTS = 1000
FUZZ_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
_fuzz_count: dict[str, int] = {}


def _npy_bytes(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _filled(shape: tuple, fill: float, dtype: str) -> np.ndarray:
    with np.errstate(invalid="ignore", over="ignore"):  # NaN/inf into an int array: garbage on purpose
        return np.full(shape, fill).astype(dtype)


# .npy bodies: well-formed arrays of any float shape/dtype (finite or not), and raw garbage.
schemathesis.openapi.media_type(
    "application/x-npy",
    st.one_of(
        st.builds(
            lambda rows, cols, fill, dt: _npy_bytes(_filled((rows, cols), fill, dt)),
            st.integers(0, 3),
            st.sampled_from([DIM, DIM - 1, 1]),
            st.floats(allow_nan=True, allow_infinity=True, width=32),
            st.sampled_from(["<f4", "<f8", "<i4", ">f4"]),
        ),
        st.binary(max_size=200),
    ),
)


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    index = ExactIndex(DIM)
    index.add(np.stack([_vector(i) for i in range(50)]), np.arange(50))
    index.save(tmp / "base.simdex")
    key = tmp / "key"
    key.write_text(FUZZ_KEY)
    with serve([str(tmp / "base.simdex"), "--wal", str(tmp / "data"), "--api-key-file", str(key)]) as (
        url,
        _,
    ):
        yield url


@pytest.fixture
def fuzz_schema(fuzz_server):
    return schemathesis.openapi.from_url(f"{fuzz_server}/openapi.json")


def test_openapi_fuzz(fuzz_schema, fuzz_server):
    """Generated requests (valid and invalid) for every operation against the live server:
    no 5xx, and every reply matches the documented status codes, content types and schemas."""
    from hypothesis import given
    from schemathesis import GenerationMode

    operations = [r.ok() for r in fuzz_schema.get_all_operations()]
    assert len(operations) >= 10

    def fuzz_operation(op, mode, examples: int) -> None:
        label = op.label

        @given(case=op.as_strategy(generation_mode=mode))
        @settings(
            max_examples=examples,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case):
            case.call_and_validate(
                base_url=fuzz_server, headers={"X-API-Key": FUZZ_KEY}, checks=FUZZ_CHECKS, timeout=30
            )
            _fuzz_count[label] = _fuzz_count.get(label, 0) + 1

        run()

    trivial = {"GET /health", "GET /ready", "GET /info", "GET /metrics", "POST /snapshot"}
    for op in operations:
        if op.label in trivial:
            fuzz_operation(op, GenerationMode.POSITIVE, FUZZ_TRIVIAL)
        else:
            fuzz_operation(op, GenerationMode.POSITIVE, FUZZ_EXAMPLES["positive"])
            fuzz_operation(op, GenerationMode.NEGATIVE, FUZZ_EXAMPLES["negative"])


def test_openapi_fuzz_sent_enough_requests():
    """Runs after test_openapi_fuzz (file order): it really sent >= FUZZ_MIN_REQUESTS requests."""
    total = sum(_fuzz_count.values())
    print(f"fuzz: {total} requests over {len(_fuzz_count)} operations: {_fuzz_count}")
    assert total >= FUZZ_MIN_REQUESTS, _fuzz_count
    assert len(_fuzz_count) >= 10
