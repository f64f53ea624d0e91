"""Print bench/results/lsh.json (written by test_bench_lsh.py) as Markdown tables.

Usage: python bench/lsh_report.py [path/to/lsh.json]
"""

from __future__ import annotations

import json
import os
import sys


def _params(r: dict) -> str:
    keys = ("hash_bits", "num_tables", "num_probes", "nbits", "k_factor", "ef")
    names = {
        "hash_bits": "K",
        "num_tables": "L",
        "num_probes": "P",
        "nbits": "bits",
        "k_factor": "k_factor",
        "ef": "ef",
    }
    return " ".join(f"{names[k]}={r[k]}" for k in keys if k in r)


def main(path: str) -> None:
    with open(path) as f:
        doc = json.load(f)
    rows = doc["results"]
    info = doc["info"]
    print(f"simdex {info['simdex']}  OPENBLAS_CORETYPE={info['OPENBLAS_CORETYPE']}  ({info['when']})\n")
    for data in ("glove", "synthetic"):
        search = [r for r in rows if r.get("data") == data and "recall" in r]
        if not search:
            continue
        print(f"### {data}: recall@10 and queries/s\n")
        print("| method | params | threads | recall@10 | QPS (wall) | QPS (CPU time) | candidates/query |")
        print("|---|---|---:|---:|---:|---:|---:|")
        for r in search:
            qcpu = f"{r['qps_cpu']:,.0f}" if "qps_cpu" in r else ""
            cand = f"{r['mean_candidates']:,.0f}" if "mean_candidates" in r else ""
            cells = [
                r["method"],
                _params(r),
                r["threads"],
                f"{r['recall']:.3f}",
                f"{r['qps']:,.0f}",
                qcpu,
                cand,
            ]
            print("| " + " | ".join(str(c) for c in cells) + " |")
        print()
        builds = [r for r in rows if r.get("data") == data and "build_vps" in r and "recall" not in r]
        seen = set()
        print(f"### {data}: build\n")
        print("| method | params | threads | vectors/s |")
        print("|---|---|---:|---:|")
        for r in builds:
            print(f"| {r['method']} | {_params(r)} | {r['threads']} | {r['build_vps']:,.0f} |")
        for r in search:
            key = (r["method"].split(" (")[0], r.get("build_s"))
            if "build_vps" in r and key not in seen and not r["method"].startswith("simdex.LSHIndex"):
                seen.add(key)
                print(
                    f"| {r['method']} | {_params(r)} | {r.get('build_threads', '')} | {r['build_vps']:,.0f} |"
                )
        print()
    hashing = [r for r in rows if r["method"].startswith("hash_vectors")]
    if hashing:
        print("### hashing vs bare sgemm (same blocked product, same BLAS)\n")
        print("| L*K | threads | hash vectors/s | hash GFLOP/s | sgemm GFLOP/s | time hash / sgemm |")
        print("|---:|---:|---:|---:|---:|---:|")
        for r in hashing:
            print(
                f"| {r['L_times_K']} | {r['threads']} | {r['hash_vps']:,.0f} | {r['hash_gflops']:.1f} | "
                f"{r['sgemm_gflops']:.1f} | {r['hash_over_sgemm_time']:.2f} |"
            )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "results", "lsh.json"))
