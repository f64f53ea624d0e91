"""One shard replica: a plain class that holds one simdex index (wrapped as a Ray actor).

The class itself imports nothing from Ray at module level, so it can be read, tested
and pickled without Ray; :func:`remote_shard_class` wraps it with ``ray.remote``.

Every call carries the *version* the driver expects the replica to be at (the count
of writes acknowledged on that shard). A replica at another version raises
:class:`StaleShardError` instead of answering: that is how the driver notices a
replica that Ray restarted from an older save, or that missed writes while down.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from simdex._runtime import set_num_threads
from simdex.apps.distributed.routing import shard_of
from simdex.index import ExactIndex, Index, LSHIndex, load_index

__all__ = ["INDEX_KINDS", "IndexSpec", "StaleShardError", "Shard", "make_index", "normalize_spec"]

#: Shard index kinds: name -> class.
INDEX_KINDS: dict[str, type[Index]] = {"exact": ExactIndex, "lsh": LSHIndex}

#: ``{"kind": "exact" | "lsh", "dim": int, "metric": str, "params": {...}}``
IndexSpec = dict[str, Any]


class StaleShardError(RuntimeError):
    """A replica's version differs from the one the driver expects (raised inside the actor).

    Attributes:
        version: The replica's version.
        expected: The version the driver expected.
        source: Where the replica's contents came from at its start (a manifest, or None).
    """

    def __init__(self, version: int, expected: int, source: str | None = None) -> None:
        super().__init__(version, expected, source)
        self.version, self.expected, self.source = version, expected, source

    def __str__(self) -> str:
        return f"replica is at version {self.version}, expected {self.expected} (loaded from {self.source})"


def normalize_spec(index: str | Mapping[str, Any], dim: int, metric: str) -> IndexSpec:
    """Turn the ``index=`` argument of :class:`ShardedIndex` into a spec dict.

    Args:
        index: ``"exact"``, ``"lsh"``, or a mapping ``{"kind": "exact" | "lsh", **kwargs}``
            whose other keys are keyword arguments of :class:`~simdex.index.ExactIndex`
            or :class:`~simdex.lsh.LSHIndex` (``dim`` and ``metric`` come separately).

    Returns:
        ``{"kind", "dim", "metric", "params"}``; building an index from it (done here
        once) has checked every parameter.

    Raises:
        ValueError: unknown kind, or a parameter the index rejects.
        TypeError: wrong argument types.
    """
    if isinstance(index, str):
        kind, params = index, {}
    elif isinstance(index, Mapping):
        params = dict(index)
        if "kind" not in params:
            raise ValueError(f"index parameters need a 'kind' key ({' or '.join(map(repr, INDEX_KINDS))})")
        kind = params.pop("kind")
        for key in ("dim", "metric", "device"):
            if key in params:
                raise ValueError(f"pass {key!r} to ShardedIndex itself, not in index parameters")
    else:
        raise TypeError(f"index must be 'exact', 'lsh' or a dict of parameters, got {type(index).__name__}")
    if kind not in INDEX_KINDS:
        raise ValueError(f"unknown index kind {kind!r}; expected one of {', '.join(INDEX_KINDS)}")
    spec = {"kind": kind, "dim": dim, "metric": metric, "params": params}
    probe = make_index(spec)  # raises on a bad dim / metric / parameter, here in the driver
    spec["dim"], spec["metric"] = probe.dim, probe.metric
    return spec


def make_index(spec: Mapping[str, Any]) -> Index:
    """A new empty index as described by ``spec`` (see :func:`normalize_spec`)."""
    cls = INDEX_KINDS[spec["kind"]]
    return cls(spec["dim"], metric=spec["metric"], **spec["params"])


def _check_loaded(index: Index, spec: Mapping[str, Any], path: str) -> None:
    want = INDEX_KINDS[spec["kind"]]
    if type(index) is not want or index.dim != spec["dim"] or index.metric != spec["metric"]:
        raise ValueError(
            f"{path!r} holds a {type(index).__name__}(dim={index.dim}, metric={index.metric!r}), "
            f"expected a {want.__name__}(dim={spec['dim']}, metric={spec['metric']!r})"
        )


def build_from_files(
    spec: Mapping[str, Any], files: Sequence[str], shard: int, num_shards: int, whole: bool
) -> Index:
    """This shard's index from saved shard files.

    Args:
        spec: The index spec.
        files: Saved shard files (``Index.save`` format).
        shard: This shard's number.
        num_shards: The current shard count.
        whole: ``files`` is exactly this shard's file under the same shard count, so
            it is loaded as it is; otherwise the rows whose id routes here are
            gathered from every file.
    """
    if whole:
        (path,) = files
        index = load_index(path)
        _check_loaded(index, spec, path)
        return index
    index = make_index(spec)
    for path in files:
        part = load_index(path)
        _check_loaded(part, spec, path)
        _, arrays = part.state()
        del part
        mine = shard_of(arrays["ids"], num_shards) == shard
        if mine.any():
            index.add(arrays["vectors"][mine], arrays["ids"][mine])
    return index


class Shard:
    """One replica of one shard (run as a Ray actor; see :func:`remote_shard_class`).

    Args:
        spec: The index spec (:func:`normalize_spec`).
        shard: This shard's number.
        num_shards: The shard count.
        registry: ``(actor name, index key)`` of the :class:`Registry`, asked at
            start-up (also when Ray restarts this actor) for the shard's last save.
        num_threads: Threads for this replica's searches (None: simdex's default).
    """

    def __init__(
        self,
        spec: Mapping[str, Any],
        shard: int,
        num_shards: int,
        registry: tuple[str, str] | None = None,
        num_threads: int | None = None,
    ) -> None:
        self.spec, self.shard, self.num_shards = dict(spec), shard, num_shards
        if num_threads is not None:
            set_num_threads(num_threads)
        self.version = 0
        self.source: str | None = None
        self.index: Index
        source: dict[str, Any] | None = None
        if registry is not None:
            import ray

            name, key = registry
            got: Any = ray.get(ray.get_actor(name).get.remote(key, shard))
            source = got
        if source is None:
            self.index = make_index(self.spec)
        else:
            self.index = build_from_files(self.spec, source["files"], shard, num_shards, source["whole"])
            self.version = int(source["version"])
            self.source = source["manifest"]

    # -- consistency ----------------------------------------------------------------------
    def _expect(self, expected: int | None) -> None:
        if expected is not None and self.version != expected:
            raise StaleShardError(self.version, expected, self.source)

    def info(self) -> dict[str, Any]:
        """Version, size, process id and where the contents came from."""
        return {"version": self.version, "size": len(self.index), "pid": os.getpid(), "source": self.source}

    # -- writes ---------------------------------------------------------------------------
    def add(self, x: np.ndarray, ids: np.ndarray, replace: bool, expected: int) -> int:
        self._expect(expected)
        self.index.add(x, ids, replace=replace)
        self.version += 1
        return self.version

    def remove(self, ids: np.ndarray, expected: int) -> int:
        self._expect(expected)
        self.index.remove(ids)
        self.version += 1
        return self.version

    def restore(self, state: tuple[dict[str, Any], dict[str, np.ndarray]], version: int) -> int:
        """Replace the contents by another replica's :meth:`export` (``Index.state()``)."""
        params, arrays = state
        self.index, self.version, self.source = (
            Index.from_state(params, arrays),
            int(version),
            "another replica",
        )
        return self.version

    # -- reads ----------------------------------------------------------------------------
    def search(
        self, q: np.ndarray, k: int, options: Mapping[str, Any], expected: int
    ) -> tuple[np.ndarray, np.ndarray]:
        self._expect(expected)
        if len(self.index) == 0:
            return np.full((q.shape[0], k), np.inf, np.float32), np.full((q.shape[0], k), -1, np.int64)
        return self.index.search(q, k, **options)

    def contains(self, ids: np.ndarray, expected: int) -> np.ndarray:
        self._expect(expected)
        return np.asarray(self.index.contains(ids), dtype=bool)

    def get_vectors(self, ids: np.ndarray, expected: int) -> np.ndarray:
        self._expect(expected)
        return self.index.get_vectors(ids)

    def size(self, expected: int) -> int:
        self._expect(expected)
        return len(self.index)

    def export(self, expected: int | None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """This replica's ``index.state()`` (``expected=None``: whatever its version)."""
        self._expect(expected)
        return self.index.state()

    def save(self, path: str, expected: int) -> int:
        """``index.save(path)`` (atomic); returns the number of vectors written."""
        self._expect(expected)
        self.index.save(path)
        return len(self.index)


class Registry:
    """Where each shard's last save lives: ``(index key, shard) -> source``.

    One small actor per Ray namespace. A shard actor asks it at start-up, so a replica
    that Ray restarts reloads the shard's last save rather than coming back empty.
    A source is ``{"files": [...], "whole": bool, "version": int, "manifest": str}``.
    """

    def __init__(self) -> None:
        self.sources: dict[tuple[str, int], dict[str, Any]] = {}

    def get(self, key: str, shard: int) -> dict[str, Any] | None:
        return self.sources.get((key, int(shard)))

    def set(self, key: str, sources: Mapping[int, Mapping[str, Any]]) -> None:
        self.drop(key)
        for s, v in sources.items():
            self.sources[(key, int(s))] = dict(v)

    def drop(self, key: str) -> None:
        for k in [k for k in self.sources if k[0] == key]:
            del self.sources[k]
