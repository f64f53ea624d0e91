"""GIL convoy and writer latency, each against its own baseline in the same run.

    python bench/native_safety.py            # both measurements, a few seconds each

1. GIL convoy: a 1-query search alone, then with one busy pure-Python thread beside it
   (ExactIndex with num_threads=1 and default, LSHIndex). Native code that takes the
   GIL back between blocks waits a switch interval (5 ms) per block behind the busy
   thread; the ratio "with busy thread / alone" should stay near 1 (the busy thread
   still costs one GIL hand-over when the call returns).
2. Writer latency: add+remove of 4 vectors alone, then with 3 threads searching back
   to back; p50 / p99 / max per write.

Figures are ratios against the baseline measured in the same process (no absolute
claims); the BLAS kernel is printed for the record.
"""

from __future__ import annotations

import statistics
import threading
import time

import numpy as np

import simdex


def _blas() -> str:
    try:
        from threadpoolctl import threadpool_info

        return "; ".join(f"{i.get('internal_api')} {i.get('architecture')}" for i in threadpool_info())
    except Exception as e:  # pragma: no cover - informative only
        return f"threadpoolctl unavailable ({e})"


def _timed(fn, reps: int) -> float:
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def convoy() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((100_000, 64), dtype=np.float32)
    q = rng.standard_normal((1, 64), dtype=np.float32)
    exact = simdex.ExactIndex(64)  # 1-query searches take the float16 pre-filter: 25 blocks
    exact.add(x)
    plain = simdex.ExactIndex(64, fp16_prefilter=False)
    plain.add(x)
    lsh = simdex.LSHIndex(64, num_tables=16, hash_bits=12, num_probes=8)
    lsh.add(x)
    cases = {
        "ExactIndex num_threads=1": lambda: exact.search(q, k=10, num_threads=1),
        "ExactIndex default threads": lambda: exact.search(q, k=10),
        "ExactIndex no fp16, 1 thread": lambda: plain.search(q, k=10, num_threads=1),
        "knn() default threads": lambda: simdex.knn(q, x, k=10),
        "LSHIndex default threads": lambda: lsh.search(q, k=10),
    }
    print("GIL convoy: median of 1-query searches (ms)")
    print(f"{'case':30s} {'alone':>8s} {'busy':>8s} {'ratio':>7s}")
    for name, fn in cases.items():
        fn()
        alone = _timed(fn, 30)
        stop = threading.Event()

        def spin(stop: threading.Event = stop) -> None:
            n = 0
            while not stop.is_set():
                n += 1

        t = threading.Thread(target=spin)
        t.start()
        try:
            time.sleep(0.05)
            busy = _timed(fn, 30)
        finally:
            stop.set()
            t.join()
        print(f"{name:30s} {alone * 1e3:8.2f} {busy * 1e3:8.2f} {busy / alone:7.1f}")


def writers() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50_000, 32), dtype=np.float32)
    q = rng.standard_normal((8, 32), dtype=np.float32)
    extra = rng.standard_normal((4, 32), dtype=np.float32)
    print("\nWriter latency: add+remove of 4 vectors (ms)")
    print(
        f"{'index':10s} {'searchers':>9s} {'writes':>7s} {'p50':>8s} {'p99':>8s} {'max':>8s} {'searches':>9s}"
    )
    for kind in ("exact", "lsh"):
        index = simdex.ExactIndex(32) if kind == "exact" else simdex.LSHIndex(32, num_tables=8, hash_bits=10)
        index.add(x)
        for nsearch in (0, 3):
            stop = threading.Event()
            count = [0] * nsearch

            def search_loop(j: int, stop=stop, index=index, count=count) -> None:
                while not stop.is_set():
                    index.search(q, k=10, num_threads=1)
                    count[j] += 1

            threads = [threading.Thread(target=search_loop, args=(j,)) for j in range(nsearch)]
            for t in threads:
                t.start()
            lat = []
            try:
                time.sleep(0.1)
                deadline = time.monotonic() + 5.0
                while len(lat) < 300 and time.monotonic() < deadline:
                    t0 = time.perf_counter()
                    ids = index.add(extra)
                    index.remove(ids)
                    lat.append(time.perf_counter() - t0)
            finally:
                stop.set()
                for t in threads:
                    t.join()
            ms = np.array(lat) * 1e3
            print(
                f"{kind:10s} {nsearch:9d} {len(lat):7d} {np.percentile(ms, 50):8.2f} "
                f"{np.percentile(ms, 99):8.2f} {ms.max():8.2f} {sum(count):9d}"
            )


if __name__ == "__main__":
    print(f"simdex threads={simdex.get_num_threads()} BLAS: {_blas()}")
    convoy()
    writers()
