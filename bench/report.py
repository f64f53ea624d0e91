"""Assemble bench/RESULTS.md from the JSON files the benchmark suites write.

Usage: ``python bench/report.py`` (``make bench`` runs it after the suites).
Each ``bench/results/<suite>.json`` holds ``{"suite", "machine", "rows"}``; rows
become a Markdown table under a heading with the suite's description, and the
machine block (CPU, threads, versions, BLAS kernels) is printed per suite because
suites may have been run at different times.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

HERE = Path(__file__).parent
RESULTS = HERE / "results"

DESCRIPTIONS = {
    "exact": (
        "Exact kNN: simdex vs faiss.IndexFlatIP vs blocked NumPy (matmul + argpartition), "
        "same data and threads, one run. `pct_of_sgemm_peak` = achieved 2NQd flops/s over the "
        "sgemm rate measured in the same run. `speedup_of_simdex` = method time / simdex time."
    ),
    "exact_single": (
        "Exact kNN, one query per call (memory-bound): ExactIndex with its float16 pre-filter "
        "(default) vs the same index in float32 only vs faiss.IndexFlatIP vs NumPy `x @ q` + "
        "argpartition. Floor: one read of the stored vectors per query (N*d*4 bytes in float32, "
        "half with the pre-filter); `eff_gb_s` = float32 bytes / time. Results are exact "
        "(recall 1.0 vs faiss); `rescored_rows_per_query` = rows the float16 bound let through."
    ),
    "lsh": "LSH: simdex LSHIndex vs faiss IndexLSH+refine vs hnswlib, recall@10 against exact ground truth.",
    "calibration": "Threshold calibration: vectorised simdex vs a naive per-threshold loop.",
    "model": "SimilarityModel index / lookup / single_lookup vs NumPy brute force and TF Similarity 0.17.1.",
    "embed": "Embedding throughput: Keras predict vs direct call vs onnxruntime; near-duplicate pipeline.",
    "gpu": "GPU path (CUDA).",
    "io": (
        "Index load, 1M x 128 ExactIndex in the page cache: `load_index` (full read, checksum, "
        "copy) vs `load_index(mmap=True)` vs faiss read_index with and without IO_FLAG_MMAP; "
        "peak RSS after the load and one search, each in a fresh process."
    ),
    "filter": (
        "Search with a 10% allow-list (`filter=`) vs no filter, same index and queries; LSH "
        "recall@10 against the exact filtered answer."
    ),
    "service": (
        "HTTP service (`simdex serve`, uvicorn, 127.0.0.1) over a 100k x 128 ExactIndex with a fsync'ed "
        "write-ahead log: single-vector searches, k=10, from a separate asyncio keep-alive load process. "
        "`vs_in_process_single` = searches/s over the in-process one-query-per-call rate of the same run; "
        "`client_cpu_share` = the load generator's CPU seconds per wall second (2 cores shared by both)."
    ),
    "distributed": (
        "ShardedIndex (4 Ray actors on this machine, one thread each) vs one in-process ExactIndex "
        "(2 threads), 2M x 128, k=10, same data and run. `identical_to_single` = share of queries "
        "whose ids and distances equal the single index's. `one shard alone` = an in-process "
        "ExactIndex holding one shard's rows (the per-shard compute) and the cost of the top-k "
        "merge. Ran while the 2-core machine was shared (load average 16-20): ratios near 1 "
        "mean the compute dominates; the machine does not show a speed-up from sharding."
    ),
    "distributed_floor": (
        "The fixed cost of a sharded call: single queries on tiny shards (Ray actor round trip, "
        "object store, merge) vs the same search in process; measured under the same load."
    ),
}


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return str(v)


def table(rows: list[dict]) -> str:
    keys: list[str] = []
    for r in rows:
        for k in r:
            if k not in keys:
                keys.append(k)
    out = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        out.append("| " + " | ".join(_fmt(r.get(k, "")) for k in keys) + " |")
    return "\n".join(out)


def machine_block(m: dict) -> str:
    if "time_utc" not in m:  # a suite with its own machine record: show it as is
        return "- machine: " + ", ".join(f"{k}={v}" for k, v in m.items() if not isinstance(v, (dict, list)))
    lines = [
        f"- run at {m.get('time_utc')} UTC on `{m.get('cpu', '?')}`, {m.get('cpus')} CPUs, "
        f"Python {m.get('python')}, OPENBLAS_CORETYPE={m.get('OPENBLAS_CORETYPE')}"
    ]
    s = m.get("simdex")
    if isinstance(s, dict):
        lines.append(f"- simdex {s.get('simdex')}: BLAS `{s.get('blas')}`, top-k SIMD `{s.get('simd')}`")
    for b in m.get("blas", []) or []:
        lines.append(
            f"- BLAS in process: {b.get('prefix')} {b.get('version')} kernel={b.get('architecture')} "
            f"threads={b.get('num_threads')} ({b.get('threading_layer')})"
        )
    return "\n".join(lines)


def main() -> None:
    parts = [
        "# simdex benchmark results",
        "",
        f"Generated by `bench/report.py` on {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC from "
        "`bench/results/*.json` (`make bench`). The machines are shared and noisy: read the ratios "
        "between methods measured in the same run, not the absolute times.",
        "",
    ]
    for path in sorted(RESULTS.glob("*.json")):
        data = json.loads(path.read_text())
        suite = data.get("suite", path.stem)
        machine = data.get("machine") or data.get("info") or {}
        parts += [f"## {suite}", "", DESCRIPTIONS.get(suite, ""), "", machine_block(machine), ""]
        results = data.get("results") or {}
        if isinstance(results, list):
            rows = results
        else:
            rows = data.get("rows") or [
                {"name": name, **vals} for name, vals in results.items() if isinstance(vals, dict)
            ]
        summary = path.with_suffix(".md")
        if summary.exists():  # a suite's own Markdown summary (e.g. lsh_report.py) replaces the raw rows
            parts += [summary.read_text(), ""]
        elif rows:
            parts += [table(rows), ""]
        for note in data.get("notes", []):
            parts.append(f"> {note}")
        parts.append("")
    (HERE / "RESULTS.md").write_text("\n".join(parts))
    print(f"wrote {HERE / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
