"""A small HTTP/1.1 keep-alive load generator for the simdex service (one process, asyncio).

Usage (the benchmark runs it as a separate process, so it does not share the server's GIL)::

    python bench/service_load.py URL --mode json|npy|raw --concurrency 64 --seconds 5 [--writers 1]

Each of ``concurrency`` connections sends single-vector searches back to back (no think
time); ``--writers`` extra connections send one-vector adds back to back. Prints one
JSON object: requests, errors, throughput, latency percentiles, and the generator's own
CPU seconds (to show it is not the bottleneck).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import resource
import time

import numpy as np


def _request(path: str, body: bytes, ctype: str) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _search_bodies(mode: str, dim: int, k: int, n: int, seed: int) -> list[bytes]:
    q = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    out = []
    for row in q:
        if mode == "json":
            out.append(
                _request(
                    "/search", json.dumps({"vectors": [row.tolist()], "k": k}).encode(), "application/json"
                )
            )
        elif mode == "npy":
            buf = io.BytesIO()
            np.save(buf, row.reshape(1, -1))
            out.append(_request(f"/search?k={k}", buf.getvalue(), "application/x-npy"))
        else:
            out.append(_request(f"/search?k={k}", row.astype("<f4").tobytes(), "application/octet-stream"))
    return out


async def _roundtrip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: bytes) -> int:
    writer.write(req)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return status


async def _client(
    host: str, port: int, reqs: list[bytes], offset: int, stop: float, lat: list, errs: list
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    i = offset
    try:
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            try:
                status = await _roundtrip(reader, writer, reqs[i % len(reqs)])
            except (OSError, asyncio.IncompleteReadError, ValueError) as e:
                errs.append(repr(e))
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
                continue
            lat.append(time.perf_counter() - t0)
            if status != 200:
                errs.append(status)
            i += 1
    finally:
        writer.close()


async def _writer(host: str, port: int, dim: int, first_id: int, stop: float, lat: list, errs: list) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    rng = np.random.default_rng(first_id)
    i = first_id
    try:
        while time.perf_counter() < stop:
            body = json.dumps(
                {"ids": [i], "vectors": [rng.normal(size=dim).astype(np.float32).tolist()]}
            ).encode()
            t0 = time.perf_counter()
            status = await _roundtrip(reader, writer, _request("/vectors", body, "application/json"))
            lat.append(time.perf_counter() - t0)
            if status != 200:
                errs.append(status)
            i += 1
            await asyncio.sleep(0.005)  # a steady trickle of writes, not a write flood
    finally:
        writer.close()


def _pct(lat: list[float], p: float) -> float:
    return float(np.percentile(lat, p) * 1e3) if lat else float("nan")


async def main_async(a: argparse.Namespace) -> dict:
    host, port = a.url.split("//", 1)[1].split(":")
    port = int(port)
    reqs = _search_bodies(a.mode, a.dim, a.k, 512, a.seed)
    lat: list[float] = []
    errs: list = []
    wlat: list[float] = []
    werrs: list = []
    start = time.perf_counter()
    stop = start + a.seconds
    tasks = [_client(host, port, reqs, j * 7, stop, lat, errs) for j in range(a.concurrency)]
    tasks += [
        _writer(host, port, a.dim, a.first_id + j * 10_000_000, stop, wlat, werrs) for j in range(a.writers)
    ]
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    await asyncio.gather(*tasks)
    wall = time.perf_counter() - start
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return {
        "requests": len(lat),
        "errors": len(errs),
        "error_kinds": sorted({str(e) for e in errs})[:5],
        "searches_per_s": len(lat) / wall,
        "p50_ms": _pct(lat, 50),
        "p99_ms": _pct(lat, 99),
        "writes": len(wlat),
        "write_errors": len(werrs),
        "write_p50_ms": _pct(wlat, 50),
        "write_p99_ms": _pct(wlat, 99),
        "client_cpu_s": cpu,
        "wall_s": wall,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("url")
    p.add_argument("--mode", choices=("json", "npy", "raw"), default="json")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--writers", type=int, default=0)
    p.add_argument("--first-id", type=int, default=10_000_000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(main_async(a))))


if __name__ == "__main__":
    main()
