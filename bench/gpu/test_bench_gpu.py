"""GPU benchmarks (pytest-benchmark): exact k-NN and hashing against cuBLAS rates.

Run on a GPU machine with ``bench/gpu/run.sh`` (it writes bench/results/gpu.json).
Everything is measured in one process on the same device-resident data:

* ``gemm``: the blocked product queries x base^T with ``cupy.matmul`` (cuBLAS
  SGEMM, FP32; CuPy's TF32 mode stays off) into a preallocated tile: the GPU's
  measured matrix-product rate for this shape.
* ``simdex``: :func:`simdex.gpu.knn` (tiled GEMM + fused epilogue + block top-k) in
  each precision: ``fp32`` (SIMT FP32), ``tf32x3`` (tensor cores, ~FP32 accuracy),
  ``tf32`` (tensor cores). Reported as achieved GFLOP/s (2*Q*N*d / time), as a
  fraction of ``gemm`` (the FP32 cuBLAS rate), and with recall.
* ``cupy_baseline``: cupy.matmul + cupy.argpartition per base block, then a merge,
  on the first SIMDEX_BENCH_BASELINE_Q queries (argpartition sorts, so it is slow).
* recall@k of both against a float64 ground truth for the first 100 queries.
* GPU LSH (16 tables x 16 bits, 4 probes): build time, query throughput and
  recall against the exact result.
* hashing N x d into 16 tables x 16 bits: :func:`simdex.gpu.hash_vectors_gpu`
  (float64 in-order rule) vs the cuBLAS FP32 rate of the same N x d x 256 product,
  and vs a CuPy baseline (matmul + sign + bit packing).

Sizes: SIMDEX_BENCH_N (10_000_000), SIMDEX_BENCH_Q (10_000), SIMDEX_BENCH_D (128).
``make check-cuda-emu`` runs this file at tiny sizes on the CPU emulator as a smoke test
of the harness (its timings mean nothing and are written under build/).
Without CuPy the cuBLAS comparisons are skipped and data is uploaded as
simdex.gpu.DeviceArray.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from simdex import gpu

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not gpu.cuda_available(), reason=f"no GPU path: {gpu.no_cuda_reason()}"),
]

N = int(os.environ.get("SIMDEX_BENCH_N", 10_000_000))
Q = int(os.environ.get("SIMDEX_BENCH_Q", 10_000))
D = int(os.environ.get("SIMDEX_BENCH_D", 128))
K = 10
BASELINE_Q = int(os.environ.get("SIMDEX_BENCH_BASELINE_Q", 1000))
GEMM_BLOCK = 65536
L, BITS = 16, 16
SUMMARY: dict[str, object] = {"N": N, "Q": Q, "d": D, "k": K}
# SIMDEX_BENCH_RESULTS: where gpu_summary.json goes (make check-cuda-emu points it into
# build/, so that a smoke run on the CPU emulator never writes into bench/results).
RESULTS = Path(os.environ.get("SIMDEX_BENCH_RESULTS", Path(__file__).resolve().parents[1] / "results"))

try:
    import cupy as cp
except ImportError:  # the cuBLAS comparisons need CuPy
    cp = None
needs_cupy = pytest.mark.skipif(cp is None, reason="CuPy not installed (pip install 'simdex[gpu]')")


def _head(a, n):
    """The first n rows of a device result as NumPy (CuPy slices on the device first;
    a simdex DeviceArray has no slicing, so it is copied whole)."""
    if isinstance(a, gpu.DeviceArray):
        return a.get()[:n]
    return a[:n].get() if hasattr(a, "get") else np.asarray(a)[:n]


def _sync():
    if cp is not None:
        cp.cuda.Device().synchronize()


@pytest.fixture(scope="module")
def data():
    SUMMARY["device"] = gpu.device_info()
    if cp is not None:
        rng = cp.random.default_rng(0)
        x = rng.standard_normal((N, D), dtype=cp.float32)
        q = rng.standard_normal((Q, D), dtype=cp.float32)
        planes = rng.standard_normal((L * BITS, D), dtype=cp.float32)
    else:
        rng = np.random.default_rng(0)
        chunks = [
            rng.standard_normal((min(1_000_000, N - i), D), dtype=np.float32) for i in range(0, N, 1_000_000)
        ]
        x = gpu.DeviceArray.from_host(np.concatenate(chunks))
        del chunks
        q = gpu.DeviceArray.from_host(rng.standard_normal((Q, D), dtype=np.float32))
        planes = gpu.DeviceArray.from_host(rng.standard_normal((L * BITS, D), dtype=np.float32))
    _sync()
    return {"x": x, "q": q, "planes": planes}


def _rate(flops: float, seconds: float) -> float:
    return flops / seconds / 1e9


def _run(benchmark, fn, rounds=3, warmup=1):
    result = benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=warmup)
    return result, benchmark.stats.stats.min


@needs_cupy
def test_gemm_rate_knn_shape(benchmark, data):
    x, q = data["x"], data["q"]
    tile = cp.empty((Q, GEMM_BLOCK), dtype=cp.float32)

    def gemm():
        for b0 in range(0, N, GEMM_BLOCK):
            xb = x[b0 : b0 + GEMM_BLOCK]
            if xb.shape[0] == GEMM_BLOCK:  # into the preallocated tile (contiguous out)
                cp.matmul(q, xb.T, out=tile)
            else:
                cp.matmul(q, xb.T)
        _sync()

    _, t = _run(benchmark, gemm)
    SUMMARY["gemm_gflops"] = _rate(2.0 * Q * N * D, t)
    benchmark.extra_info["gflops"] = SUMMARY["gemm_gflops"]


@pytest.mark.parametrize("precision", ["fp32", "tf32x3", "tf32"])
def test_simdex_knn(benchmark, data, precision):
    (Dd, Id), t = _run(
        benchmark, lambda: gpu.knn(data["q"], data["x"], k=K, metric="ip", precision=precision)
    )
    key = f"simdex_{precision}"
    SUMMARY[f"{key}_knn_s"] = t
    SUMMARY[f"{key}_gflops"] = _rate(2.0 * Q * N * D, t)
    if "gemm_gflops" in SUMMARY:
        SUMMARY[f"{key}_vs_gemm"] = SUMMARY[f"{key}_gflops"] / SUMMARY["gemm_gflops"]
    benchmark.extra_info.update({k: v for k, v in SUMMARY.items() if k.startswith(key)})
    SUMMARY[f"_ids_{precision}"] = _head(Id, 100)
    if precision == "fp32":
        SUMMARY["_simdex_ids"] = SUMMARY["_ids_fp32"]


def _cupy_knn(q, x):
    best_s = best_i = None
    for b0 in range(0, N, GEMM_BLOCK):
        s = q @ x[b0 : b0 + GEMM_BLOCK].T
        part = (
            cp.argpartition(-s, K - 1, axis=1)[:, :K]
            if s.shape[1] > K
            else cp.broadcast_to(cp.arange(s.shape[1]), (s.shape[0], s.shape[1]))
        )
        ps = cp.take_along_axis(s, part, 1)
        pi = part + b0
        if best_s is None:
            best_s, best_i = ps, pi
        else:
            cs, ci = cp.concatenate([best_s, ps], 1), cp.concatenate([best_i, pi], 1)
            sel = cp.argpartition(-cs, K - 1, axis=1)[:, :K]
            best_s, best_i = cp.take_along_axis(cs, sel, 1), cp.take_along_axis(ci, sel, 1)
    order = cp.argsort(-best_s, axis=1)
    out = cp.take_along_axis(best_i, order, 1)
    _sync()
    return out


@needs_cupy
def test_cupy_baseline_knn(benchmark, data):
    qb = data["q"][:BASELINE_Q]
    ids, t = _run(benchmark, lambda: _cupy_knn(qb, data["x"]), rounds=1, warmup=0)
    SUMMARY["cupy_baseline_q"] = BASELINE_Q
    SUMMARY["cupy_baseline_s"] = t
    SUMMARY["cupy_baseline_gflops"] = _rate(2.0 * BASELINE_Q * N * D, t)
    benchmark.extra_info["gflops"] = SUMMARY["cupy_baseline_gflops"]
    SUMMARY["_cupy_ids"] = ids[:100].get()


@needs_cupy
def test_recall_against_float64(data):
    q64 = data["q"][:100].astype(cp.float64)
    best = []
    for b0 in range(0, N, GEMM_BLOCK):
        s = q64 @ data["x"][b0 : b0 + GEMM_BLOCK].astype(cp.float64).T
        best.append(cp.argsort(-s, axis=1)[:, :K] + b0)
    cand = cp.concatenate(best, 1)
    sc = cp.einsum("qd,qkd->qk", q64, data["x"][cand].astype(cp.float64))
    gt = cp.take_along_axis(cand, cp.argsort(-sc, axis=1)[:, :K], 1).get()

    def recall(ids):
        return float(np.mean([len(set(a.tolist()) & set(b.tolist())) / K for a, b in zip(ids, gt)]))

    for precision in ("fp32", "tf32x3", "tf32"):
        if f"_ids_{precision}" in SUMMARY:
            SUMMARY[f"simdex_{precision}_recall"] = recall(SUMMARY[f"_ids_{precision}"])
    if "_cupy_ids" in SUMMARY:
        SUMMARY["cupy_baseline_recall"] = recall(SUMMARY["_cupy_ids"])
    # FP32 vs float64: only near-ties at rank k may differ.
    assert SUMMARY.get("simdex_fp32_recall", 1.0) >= 0.99


@needs_cupy
def test_gemm_rate_hash_shape(benchmark, data):
    x, planes = data["x"], data["planes"]
    rows = 1 << 20
    tile = cp.empty((rows, L * BITS), dtype=cp.float32)

    def gemm():
        for b0 in range(0, N, rows):
            xb = x[b0 : b0 + rows]
            cp.matmul(xb, planes.T, out=tile[: xb.shape[0]])  # a row slice: still C-contiguous
        _sync()

    _, t = _run(benchmark, gemm)
    SUMMARY["hash_gemm_gflops"] = _rate(2.0 * N * D * L * BITS, t)
    benchmark.extra_info["gflops"] = SUMMARY["hash_gemm_gflops"]


def test_simdex_hash(benchmark, data):
    codes, t = _run(benchmark, lambda: gpu.hash_vectors_gpu(data["x"], data["planes"], num_tables=L))
    SUMMARY["simdex_hash_s"] = t
    SUMMARY["simdex_hash_gflops"] = _rate(2.0 * N * D * L * BITS, t)
    if "hash_gemm_gflops" in SUMMARY:
        SUMMARY["simdex_hash_vs_gemm"] = SUMMARY["simdex_hash_gflops"] / SUMMARY["hash_gemm_gflops"]
    benchmark.extra_info.update({k: v for k, v in SUMMARY.items() if k.startswith("simdex_hash")})
    sample = _head(codes, 1000)
    x_host = _head(data["x"], 1000)
    p_host = data["planes"].get()
    assert np.array_equal(np.asarray(sample), gpu.hash_reference(x_host, p_host, num_tables=L))


@needs_cupy
def test_cupy_hash_baseline(benchmark, data):
    x, planes = data["x"], data["planes"]
    weights = cp.left_shift(cp.uint64(1), cp.arange(BITS, dtype=cp.uint64))

    def run():
        out = cp.empty((N, L), dtype=cp.uint64)
        for b0 in range(0, N, 1 << 20):
            s = x[b0 : b0 + (1 << 20)] @ planes.T
            out[b0 : b0 + s.shape[0]] = (
                (s > 0).reshape(s.shape[0], L, BITS).astype(cp.uint64) * weights
            ).sum(-1)
        _sync()
        return out

    _, t = _run(benchmark, run)
    SUMMARY["cupy_hash_s"] = t


def test_simdex_lsh(benchmark, data):
    """GPU LSH: build 16 tables x 16 bits over the base, then search all queries (4 probes)."""
    t0 = time.perf_counter()
    lsh = gpu.GpuLSHIndex(data["x"], data["planes"], num_tables=L, metric="ip")
    SUMMARY["lsh_build_s"] = time.perf_counter() - t0
    (_, ids), t = _run(benchmark, lambda: lsh.search(data["q"], k=K, num_probes=4))
    SUMMARY["lsh_search_s"] = t
    SUMMARY["lsh_qps"] = Q / t
    if "_simdex_ids" in SUMMARY:  # recall against the exact GPU result
        got = _head(ids, 100)
        exact = SUMMARY["_simdex_ids"]
        SUMMARY["lsh_recall_vs_exact"] = float(
            np.mean([len(set(a.tolist()) & set(b.tolist())) / K for a, b in zip(got, exact)])
        )
    benchmark.extra_info.update({k: v for k, v in SUMMARY.items() if k.startswith("lsh")})


def test_zz_write_summary():
    RESULTS.mkdir(parents=True, exist_ok=True)
    summary = {k: v for k, v in SUMMARY.items() if not k.startswith("_")}
    summary["when"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    (RESULTS / "gpu_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print("\n" + json.dumps(summary, indent=2))
