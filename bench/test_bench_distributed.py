"""ShardedIndex on a local Ray cluster vs one in-process ExactIndex, same data, same run.

The bar: 2M x 128 on 4 shards on this machine; search QPS and the overhead of the
sharded index against a single in-process index at batch sizes 1, 100 and 10,000;
add throughput. Sharded exact search must return the single index's answer, so
"recall" here is the share of queries whose ids *and* distances are identical.

Also measured, for the scaling estimate in the note: one shard's own search time
(an in-process ExactIndex holding a quarter of the data) and the cost of the
top-k merge, so that overhead = sharded time - slowest shard - merge is Ray's
fan-out (task submission, object store, result transfer, scheduling).

Environment: SIMDEX_BENCH_DIST_N (default 2,000,000), SIMDEX_BENCH_DIST_SHARDS (4),
SIMDEX_BENCH_DIST_BIG (the large batch, default 10,000), SIMDEX_BENCH_THREADS (2).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time

import numpy as np
import pytest

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # the cluster stays on 127.0.0.1
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
ray = pytest.importorskip("ray")

import simdex  # noqa: E402
from datasets import gaussian  # noqa: E402
from simdex.apps.distributed import ShardedIndex, merge_topk, shard_of  # noqa: E402

N = int(os.environ.get("SIMDEX_BENCH_DIST_N", 2_000_000))
SHARDS = int(os.environ.get("SIMDEX_BENCH_DIST_SHARDS", 4))
BIG = int(os.environ.get("SIMDEX_BENCH_DIST_BIG", 10_000))
THREADS = int(os.environ.get("SIMDEX_BENCH_THREADS", 2))
D, K = 128, 10
ADD_BATCH = 100_000


@pytest.fixture(scope="module")
def cluster():
    temp = tempfile.mkdtemp(prefix="sdxbench-")
    ray.init(
        num_cpus=THREADS,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        _temp_dir=temp,
    )
    try:
        yield
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


def _best(fn, rounds):
    best, out = float("inf"), None
    for _ in range(rounds):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _one_at_a_time(search, q):
    t0 = time.perf_counter()
    res = [search(row) for row in q]
    return time.perf_counter() - t0, (np.stack([r[0] for r in res]), np.stack([r[1] for r in res]))


def test_sharded_vs_single(cluster, record):
    x = gaussian(N, D, seed=1)
    q_all = gaussian(BIG, D, seed=2)
    simdex.set_num_threads(THREADS)

    # -- add throughput ----------------------------------------------------------------------
    single = simdex.ExactIndex(D, "ip")
    t_single_add, _ = _best(lambda: [single.add(x[i : i + ADD_BATCH]) for i in range(0, N, ADD_BATCH)], 1)
    # One thread per shard: SHARDS actors share THREADS cores.
    sharded = ShardedIndex(D, "ip", SHARDS, num_threads=max(1, THREADS // SHARDS))
    t_sharded_add, _ = _best(lambda: [sharded.add(x[i : i + ADD_BATCH]) for i in range(0, N, ADD_BATCH)], 1)
    assert len(sharded) == N
    for name, t in (
        ("single ExactIndex (in process)", t_single_add),
        (f"ShardedIndex ({SHARDS} shards)", t_sharded_add),
    ):
        record(
            "distributed",
            op="add",
            method=name,
            N=N,
            d=D,
            batch=ADD_BATCH,
            seconds=round(t, 2),
            vectors_per_s=round(N / t),
            slowdown_vs_single=round(t / t_single_add, 2),
        )

    # -- one shard alone, in process (the per-shard compute of the sharded search) --------------
    rows0 = np.flatnonzero(shard_of(np.arange(N), SHARDS) == 0)
    shard0 = simdex.ExactIndex(D, "ip")
    shard0.add(x[rows0], rows0)
    simdex_threads_per_shard = max(1, THREADS // SHARDS)

    for batch in (1, 100, BIG):
        q = q_all[: max(batch, 50)] if batch == 1 else q_all[:batch]
        rounds = 1 if batch == BIG else 3
        if batch == 1:  # latency-bound: 50 single queries one after another
            t1, (D1, I1) = _one_at_a_time(lambda v: single.search(v, K), q)
            ts, (Ds, Is) = _one_at_a_time(lambda v: sharded.search(v, K), q)
            t0, _ = _one_at_a_time(lambda v: shard0.search(v, K, num_threads=simdex_threads_per_shard), q)
            nq = len(q)
        else:
            t1, (D1, I1) = _best(lambda: single.search(q, K), rounds)  # noqa: B023
            ts, (Ds, Is) = _best(lambda: sharded.search(q, K), rounds)  # noqa: B023
            t0, _ = _best(lambda: shard0.search(q, K, num_threads=simdex_threads_per_shard), rounds)  # noqa: B023
            nq = batch
        # The merge alone, on SHARDS copies of one shard's answer.
        part = shard0.search(q[: nq if batch > 1 else 1], K)
        tm, _ = _best(lambda: merge_topk([part[0]] * SHARDS, [part[1]] * SHARDS, K), 5)  # noqa: B023
        tm *= nq if batch == 1 else 1
        same = float(np.mean(np.all(Is == I1, axis=1) & np.all(Ds == D1, axis=1)))
        common = dict(op="search", N=N, d=D, k=K, batch=batch, queries=nq, threads=THREADS)
        record(
            "distributed",
            method="single ExactIndex (in process)",
            **common,
            seconds=round(t1, 4),
            qps=round(nq / t1, 1),
            ms_per_call=round(1e3 * t1 / (nq if batch == 1 else 1), 3),
        )
        record(
            "distributed",
            method=f"ShardedIndex ({SHARDS} shards, Ray actors)",
            **common,
            seconds=round(ts, 4),
            qps=round(nq / ts, 1),
            ms_per_call=round(1e3 * ts / (nq if batch == 1 else 1), 3),
            overhead_vs_single=round(ts / t1, 2),
            identical_to_single=same,
        )
        record(
            "distributed",
            method=f"one shard alone (N/{SHARDS}, in process, {simdex_threads_per_shard} thread)",
            **common,
            seconds=round(t0, 4),
            ms_per_call=round(1e3 * t0 / (nq if batch == 1 else 1), 3),
            merge_ms_per_call=round(1e3 * tm / (nq if batch == 1 else 1), 3),
            bytes_to_each_shard_per_call=(1 if batch == 1 else nq) * D * 4,
            bytes_back_per_shard_per_call=(1 if batch == 1 else nq) * K * 12,
        )
        assert same == 1.0
    sharded.close()


def test_fan_out_floor(cluster, record):
    """The cost of a sharded call itself: tiny shards, so the search work is ~nothing."""
    x = gaussian(4_000, D, seed=3)
    q = gaussian(200, D, seed=4)
    single = simdex.ExactIndex(D, "ip")
    single.add(x)
    for shards in (1, SHARDS):
        with ShardedIndex(D, "ip", shards, num_threads=1) as sharded:
            sharded.add(x)
            _one_at_a_time(lambda v: sharded.search(v, K), q[:20])  # noqa: B023  (warm)
            ts, _ = _one_at_a_time(lambda v: sharded.search(v, K), q)  # noqa: B023
            t1, _ = _one_at_a_time(lambda v: single.search(v, K), q)
            record(
                "distributed_floor",
                op="fan-out floor",
                method=f"ShardedIndex ({shards} shards of {4_000 // shards} vectors)",
                batch=1,
                queries=len(q),
                ms_per_call=round(1e3 * ts / len(q), 3),
                single_in_process_ms_per_call=round(1e3 * t1 / len(q), 3),
            )
