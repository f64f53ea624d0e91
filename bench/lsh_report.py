"""Markdown for bench/results/lsh.json (written by bench/test_bench_lsh.py).

Usage: python bench/lsh_report.py [path/to/lsh.json]   (prints the Markdown)
"""

from __future__ import annotations

import json
import os
import sys

TARGET = 0.9


def _best(rows: list[dict], prefix: str) -> dict | None:
    """Fastest row (CPU-time QPS) of a method with recall >= TARGET."""
    ok = [r for r in rows if r["method"].startswith(prefix) and r.get("recall", 0) >= TARGET]
    return max(ok, key=lambda r: r["qps_cpu"]) if ok else None


def _f(v, fmt: str = ",.0f") -> str:
    return "" if v is None or v == "" else format(v, fmt)


def render(rows: list[dict], info: dict) -> str:
    out = [
        f"Popcount kernel: `{info.get('popcount', '?')}`. QPS from process CPU time (1 search thread; the "
        "machine is shared, so wall time is also shown); ratios are taken between rows of the same run.",
        "",
    ]
    for data in ("glove", "minilm", "synth1m"):
        rs = [r for r in rows if r.get("data") == data]
        if not rs:
            continue
        auto = next(r for r in rs if r["method"].startswith("simdex LSHIndex(dim)"))
        out += [f"### {data}: n={auto['n']:,}, d={auto['d']}, 1,000 held-out queries, recall@10", ""]
        out += ["| method | params | recall@10 | QPS (CPU) | QPS (wall) | candidates/query | bytes/vector |"]
        out += ["|---|---|---:|---:|---:|---:|---:|"]
        for r in rs:
            out.append(
                f"| {r['method']} | {r.get('params', '')} | {r['recall']:.3f} | {_f(r['qps_cpu'])} | "
                f"{_f(r['qps_wall'])} | {_f(r.get('candidates'))} | {_f(r.get('bytes_per_vector'))} |"
            )
        out.append("")
        simdex_rows = [r for r in rs if r["method"].startswith("simdex LSHIndex")]
        best_s = max(
            (r for r in simdex_rows if r["recall"] >= TARGET), key=lambda r: r["qps_cpu"], default=None
        )
        exact = next(r for r in rs if r["method"] == "simdex ExactIndex")
        best_h = _best(rs, "hnswlib")
        best_f = _best(rs, "faiss")
        out += [f"Best QPS (CPU) at recall@10 >= {TARGET}:", ""]
        out += ["| | simdex LSH | hnswlib | faiss LSH+refine | ExactIndex |", "|---|---:|---:|---:|---:|"]
        out.append(
            "| setting | "
            + " | ".join(
                (f"{r.get('params', '')} ({r['recall']:.3f})" if r else "none reaches it")
                for r in (best_s, best_h, best_f, exact)
            )
            + " |"
        )
        out.append(
            "| QPS | "
            + " | ".join(_f(r["qps_cpu"]) if r else "-" for r in (best_s, best_h, best_f, exact))
            + " |"
        )
        if best_s:
            out.append(
                "| simdex / method | 1.00 | "
                + " | ".join(
                    f"{best_s['qps_cpu'] / r['qps_cpu']:.2f}" if r else "-" for r in (best_h, best_f, exact)
                )
                + " |"
            )
        out.append("")
        hn = next((r for r in rs if r["method"].startswith("hnswlib")), None)
        a = auto
        mem = f"{a['bytes_per_vector']:,.0f} bytes/vector"
        if hn:
            hb = hn["bytes_per_vector"]
            mem += f" (hnswlib {hb:,.0f}: ratio {a['bytes_per_vector'] / hb:.2f})"
        b1, b2, c = a["build_config_s_1t"], a["build_config_s_2t"], a["config_s"]
        a1, a2 = a["add_s_1t"], a["add_s_2t"]
        text = [
            f"Self-configured `LSHIndex({a['d']})`: {a['params']}, recall@10 {a['recall']:.3f}",
            f"on the held-out queries (sample estimate {a['sample_recall']:.3f}), {mem}.",
            f"Build (add + self-configuration): {b1:.1f} s on 1 thread, {b2:.1f} s on 2",
            f"({b1 / b2:.2f}x),",
            f"of which configuration {c:.1f} s; add() alone of the chosen configuration",
            f"{a1:.2f} s / {a2:.2f} s",
            f"({a1 / a2:.2f}x).",
        ]
        if hn:
            h = hn["build_s_2t"]
            text.append(
                f"hnswlib build on 2 threads: {h:.1f} s; build rate simdex / hnswlib at 2 threads: "
                f"{h / b2:.1f}x with the configuration, {h / a2:.1f}x add() alone."
            )
        out += [" ".join(text), ""]
    return "\n".join(out)


def main(path: str) -> None:
    with open(path) as f:
        doc = json.load(f)
    print(render(doc["rows"], doc.get("machine", {})))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "results", "lsh.json"))
