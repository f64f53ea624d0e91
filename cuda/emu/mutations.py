"""Mutation check of the CUDA emulator: break the CUDA sources in ways a GPU punishes
(races between streams, missing barriers, out-of-bounds reads, divergent barriers) and
confirm that the emulated GPU test suite fails for every one.

Run from the repository root after `make check-cuda-emu` (which builds build/cuda-emu):
    .venv/bin/python cuda/emu/mutations.py
Each mutation is applied, built, tested under both stream orders, and reverted (also
on Ctrl-C or SIGTERM). Prints CAUGHT / MISSED per mutation; exits 1 if any is missed.
"""

import os
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally: blocks
MUTATIONS = [
    (
        "knn.cu: no wait for the top-k to release a tile buffer (WAR race across streams)",
        "cuda/src/knn.cu",
        "      SIMDEX_CUDA_CHECK(cudaStreamWaitEvent(stream, side.topk_done[buf], 0));  // buffer free again\n",
        "",
    ),
    (
        "knn.cu: no wait for the GEMM before the top-k (RAW race across streams)",
        "cuda/src/knn.cu",
        "      SIMDEX_CUDA_CHECK(cudaStreamWaitEvent(side.stream, side.gemm_done[buf], 0));\n",
        "",
    ),
    (
        "knn.cu: top-k reads the candidate count without the barrier",
        "cuda/src/knn.cu",
        "    __syncthreads();\n    const int c = count;  // uniform",
        "    const int c = count;  // uniform",
    ),
    (
        "gemm_scores.cuh: no barrier at the end of a k step",
        "cuda/src/detail/gemm_scores.cuh",
        "      gemm_store_slice(Bs[buf ^ 1], rb);\n    }\n    __syncthreads();",
        "      gemm_store_slice(Bs[buf ^ 1], rb);\n    }",
    ),
    (
        "gemm_tc.cuh: epilogue reads the stored tile without __syncwarp",
        "cuda/src/detail/gemm_tc.cuh",
        "      wmma::store_matrix_sync(sc, acc[i][j], 16, wmma::mem_row_major);\n      __syncwarp();",
        "      wmma::store_matrix_sync(sc, acc[i][j], 16, wmma::mem_row_major);",
    ),
    (
        "topk.cuh: bitonic sort without its per-stage barrier",
        "cuda/src/detail/topk.cuh",
        "      }\n      __syncthreads();\n    }\n  }\n}",
        "      }\n    }\n  }\n}",
    ),
    (
        "rows.cu: row norms read one element past the row",
        "cuda/src/rows.cu",
        "for (std::int64_t c = lane; c < d; c += 32) acc = fmaf(p[c], p[c], acc);",
        "for (std::int64_t c = lane; c <= d; c += 32) acc = fmaf(p[c], p[c], acc);",
    ),
    (
        "lsh.cu: __syncthreads only in lanes with work left (divergent barrier)",
        "cuda/src/lsh.cu",
        "    const int more = __syncthreads_or(r < LP);",
        "    int more = 1;\n    if (r < LP) more = __syncthreads_or(1);",
    ),
    (
        "hashing.cu: codes from the projections before the last barrier",
        "cuda/src/hashing.cu",
        "  __syncthreads();\n  for (int e = tid; e < kHashTV * ntab; e += kHashThreads) {",
        "  for (int e = tid; e < kHashTV * ntab; e += kHashThreads) {",
    ),
    (
        "flat_index.cu: result copy queued on the legacy default stream, not the index's stream",
        "cuda/src/flat_index.cu",
        "  SIMDEX_CUDA_CHECK(cudaMemcpyAsync(out, dout.data(), n * d_ * sizeof(float), cudaMemcpyDeviceToHost, stream_));",
        "  SIMDEX_CUDA_CHECK(cudaMemcpyAsync(out, dout.data(), n * d_ * sizeof(float), cudaMemcpyDeviceToHost, nullptr));",
    ),
]
env = dict(os.environ, SIMDEX_CUDA_EMULATOR=f"{ROOT}/build/cuda-emu/cuda/emu")
build = [
    os.path.join(os.path.dirname(sys.executable), "cmake"),
    "--build",
    f"{ROOT}/build/cuda-emu",
    "--target",
    "simdex_cuda_emu",
]
caught = 0
for what, path, old, new in MUTATIONS:
    p = os.path.join(ROOT, path)
    src = open(p).read()
    assert src.count(old) == 1, (what, src.count(old))
    open(p, "w").write(src.replace(old, new))
    try:
        b = subprocess.run(build, capture_output=True, text=True)
        if b.returncode != 0:
            print(f"BUILD FAILED  {what}\n{b.stdout[-2000:]}")
            continue
        t0 = time.time()
        ok, tail, how = False, [], ""
        for order in ("late", "early"):
            r = subprocess.run(
                [sys.executable, "-m", "pytest", "tests/test_gpu.py", "-x", "-q", "-p", "no:cacheprovider"],
                cwd=ROOT,
                env=dict(env, SIMDEX_EMU_STREAM_ORDER=order),
                capture_output=True,
                text=True,
                timeout=900,
            )
            keys = ("simdex-emu", "FAILED", "passed", "failed", "Fatal")
            tail = [line for line in (r.stdout + r.stderr).splitlines() if any(k in line for k in keys)]
            if r.returncode != 0:
                ok, how = True, f"order={order} rc={r.returncode}"
                break
        caught += ok
        print(f"{'CAUGHT' if ok else 'MISSED'}  {how} {time.time() - t0:.0f}s  {what}", flush=True)
        for line in tail[:3]:
            print("    ", line[:220], flush=True)
    finally:
        open(p, "w").write(src)
print(f"{caught}/{len(MUTATIONS)} mutations caught")
subprocess.run(build, capture_output=True)  # rebuild the unmutated sources
sys.exit(0 if caught == len(MUTATIONS) else 1)
