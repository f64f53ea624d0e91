"""The HTTP service under load, beside the in-process rate measured in the same run.

Server: ``python -m simdex serve`` (a subprocess, uvicorn, 127.0.0.1) over a 100k x 128
ExactIndex with a write-ahead log (fsync on). Load: ``bench/service_load.py`` in another
subprocess (asyncio, HTTP/1.1 keep-alive, no think time). Rows: single-vector searches
(k=10) at concurrency 1, 16, 64; JSON and binary bodies; micro-batching on (1 ms window)
and off. Reference rows: the same index answering one query per ``search`` call in
process, and in batches of 64 (the ceiling micro-batching aims at). Also a 200-client
run (errors must be zero) and write latency while searching.

Knobs: SIMDEX_BENCH_SERVICE_SECONDS (per row, default 5), SIMDEX_BENCH_SERVICE_LONG
(the 200-client run, default 30), SIMDEX_BENCH_N (default 100000).
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from simdex.index import ExactIndex  # noqa: E402

N = int(os.environ.get("SIMDEX_BENCH_N", 100_000))
D = 128
K = 10
SECONDS = float(os.environ.get("SIMDEX_BENCH_SERVICE_SECONDS", 5))
LONG = float(os.environ.get("SIMDEX_BENCH_SERVICE_LONG", 30))
HERE = Path(__file__).parent


@contextmanager
def _server(path: str, data: str, *extra: str):
    proc = subprocess.Popen(
        [sys.executable, "-m", "simdex", "serve", path, "--wal", data, "--port", "0", *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(
        target=lambda: [lines.put(ln) for ln in proc.stderr] + [lines.put(None)], daemon=True
    ).start()
    try:
        while True:
            line = lines.get(timeout=120)
            if line is None:
                raise RuntimeError("server exited")
            if "listening on " in line:
                yield line.rsplit("listening on ", 1)[1].strip(), proc.pid
                break
    finally:
        proc.kill()
        proc.wait(timeout=30)
        proc.stderr.close()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _load(url: str, mode: str, concurrency: int, seconds: float, writers: int = 0) -> dict:
    out = subprocess.run(
        [
            sys.executable,
            str(HERE / "service_load.py"),
            url,
            "--mode",
            mode,
            "--concurrency",
            str(concurrency),
            "--seconds",
            str(seconds),
            "--writers",
            str(writers),
            "--dim",
            str(D),
            "--k",
            str(K),
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 120,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_service_throughput(tmp_path, record):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, D)).astype(np.float32)
    index = ExactIndex(D)
    index.add(x)
    path = str(tmp_path / "base.simdex")
    index.save(path)
    q = rng.normal(size=(2000, D)).astype(np.float32)

    cpu_per_query: dict[int, float] = {}

    def in_process(batch: int, seconds: float = 2.0) -> float:
        done, t0, c0 = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - t0 < seconds:
            index.search(q[done % 1900 : done % 1900 + batch], K)
            done += batch
        cpu_per_query[batch] = (time.process_time() - c0) / done
        return done / (time.perf_counter() - t0)

    # The machine is shared and its load drifts: every HTTP row is compared with the
    # in-process one-query-per-call rate measured just before it (server idle then).
    single = in_process(1)
    batch64 = in_process(64)
    record(
        "service",
        config="in-process, 1 query per call",
        concurrency=1,
        searches_per_s=single,
        vs_in_process_single=1.0,
        cpu_ms_per_search=cpu_per_query[1] * 1e3,
    )
    record(
        "service",
        config="in-process, 64 queries per call",
        concurrency=1,
        searches_per_s=batch64,
        vs_in_process_single=batch64 / single,
        cpu_ms_per_search=cpu_per_query[64] * 1e3,
    )

    def row(config: str, server: tuple, mode: str, c: int, seconds: float, writers: int = 0) -> None:
        url, pid = server
        ref = in_process(1, 1.5)
        cpu0 = _cpu_seconds(pid)
        r = _load(url, mode, c, seconds, writers)
        server_cpu = _cpu_seconds(pid) - cpu0
        fields = dict(
            config=config,
            concurrency=c,
            searches_per_s=r["searches_per_s"],
            in_process_single_per_s=ref,
            vs_in_process_single=r["searches_per_s"] / ref,
            p50_ms=r["p50_ms"],
            p99_ms=r["p99_ms"],
            errors=r["errors"] + r["write_errors"],
            # CPU per search does not depend on how busy the shared machine is: the
            # server's (all threads, HTTP included) beside the in-process single query's.
            cpu_ms_per_search=server_cpu / max(r["requests"], 1) * 1e3,
            in_process_cpu_ms_per_search=cpu_per_query[1] * 1e3,
            load_avg_1m=os.getloadavg()[0],  # the machine is shared: how busy it was
            client_cpu_share=r["client_cpu_s"] / r["wall_s"],
        )
        if writers:
            fields.update(writes=r["writes"], write_p50_ms=r["write_p50_ms"], write_p99_ms=r["write_p99_ms"])
        record("service", **fields)

    for batching in (True, False):
        extra = () if batching else ("--no-batching",)
        tag = "batching 1 ms" if batching else "batching off"
        with _server(path, str(tmp_path / f"data-{batching}"), *extra) as server:
            _load(server[0], "json", 4, 1.0)  # warm-up
            for mode in ("json", "raw", "npy"):
                for c in (1, 16, 64):
                    row(f"HTTP {mode}, {tag}", server, mode, c, SECONDS)
            row(f"HTTP json, {tag}, + 1 writer (add, fsync)", server, "json", 16, SECONDS * 2, writers=1)
            if batching:
                row(f"HTTP raw, {tag}, {LONG:.0f} s", server, "raw", 200, LONG)
