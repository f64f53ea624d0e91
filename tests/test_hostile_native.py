"""Native threads, locks, fork, exit, numerics at the edges and argument bounds (issue 17).

Cases that could hang or abort the interpreter run in a subprocess with a timeout, so
a regression fails the test instead of hanging or killing the suite.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import simdex
from simdex import ExactIndex, LSHIndex, knn
from simdex._runtime import core

POSIX = pytest.mark.skipif(sys.platform == "win32", reason="POSIX fork/signals")


def run_py(code: str, timeout: float = 90.0) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter; a hang fails the test rather than the suite."""
    try:
        return subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the script hung (> {timeout} s); output so far: {e.stdout!r} {e.stderr!r}")


# --------------------------------------------------------------------------- 1. exit safety
EXIT_SCRIPT = """
import threading, time, numpy as np, simdex
rng = np.random.default_rng(0)
x = rng.standard_normal((20_000, 64), dtype=np.float32)
q = rng.standard_normal((64, 64), dtype=np.float32)
kind = "{kind}"
if kind == "exact":
    index = simdex.ExactIndex(64); index.add(x)
    search = lambda: index.search(q, k=10)
elif kind == "lsh":
    index = simdex.LSHIndex(64, num_tables=8, hash_bits=8, num_probes=8); index.add(x)
    search = lambda: index.search(q, k=10)
elif kind == "pscan":  # the partitioned sketch scan
    index = simdex.LSHIndex(64, num_tables=3, hash_bits=8, sketch_bits=512, rerank=80, scan=True,
                            scan_fraction=0.2)
    index.add(x)
    search = lambda: index.search(q, k=10)
else:
    search = lambda: simdex.knn(q, x, k=10)
started = threading.Barrier(4)
def loop():
    started.wait()
    while True:
        search()
for _ in range(3):
    threading.Thread(target=loop, daemon=True).start()
started.wait()
time.sleep(0.3)
print("exiting", flush=True)
"""


@POSIX
@pytest.mark.parametrize("kind", ["exact", "lsh", "pscan", "knn"])
def test_exit_while_daemon_threads_search(kind):
    # Exit while daemon threads are inside native searches: no abort, clean status 0.
    for _ in range(3):
        r = run_py(EXIT_SCRIPT.format(kind=kind), timeout=60)
        assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
        assert "terminate" not in r.stderr and "exiting" in r.stdout


# --------------------------------------------------------------------------- 2. deadlock
DEADLOCK_SCRIPT = """
import os, tempfile, threading, numpy as np, simdex
rng = np.random.default_rng(0)
x = rng.standard_normal((30_000, 32), dtype=np.float32)
q = rng.standard_normal((64, 32), dtype=np.float32)
index = {ctor}
index.add(x)
stop = threading.Event()
def search_loop():
    while not stop.is_set():
        index.search(q, k=5)
def write_loop():
    path = os.path.join(tempfile.mkdtemp(), "i.simdex")
    for i in range(15):
        index.reset()
        ids = index.add(x[:2000])
        index.remove(ids[:10])
        index.add(x[:10], ids=ids[:10])
        index.add(x[:10], ids=ids[:10], replace=True)
        index.save(path)
        len(index); index.ids; index.contains(ids[:5]); index.get_vectors(ids[:5])
    stop.set()
if "{searcher}" == "thread":
    t = threading.Thread(target=search_loop, daemon=True); t.start()
    write_loop(); t.join()
else:  # the main thread searches (it is the one that polls for Ctrl-C)
    t = threading.Thread(target=write_loop, daemon=True); t.start()
    search_loop(); t.join()
print("ok", flush=True)
"""

CTORS = {
    "exact": "simdex.ExactIndex(32)",
    "lsh": "simdex.LSHIndex(32, num_tables=4, hash_bits=8, num_probes=4)",
    "pscan": "simdex.LSHIndex(32, num_tables=3, hash_bits=8, sketch_bits=256, rerank=60, scan=True, "
    "scan_fraction=0.2)",
}


@pytest.mark.parametrize("kind", sorted(CTORS))
@pytest.mark.parametrize("searcher", ["thread", "main"])
def test_writers_do_not_deadlock_with_searches(kind, searcher):
    r = run_py(DEADLOCK_SCRIPT.format(ctor=CTORS[kind], searcher=searcher), timeout=120)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-2000:]


# --------------------------------------------------------------------------- 3. fork
FORK_SCRIPT = """
import os, sys, threading, time, numpy as np, simdex
rng = np.random.default_rng(0)
x = rng.standard_normal((30_000, 32), dtype=np.float32)
q = rng.standard_normal((64, 32), dtype=np.float32)
index = {ctor}
index.add(x)
stop = threading.Event()
def search_loop():
    while not stop.is_set():
        index.search(q, k=5)
def write_loop():  # writers hold the index's Python lock and its native write lock
    v = rng.standard_normal((1, 32), dtype=np.float32)
    while not stop.is_set():
        index.add(v, ids=[10**9], replace=True)
threads = [threading.Thread(target=search_loop, daemon=True) for _ in range(2)]
threads.append(threading.Thread(target=write_loop, daemon=True))
for t in threads: t.start()
time.sleep(0.2)
bad = 0
for i in range(6):
    pid = os.fork()
    if pid == 0:  # child: every operation must work (and not hang)
        try:
            ids = index.add(rng.standard_normal((5, 32), dtype=np.float32))
            index.remove(ids[:2])
            D, I = index.search(q[:3], k=3)
            index.search(q, k=3, num_threads=2)
            index.reset()
            index.add(x[:100])
            index.add(x[:1], ids=[10**9])
            os._exit(0 if len(index) == 101 else 1)
        except BaseException:
            os._exit(2)
    deadline = time.monotonic() + 20
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            bad += status != 0
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9); os.waitpid(pid, 0)
            print("child hung", flush=True); bad += 1
            break
        time.sleep(0.01)
    time.sleep(0.05)
stop.set()
for t in threads: t.join()
print("bad", bad, flush=True)
"""


@POSIX
@pytest.mark.parametrize("kind", sorted(CTORS))
def test_fork_during_searches_and_writes_leaves_child_usable(kind):
    r = run_py(FORK_SCRIPT.format(ctor=CTORS[kind]), timeout=180)
    assert r.returncode == 0 and "bad 0" in r.stdout, (r.stdout, r.stderr[-2000:])


# --------------------------------------------------------------------------- 4. numerics
def test_values_beyond_float32_products_rejected():
    index = ExactIndex(4, metric="l2")
    index.add(np.eye(4))
    big = np.array([3e38, 0, 0, 0], dtype=np.float32)  # finite float32, but its square is not
    for bad in (big, big.astype(np.float64), np.array([2**64 - 1, 0, 0, 0], dtype=np.uint64)):
        with pytest.raises(ValueError, match="float32"):
            index.search(bad, k=1)
        with pytest.raises(ValueError, match="float32"):
            index.add(bad)
        with pytest.raises(ValueError, match="float32"):
            knn(bad, np.eye(4), k=1)
    with pytest.raises(ValueError, match="float32"):
        ExactIndex(2).add(np.array([[1e300, 1.0]]))  # float64 beyond float32 entirely


def test_tiny_rows_rejected_but_tiny_components_accepted():
    index = ExactIndex(3)
    for tiny in ([1e-40, 0.0, 0.0], [1e-300, 1e-301, 0.0], [3e-20, -3e-20, 0.0]):
        with pytest.raises(ValueError, match="underflow"):
            index.add(np.array(tiny))
    # A normal row may hold subnormal components (they are just negligible).
    index.add(np.array([[1.0, 1e-40, 0.0]], dtype=np.float32))
    # Zero rows stay legal (cosine distance 1 to everything).
    index.add(np.zeros(3))
    assert len(index) == 2


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2", "sql2"])
def test_large_and_small_magnitudes_within_the_rule_are_correct(metric):
    rng = np.random.default_rng(1)
    for scale in (1e15, 1e-15):
        x = rng.standard_normal((50, 8)) * scale
        q = rng.standard_normal((3, 8)) * scale
        D, I = knn(q, x, k=5, metric=metric)
        x32, q32 = x.astype(np.float32).astype(np.float64), q.astype(np.float32).astype(np.float64)
        if metric == "cosine":
            ref = (
                1
                - (q32 / np.linalg.norm(q32, axis=1, keepdims=True))
                @ (x32 / np.linalg.norm(x32, axis=1, keepdims=True)).T
            )
            tol = 1e-5
        elif metric == "ip":
            ref, tol = -(q32 @ x32.T), 1e-5 * scale**2 * 8
        elif metric == "l2":
            ref, tol = np.linalg.norm(q32[:, None] - x32[None], axis=2), 1e-3 * scale
        else:
            ref, tol = ((q32[:, None] - x32[None]) ** 2).sum(axis=2), 1e-4 * scale**2 * 8
        np.testing.assert_allclose(D, np.sort(ref, axis=1)[:, :5], atol=tol, rtol=1e-4)
        np.testing.assert_allclose(np.take_along_axis(ref, I, axis=1), D, atol=tol, rtol=1e-4)


# --------------------------------------------------------------------------- 5. tie rule
def _tie_data(metric):
    rng = np.random.default_rng(7)
    # Small integers: many exact duplicates and exact ties in distance.
    x = rng.integers(-2, 3, size=(6000, 16)).astype(np.float32)
    x = np.concatenate([x, x[:3000]])  # every one of the first 3000 rows twice
    q = rng.integers(-2, 3, size=(16, 16)).astype(np.float32)
    return x, q


def _assert_ties_ascending(D, I):
    for d, i in zip(D, I):
        same = np.diff(d) == 0
        assert np.all(np.diff(i)[same] > 0), (d, i)


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2", "sql2"])
@pytest.mark.parametrize("prefilter", [True, False])
def test_tie_rule_holds_for_every_batch_size(metric, prefilter):
    x, q = _tie_data(metric)
    index = ExactIndex(16, metric=metric, fp16_prefilter=prefilter)
    index.add(x)
    k = 12
    Db, Ib = index.search(q, k=k)
    _assert_ties_ascending(Db, Ib)
    for b in (1, 2, 3, 5, 16):
        for s in range(0, 16, b):
            D, I = index.search(q[s : s + b], k=k)
            _assert_ties_ascending(D, I)
            np.testing.assert_array_equal(I, Ib[s : s + b])
            np.testing.assert_array_equal(D, Db[s : s + b])
    D1, I1 = knn(q, x, k=k, metric=metric)
    np.testing.assert_array_equal(I1, Ib)
    for nt in (1, 2, 3):
        np.testing.assert_array_equal(index.search(q, k=k, num_threads=nt)[1], Ib)


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2", "sql2"])
def test_tie_rule_lsh_matches_exact_when_probing_everything(metric):
    x, q = _tie_data(metric)
    lsh = LSHIndex(16, metric=metric, num_tables=2, hash_bits=4, num_probes=16)
    lsh.add(x)
    exact = ExactIndex(16, metric=metric)
    exact.add(x)
    De, Ie = exact.search(q, k=12)
    for b in (1, 4, 16):
        for s in range(0, 16, b):
            D, I = lsh.search(q[s : s + b], k=12, refine=0)
            _assert_ties_ascending(D, I)
            np.testing.assert_array_equal(I, Ie[s : s + b])


# --------------------------------------------------------------------------- 6. GIL convoy
def test_non_main_thread_search_never_takes_the_gil_back():
    # Only the main thread polls for Ctrl-C (signals are delivered there), and at
    # coarse intervals: a search elsewhere never queues for the GIL mid-way.
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40_000, 64), dtype=np.float32)
    q = rng.standard_normal((256, 64), dtype=np.float32)
    index = ExactIndex(64)
    index.add(x)
    polls = []

    def work():
        before = core()._interrupt_polls()
        index.search(q, k=10, num_threads=1)
        knn(q, x, k=10, num_threads=1)
        polls.append(core()._interrupt_polls() - before)

    t = threading.Thread(target=work)
    t.start()
    t.join(60)
    assert polls == [0]
    # The main thread polls, but at most every 50 ms, never per block.
    before = core()._interrupt_polls()
    t0 = time.perf_counter()
    knn(q, x, k=10, num_threads=1, metric="ip")
    elapsed = time.perf_counter() - t0
    assert core()._interrupt_polls() - before <= elapsed / 0.05 + 1


# --------------------------------------------------------------------------- 8. arguments
def test_thread_counts_bounded():
    cap = core().max_threads()
    assert cap >= os.cpu_count()
    with pytest.raises(ValueError, match="num_threads"):
        simdex.set_num_threads(10**9)
    assert simdex.get_num_threads() <= cap  # a rejected call changed nothing
    index = ExactIndex(4)
    index.add(np.eye(4))
    for bad in (cap + 1, 10**8):
        with pytest.raises(ValueError, match="num_threads"):
            index.search(np.eye(4), k=1, num_threads=bad)
        with pytest.raises(ValueError, match="num_threads"):
            knn(np.eye(4), np.eye(4), k=1, num_threads=bad)
    index.search(np.eye(4), k=1, num_threads=cap)


def test_num_probes_bounded():
    with pytest.raises(ValueError, match="num_probes"):
        LSHIndex(8, hash_bits=64, num_probes=2**63)
    index = LSHIndex(8, num_tables=2, hash_bits=64)
    index.add(np.random.default_rng(0).standard_normal((100, 8)))
    with pytest.raises(ValueError, match="num_probes"):
        index.search(np.ones(8), k=1, num_probes=10**7)
    index.search(np.ones(8), k=1, num_probes=1024)


def test_huge_k_is_a_clear_error():
    index = ExactIndex(4)
    index.add(np.eye(4))
    with pytest.raises(ValueError, match="k"):
        index.search(np.eye(4), k=10**12)
    with pytest.raises(ValueError, match="k"):
        knn(np.eye(4), np.eye(4), k=10**12)
    lsh = LSHIndex(4)
    lsh.add(np.eye(4))
    with pytest.raises(ValueError, match="k"):
        lsh.search(np.eye(4), k=10**12)
    D, I = index.search(np.eye(4)[0], k=6)  # the documented padding still holds
    assert I.tolist()[4:] == [-1, -1]


@pytest.mark.parametrize("cls", [ExactIndex, LSHIndex])
def test_ids_bounded_to_int64(cls):
    index = cls(2)
    with pytest.raises(ValueError, match="int64"):
        index.add(np.ones((1, 2)), ids=np.array([2**63], dtype=np.uint64))
    with pytest.raises(ValueError, match="int64"):
        index.remove(np.array([2**63], dtype=np.uint64))
    with pytest.raises(ValueError):
        index.add(np.ones((1, 2)), ids=[2**63 - 1])  # reserved (the "no result" marker)
    index.add(np.ones((1, 2)), ids=[2**63 - 2])  # the largest id
    with pytest.raises(ValueError, match="id"):
        index.add(np.ones((1, 2)))  # auto ids exhausted: a clear error, not OverflowError
    index.add(np.ones((1, 2)), ids=[5])
    assert sorted(index.ids.tolist()) == [5, 2**63 - 2]


@pytest.mark.parametrize("cls", [ExactIndex, LSHIndex])
def test_empty_ids(cls):
    index = cls(2)
    with pytest.raises(ValueError, match="empty"):
        index.add(np.empty((0, 2)), ids=[])
    with pytest.raises(ValueError, match="ids"):
        index.add(np.ones((1, 2)), ids=[])
    index.remove([])  # removing nothing is fine
    assert index.contains([]).shape == (0,)


# --------------------------------------------------------------------------- #14.5 writers
@pytest.mark.parametrize("kind", ["exact", "lsh"])
def test_writer_is_not_starved_by_searches(kind):
    # A write waits at most for the searches already running: with 3 threads searching
    # back to back, add+remove stays within 50 ms at p99 (reader-preferring: seconds).
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50_000, 32), dtype=np.float32)
    q = rng.standard_normal((4, 32), dtype=np.float32)
    if kind == "exact":
        index = ExactIndex(32)
    else:
        index = LSHIndex(32, num_tables=8, hash_bits=10, num_probes=8)
    index.add(x)
    stop = threading.Event()
    search_times: list[float] = []

    def search_loop():
        while not stop.is_set():
            t0 = time.perf_counter()
            index.search(q, k=10, num_threads=1)
            search_times.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=search_loop, daemon=True) for _ in range(3)]
    for t in threads:
        t.start()
    lat = []
    try:
        time.sleep(0.1)
        extra = rng.standard_normal((4, 32), dtype=np.float32)
        for _ in range(5):  # warm-up: first-use allocations in the stores
            index.remove(index.add(extra))
        deadline = time.monotonic() + 20
        while len(lat) < 100 and time.monotonic() < deadline:
            t0 = time.perf_counter()
            ids = index.add(extra)
            index.remove(ids)
            lat.append(time.perf_counter() - t0)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert len(lat) >= 50, f"only {len(lat)} writes in 20 s"
    # 50 ms on an idle machine; on a loaded one a search itself can take longer, and a
    # write may wait for one search per lock it takes (add, then remove).
    p99, p99_search = np.percentile(lat, 99), np.percentile(search_times, 99)
    assert p99 < max(0.050, 3 * p99_search), (
        f"write p99 {p99 * 1e3:.1f} ms, search p99 {p99_search * 1e3:.1f} ms"
    )


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_tie_rule_with_many_duplicates(metric):
    # 60 copies of every vector: the k-th place ties with far more rows than the first
    # candidate list holds, so the GEMM path must widen it (or scan) to stay exact.
    rng = np.random.default_rng(3)
    x = np.repeat(rng.standard_normal((100, 16)).astype(np.float32), 60, axis=0)
    perm = rng.permutation(len(x))
    x, ids = x[perm], np.arange(len(x))[perm] * 3 + 1  # ids not in storage order
    q = rng.standard_normal((20, 16)).astype(np.float32)
    index = ExactIndex(16, metric=metric)
    index.add(x, ids=ids)
    Db, Ib = index.search(q, k=25)
    _assert_ties_ascending(Db, Ib)
    for i in range(0, 20, 7):
        D1, I1 = index.search(q[i], k=25)
        np.testing.assert_array_equal(I1, Ib[i])
    # The oracle: by float64 distance, then id; duplicates tie exactly.
    ref = {
        "cosine": lambda: (
            1
            - (q / np.linalg.norm(q, axis=1, keepdims=True))
            @ (x / np.linalg.norm(x, axis=1, keepdims=True)).T
        ),
        "ip": lambda: -(q @ x.T),
        "l2": lambda: np.linalg.norm(q[:, None] - x[None], axis=2),
    }[metric]()
    for r in range(len(q)):
        order = np.lexsort((ids, np.round(ref[r].astype(np.float64), 4)))[:25]
        assert sorted(ids[order].tolist()) == sorted(Ib[r].tolist())
