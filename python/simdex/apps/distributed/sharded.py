"""ShardedIndex: one logical index spread over Ray actors, with a single index's API and answers."""

from __future__ import annotations

import contextlib
import functools
import glob
import itertools
import json
import os
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from simdex._optional import import_optional
from simdex._validate import as_ids, as_matrix, canonical_metric, check_k, check_positive_int, lookup_ids
from simdex.apps.distributed.merge import merge_topk
from simdex.apps.distributed.routing import HASH_NAME, shard_of
from simdex.apps.distributed.shard import Registry, Shard, StaleShardError, normalize_spec

__all__ = ["ShardedIndex", "ShardUnavailableError", "ShardRestoredWarning", "MANIFEST_NAME"]

#: File name of the manifest inside a saved directory.
MANIFEST_NAME = "manifest.json"
#: Name prefix of the registry actor (one per job) that records every shard's last save.
REGISTRY_NAME = "simdex-shard-registry"
_FORMAT = "simdex-sharded"
_FORMAT_VERSION = 1
_INSTALL_HINT = 'pip install "simdex[ray]"'


class ShardUnavailableError(RuntimeError):
    """No replica of a shard can serve the call right now (its actor is down or restarting).

    Attributes:
        shard: The shard's number.
    """

    def __init__(self, shard: int, message: str) -> None:
        super().__init__(message)
        self.shard = shard


class ShardRestoredWarning(UserWarning):
    """A shard came back from a restart with fewer writes than were acknowledged.

    Raised (as a warning) when a shard with no live up-to-date replica was reloaded
    from its last save: every write acknowledged on that shard after the save is gone.
    """


def _ray() -> Any:
    return import_optional("ray", "simdex.apps.distributed", _INSTALL_HINT)


_REMOTE: dict[str, Any] = {}


def _remote_class(cls: type) -> Any:
    if cls.__name__ not in _REMOTE:
        _REMOTE[cls.__name__] = _ray().remote(cls)
    return _REMOTE[cls.__name__]


_REGISTRY: dict[str, Any] = {}


def _registry() -> tuple[str, Any]:
    """Name and handle of this job's registry actor, created on first use.

    This module keeps the handle for the life of the job, so the registry is not
    garbage-collected between indexes; it ends with the job (``ray.shutdown()``).
    """
    ray = _ray()
    job = ray.get_runtime_context().get_job_id()
    if job not in _REGISTRY:
        _REGISTRY.clear()  # handles of an earlier job (before ray.shutdown) are void
        name = f"{REGISTRY_NAME}-{job}"
        handle = _remote_class(Registry).options(name=name, get_if_exists=True, max_restarts=-1, num_cpus=0)
        _REGISTRY[job] = (name, handle.remote())
    return _REGISTRY[job]


def _locked(method: Callable[..., Any]) -> Callable[..., Any]:
    """Run a method under the index's lock (the routing state is shared by all calls)."""

    @functools.wraps(method)
    def wrapper(self: ShardedIndex, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)

    return wrapper


def _write_json_atomic(path: str, data: Mapping[str, Any]) -> None:
    """Write JSON to ``path`` via a temporary file, fsync and rename (old file kept on failure)."""
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=".simdex-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class ShardedIndex:
    """An index split over ``num_shards`` Ray actors (times ``replicas``), used like one index.

    Each id lives in exactly one shard, ``splitmix64(id) % num_shards`` (see
    :mod:`simdex.apps.distributed.routing`); each shard is held by ``replicas``
    actors, each an :class:`~simdex.index.ExactIndex` or :class:`~simdex.lsh.LSHIndex`.
    Writes (``add``, ``remove``) go to every live replica of the shards they touch;
    reads (``search``, ``get_vectors``, ``contains``, ``len``) go to one replica per
    shard, chosen round-robin. ``search`` asks every shard for its top-k and merges
    them by distance, then smaller id, so an exact sharded search returns exactly what
    one :class:`~simdex.index.ExactIndex` holding the same vectors returns.

    Ray must be reachable: call ``ray.init()`` (a local cluster) or
    ``ray.init(address="ray://host:10001")`` (an existing one) first; otherwise Ray
    starts a local cluster on first use.

    What is guaranteed when actors fail:

    * Ray restarts a dead shard actor (up to ``max_restarts`` times); at start-up the
      actor reloads the shard's file from the last :meth:`save` (or :meth:`load`).
    * ``replicas=1``: writes acknowledged after the last save of a shard are lost when
      its actor restarts. The next call that reaches the restarted shard issues a
      :class:`ShardRestoredWarning` that says so; calls made while it is down raise
      :class:`ShardUnavailableError` naming the shard.
    * ``replicas >= 2``: a write is acknowledged once every live replica of the shard
      has applied it (at least one must). A replica that was down or missed writes is
      never read from; once Ray has restarted it, it is refilled from an up-to-date
      replica before it serves again. So no acknowledged write is lost while one
      replica of each shard survives, and searches keep succeeding while one is up.
    * Across shards a write is not atomic: if one shard cannot be reached, the rows
      routed to other shards stay written (the error says which shard failed). An
      ``add`` rejected because an id already exists is rolled back everywhere.
    * ``save`` writes every shard file, then the manifest (atomically, last); a crash
      during ``save`` leaves the previous save of that directory loadable.
    * One object may be shared by threads: its calls take turns (each call still fans
      out to all shards in parallel).

    Args:
        dim: Vector dimension.
        metric: ``"cosine"`` (default), ``"ip"``, ``"l2"`` or ``"sql2"``.
        num_shards: Number of shards (>= 1).
        index: ``"exact"`` (default), ``"lsh"``, or a dict ``{"kind": "exact" | "lsh",
            **parameters}`` of the shard index (e.g. ``{"kind": "lsh", "num_tables": 8,
            "hash_bits": 12}``). Every shard gets the same parameters (for LSH, the
            same seed and so the same hyperplanes).
        replicas: Actors per shard (>= 1).
        max_restarts: How often Ray may restart each shard actor (-1: forever).
        num_threads: Search threads in each actor (None: simdex's default, all cores
            of the actor's machine; set it when several shards share a machine).
        actor_options: Extra ``.options()`` of the shard actors (``num_cpus``,
            ``resources``, ``scheduling_strategy``...). Default: spread over nodes.

    Example:
        >>> import numpy as np, ray  # doctest: +SKIP
        >>> ray.init(num_cpus=2)  # doctest: +SKIP
        >>> index = ShardedIndex(dim=64, num_shards=4)  # doctest: +SKIP
        >>> ids = index.add(np.random.rand(1000, 64))  # doctest: +SKIP
        >>> D, I = index.search(np.random.rand(5, 64), k=10)  # doctest: +SKIP
    """

    def __init__(
        self,
        dim: int,
        metric: str = "cosine",
        num_shards: int = 2,
        index: str | Mapping[str, Any] = "exact",
        *,
        replicas: int = 1,
        max_restarts: int = 4,
        num_threads: int | None = None,
        actor_options: Mapping[str, Any] | None = None,
    ) -> None:
        spec = normalize_spec(index, check_positive_int(dim, "dim"), canonical_metric(metric))
        self._setup(spec, num_shards, replicas, max_restarts, num_threads, actor_options, None)

    # -- construction -----------------------------------------------------------------------
    def _setup(
        self,
        spec: dict[str, Any],
        num_shards: int,
        replicas: int,
        max_restarts: int,
        num_threads: int | None,
        actor_options: Mapping[str, Any] | None,
        sources: Mapping[int, Mapping[str, Any]] | None,
    ) -> None:
        ray = _ray()
        self._spec = spec
        self.dim: int = spec["dim"]
        self.metric: str = spec["metric"]
        self.num_shards: int = check_positive_int(num_shards, "num_shards")
        self.replicas: int = check_positive_int(replicas, "replicas")
        if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < -1:
            raise ValueError(f"max_restarts must be an integer >= -1, got {max_restarts!r}")
        if num_threads is not None:
            num_threads = check_positive_int(num_threads, "num_threads")
        self._num_threads = num_threads
        options = {"scheduling_strategy": "SPREAD", **dict(actor_options or {})}
        options.update(max_restarts=max_restarts, max_task_retries=0)
        self._actor_options = options
        self._lock = threading.RLock()
        self._next_id = 0
        self._version = [0] * self.num_shards
        self._down: dict[tuple[int, int], Any] = {}  # (shard, replica) -> pending probe or None
        self._turn = itertools.count()
        # One registry per job, shared by every ShardedIndex: it outlives shard restarts
        # and tells a restarting shard what to load. Shards find it by name (an actor
        # handle among a restartable actor's arguments would sit in the object store).
        self._key = uuid.uuid4().hex
        self._registry_name, self._registry = _registry()
        if sources:
            ray.get(self._registry.set.remote(self._key, sources))
        self._actors: list[list[Any]] = [
            [self._new_actor(s) for _ in range(self.replicas)] for s in range(self.num_shards)
        ]
        # Wait until every actor is up (and has loaded its file): errors surface here.
        infos = ray.get([a.info.remote() for row in self._actors for a in row])
        for s in range(self.num_shards):
            self._version[s] = int(infos[s * self.replicas]["version"])

    def _new_actor(self, shard: int) -> Any:
        cls = _remote_class(Shard).options(**self._actor_options)
        return cls.remote(
            self._spec, shard, self.num_shards, (self._registry_name, self._key), self._num_threads
        )

    # -- properties ---------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        """The shard index kind, ``"exact"`` or ``"lsh"``."""
        return str(self._spec["kind"])

    @property
    def index_params(self) -> dict[str, Any]:
        """The shard index parameters (beyond dim and metric)."""
        return dict(self._spec["params"])

    def __repr__(self) -> str:
        return (
            f"ShardedIndex(dim={self.dim}, metric={self.metric!r}, num_shards={self.num_shards}, "
            f"index={self.kind!r}, replicas={self.replicas})"
        )

    # -- failure handling -------------------------------------------------------------------
    def _unavailable(
        self, shard: int, what: str, cause: BaseException | None = None
    ) -> ShardUnavailableError:
        detail = f": {type(cause).__name__}" if cause is not None else ""
        msg = (
            f"shard {shard} of {self.num_shards} is unavailable for {what}: no live replica of its "
            f"{self.replicas}{detail}. A failed shard actor is restarted (by Ray, or re-created by this "
            f"index) and reloads the shard's last save; retry later or call wait_ready()"
        )
        return ShardUnavailableError(shard, msg)

    def _mark_down(self, shard: int, replica: int) -> None:
        self._down.setdefault((shard, replica), None)

    def _live(self, shard: int) -> list[int]:
        return [r for r in range(self.replicas) if (shard, r) not in self._down]

    def _stale(self, shard: int, replica: int, err: StaleShardError) -> bool:
        """Handle a replica at another version. Returns True if the caller may retry it."""
        others = [r for r in self._live(shard) if r != replica]
        if others:  # an up-to-date replica exists: refill this one from it later
            self._mark_down(shard, replica)
            return False
        if err.version > self._version[shard]:  # cannot happen with one driver; never hide it
            raise RuntimeError(f"shard {shard}: replica {replica} is ahead of the driver ({err})")
        warnings.warn(
            ShardRestoredWarning(
                f"shard {shard} of {self.num_shards} was restarted and reloaded from "
                f"{err.source or 'nothing (it was never saved)'}: the "
                f"{self._version[shard] - err.version} write(s) acknowledged on it since then are lost"
            ),
            stacklevel=4,
        )
        self._version[shard] = err.version
        for r in range(self.replicas):  # the others (all down) must be refilled from this one
            if r != replica:
                self._mark_down(shard, r)
        return True

    def _heal(self) -> None:
        """Bring back replicas that Ray has restarted (non-blocking)."""
        if not self._down:
            return
        ray = _ray()
        for (s, r), probe in list(self._down.items()):
            if probe is None:
                probe = self._down[(s, r)] = self._actors[s][r].info.remote()
            ready, _ = ray.wait([probe], timeout=0)
            if not ready:
                continue
            try:
                ray.get(probe)
            except ray.exceptions.ActorDiedError as e:
                self._down[(s, r)] = None
                if not _restarting(e):  # gone for good (killed for good, restarts used up)
                    self._actors[s][r] = self._new_actor(s)
                continue
            except ray.exceptions.RayActorError:
                self._down[(s, r)] = None  # still restarting: probe again next time
                continue
            live = self._live(s)
            del self._down[(s, r)]
            if live:  # refill from an up-to-date replica; calls after this one queue behind it
                src = self._actors[s][live[0]]
                self._actors[s][r].restore.remote(src.export.remote(self._version[s]), self._version[s])
            # else: the only replica; its first call reports the version it came back with

    @_locked
    def wait_ready(self, timeout: float = 60.0) -> None:
        """Block until every replica is up and current (after restarts), at most ``timeout`` s.

        A shard whose only replica came back from an older save issues its
        :class:`ShardRestoredWarning` here.

        Raises:
            ShardUnavailableError: a shard still has a replica down at the deadline.
        """
        ray = _ray()
        self._check_open()
        deadline = time.monotonic() + timeout
        while True:
            self._heal()
            if not self._down:
                # Every replica answers: check that each is at its shard's version.
                self._read(
                    range(self.num_shards),
                    "wait_ready",
                    lambda a, s: a.size.remote(self._version[s]),
                    all_replicas=True,
                )
                if not self._down:
                    return
                continue
            if time.monotonic() > deadline:
                s, _ = min(self._down)
                raise self._unavailable(s, f"wait_ready (still down after {timeout} s)")
            probes = [p for p in self._down.values() if p is not None]
            if probes:
                ray.wait(probes, num_returns=1, timeout=min(1.0, max(0.0, deadline - time.monotonic())))

    def _check_open(self) -> None:
        if not self._actors:
            raise RuntimeError("this ShardedIndex is closed")

    # -- the two call patterns ------------------------------------------------------------------
    def _read(
        self,
        shards: Sequence[int] | range,
        what: str,
        submit: Callable[[Any, int], Any],
        *,
        all_replicas: bool = False,
    ) -> dict[int, Any]:
        """Call one live replica of each shard (round-robin), trying others on failure."""
        ray = _ray()
        self._check_open()
        self._heal()
        turn = next(self._turn)
        queues: dict[int, list[int]] = {}
        pending: dict[int, tuple[int, Any]] = {}
        for s in shards:
            live = self._live(s)
            if not live:
                raise self._unavailable(s, what)
            q = live if all_replicas else live[turn % len(live) :] + live[: turn % len(live)]
            queues[s] = q
            r = q.pop(0)
            pending[s] = (r, submit(self._actors[s][r], s))
        out: dict[int, Any] = {}
        for s in list(pending):
            r, ref = pending[s]
            while True:
                try:
                    out[s] = ray.get(ref)
                    if all_replicas and queues[s]:
                        r = queues[s].pop(0)
                        ref = submit(self._actors[s][r], s)
                        continue
                    break
                except ray.exceptions.RayTaskError as e:
                    cause = _cause(e)
                    if not isinstance(cause, StaleShardError):
                        raise cause from None  # the user's error (unknown id...), as one index raises it
                    if self._stale(s, r, cause):
                        ref = submit(self._actors[s][r], s)  # resubmit at the adopted version
                        continue
                    err: BaseException = cause
                except ray.exceptions.RayActorError as e:
                    self._mark_down(s, r)
                    err = e
                queues[s] = [x for x in queues[s] if (s, x) not in self._down]
                if not queues[s]:
                    if all_replicas and s in out:
                        break
                    raise self._unavailable(s, what, err)
                r = queues[s].pop(0)
                ref = submit(self._actors[s][r], s)
        return out

    def _write(self, parts: Mapping[int, tuple[Any, ...]], method: str) -> dict[int, BaseException]:
        """Apply ``method(*args, expected)`` on every live replica of each shard in ``parts``.

        Returns:
            The shards that did not apply it, with the reason (a user error such as
            an existing id, or a :class:`ShardUnavailableError`).
        """
        ray = _ray()
        self._check_open()
        self._heal()
        refs: dict[int, list[tuple[int, Any]]] = {}
        failed: dict[int, BaseException] = {}

        def submit(s: int, r: int) -> Any:
            return getattr(self._actors[s][r], method).remote(*parts[s], self._version[s])

        for s in parts:
            live = self._live(s)
            if not live:
                failed[s] = self._unavailable(s, method)
                continue
            refs[s] = [(r, submit(s, r)) for r in live]
        for s, sent in refs.items():
            acked, user_error, last_err = False, None, None
            while sent:
                r, ref = sent.pop(0)
                try:
                    ray.get(ref)
                    acked = True
                except ray.exceptions.RayTaskError as e:
                    cause = _cause(e)
                    if not isinstance(cause, StaleShardError):
                        user_error = cause  # every replica rejects it alike, nothing applied
                    elif self._stale(s, r, cause):
                        sent.append((r, submit(s, r)))  # the lone survivor: write at its version
                    else:
                        last_err = cause
                except ray.exceptions.RayActorError as e:
                    self._mark_down(s, r)
                    last_err = e
            if acked:
                self._version[s] += 1
            elif user_error is not None:
                failed[s] = user_error
            else:
                failed[s] = self._unavailable(s, method, last_err)
        return failed

    # -- writes ---------------------------------------------------------------------------------
    @_locked
    def add(self, vectors: Any, ids: Any = None, *, replace: bool = False) -> np.ndarray:
        """Add vectors, each to the shard its id routes to.

        Args:
            vectors: (n, dim) or (dim,) float32/float64.
            ids: n distinct non-negative integer ids, or None to assign fresh ones
                (unique over all shards: one more than the largest id ever used).
            replace: If True, an id already present has its vector replaced.

        Returns:
            The int64 ids, shape (n,).

        Raises:
            ValueError: bad shape/values, negative or repeated ids, an id already
                present (then nothing is added).
            ShardUnavailableError: a shard the rows route to has no live replica (rows
                of the other shards are added).
        """
        x, _ = as_matrix(vectors, "vectors", dim=self.dim)
        n = x.shape[0]
        if ids is None:
            ids_arr = np.arange(self._next_id, self._next_id + n, dtype=np.int64)
        else:
            ids_arr = as_ids(ids, n)
            uniq, counts = np.unique(ids_arr, return_counts=True)
            if uniq.size != n:
                raise ValueError(f"ids must be distinct; id {int(uniq[counts > 1][0])} is repeated")
        # Counted before the write: after a partial failure fresh ids still never collide.
        self._next_id = max(self._next_id, int(ids_arr.max()) + 1)
        groups = self._group(ids_arr)
        ray = _ray()
        parts = {s: (ray.put(x[rows]), ids_arr[rows], bool(replace)) for s, rows in groups.items()}
        failed = self._write(parts, "add")
        if failed:
            done = [s for s in parts if s not in failed]
            user = [e for e in failed.values() if not isinstance(e, ShardUnavailableError)]
            if user and done and not replace:  # roll back: those ids were absent on those shards
                self._write({s: (parts[s][1],) for s in done}, "remove")
            raise next(iter(user or failed.values()))
        return ids_arr

    @_locked
    def remove(self, ids: Any) -> None:
        """Remove ids (all or nothing when every shard is up).

        Raises:
            KeyError: an id is not in the index (nothing is removed).
            ShardUnavailableError: a shard holding some ids is down (ids on other
                shards are removed).
        """
        arr = lookup_ids(ids)[0]
        present = self._contains(arr)
        if not present.all():
            raise KeyError(f"id {int(arr[~present][0])} is not in the index")
        groups = self._group(arr)
        failed = self._write({s: (arr[rows],) for s, rows in groups.items()}, "remove")
        if failed:
            raise next(iter(failed.values()))

    def add_dataset(
        self,
        dataset: Any,
        *,
        column: str = "embedding",
        id_column: str | None = None,
        batch_size: int = 4096,
        replace: bool = False,
        progress: bool | Callable[[int, int | None], None] | None = None,
    ) -> int:
        """Add every row of a Ray Dataset of embeddings, batch by batch.

        Batches stream through this process (``Dataset.iter_batches``, which runs
        the dataset's pipeline on the cluster meanwhile) and are routed to the shards.

        Args:
            dataset: A ``ray.data.Dataset``.
            column: Column of the embeddings: a fixed-shape tensor column (n, dim) or
                a column of per-row vectors.
            id_column: Column of the ids, or None to assign fresh ids in the order the
                batches arrive (pass ids for reproducible ids).
            batch_size: Rows per ``add``.
            replace: As in :meth:`add`.
            progress: None/False (quiet), True (a tqdm bar; needs tqdm) or a callback
                ``progress(rows_done, rows_total)`` called after every batch.

        Returns:
            The number of rows added.
        """
        from simdex.apps.distributed.ingest import add_dataset

        return add_dataset(
            self,
            dataset,
            column=column,
            id_column=id_column,
            batch_size=batch_size,
            replace=replace,
            progress=progress,
        )

    def add_from_model(
        self,
        dataset: Any,
        model: Callable[[Any], Any] | type,
        *,
        input_column: str = "item",
        id_column: str | None = None,
        batch_size: int = 256,
        concurrency: int | None = None,
        num_cpus: float | None = None,
        progress: bool | Callable[[int, int | None], None] | None = None,
    ) -> int:
        """Embed a Ray Dataset of raw inputs with ``Dataset.map_batches`` and add the embeddings.

        Args:
            dataset: A ``ray.data.Dataset`` with a column of raw inputs.
            model: A function from a batch of inputs (a NumPy array of the column) to
                (n, dim) embeddings, or a class whose instances are such functions: then
                each Ray Data worker builds one (load the weights in ``__init__``).
            input_column: Column of the raw inputs.
            id_column: Column of the ids, or None for fresh ids.
            batch_size: Inputs per model call.
            concurrency: Parallel model workers (Ray Data's ``concurrency``; a class
                model defaults to 1).
            num_cpus: CPUs reserved per model worker.
            progress: As in :meth:`add_dataset`.

        Returns:
            The number of rows added.
        """
        from simdex.apps.distributed.ingest import add_from_model

        return add_from_model(
            self,
            dataset,
            model,
            input_column=input_column,
            id_column=id_column,
            batch_size=batch_size,
            concurrency=concurrency,
            num_cpus=num_cpus,
            progress=progress,
        )

    # -- reads ----------------------------------------------------------------------------------
    @_locked
    def search(self, queries: Any, k: int = 10, **options: Any) -> tuple[np.ndarray, np.ndarray]:
        """k nearest stored vectors of each query, over all shards.

        Args:
            queries: (q, dim) or (dim,) float32/float64.
            k: Neighbours per query; slots beyond ``len(self)`` hold id -1 and distance +inf.
            **options: Passed to every shard's ``search`` (e.g. ``num_probes`` for LSH).

        Returns:
            ``(distances, ids)``: float32 and int64, shape (q, k) ((k,) for a 1-D
            query), distances ascending, ties broken by the smaller id.

        Raises:
            ShardUnavailableError: a shard has no live replica.
        """
        k = check_k(k)
        q, was_1d = as_matrix(queries, "queries", dim=self.dim)
        qref = _ray().put(q)  # stored once, read by every shard
        res = self._read(
            range(self.num_shards),
            "search",
            lambda a, s: a.search.remote(qref, k, options, self._version[s]),
        )
        D, ids = merge_topk(
            [res[s][0] for s in range(self.num_shards)], [res[s][1] for s in range(self.num_shards)], k
        )
        return (D[0], ids[0]) if was_1d else (D, ids)

    def _contains(self, arr: np.ndarray) -> np.ndarray:
        out = np.zeros(arr.shape[0], dtype=bool)
        groups = self._group(arr)
        res = self._read(
            list(groups), "contains", lambda a, s: a.contains.remote(arr[groups[s]], self._version[s])
        )
        for s, rows in groups.items():
            out[rows] = res[s]
        return out

    @_locked
    def contains(self, ids: Any) -> np.ndarray | bool:
        """Whether each id is present (bool array, or a bool for a scalar id)."""
        arr, scalar = lookup_ids(ids)
        out = self._contains(arr)
        return bool(out[0]) if scalar else out

    def __contains__(self, id_: object) -> bool:
        try:
            return bool(self.contains(id_))
        except TypeError:
            return False

    @_locked
    def get_vectors(self, ids: Any) -> np.ndarray:
        """Stored vectors (float32) of ``ids``: shape (n, dim), or (dim,) for one id.

        Raises:
            KeyError: an id is not in the index.
        """
        arr, scalar = lookup_ids(ids)
        out = np.empty((arr.shape[0], self.dim), dtype=np.float32)
        groups = self._group(arr)
        res = self._read(
            list(groups), "get_vectors", lambda a, s: a.get_vectors.remote(arr[groups[s]], self._version[s])
        )
        for s, rows in groups.items():
            out[rows] = res[s]
        return out[0] if scalar else out

    @_locked
    def shard_sizes(self) -> list[int]:
        """Number of vectors in each shard."""
        res = self._read(range(self.num_shards), "len", lambda a, s: a.size.remote(self._version[s]))
        return [int(res[s]) for s in range(self.num_shards)]

    def __len__(self) -> int:
        return sum(self.shard_sizes())

    def _group(self, ids: np.ndarray) -> dict[int, np.ndarray]:
        """Row numbers of ``ids`` per shard (only shards that get rows)."""
        dest = shard_of(ids, self.num_shards)
        order = np.argsort(dest, kind="stable")
        bounds = np.searchsorted(dest[order], np.arange(self.num_shards + 1))
        return {
            s: order[bounds[s] : bounds[s + 1]] for s in range(self.num_shards) if bounds[s + 1] > bounds[s]
        }

    # -- persistence ----------------------------------------------------------------------------
    @_locked
    def save(self, directory: str | os.PathLike[str]) -> None:
        """Write one file per shard (``Index.save``, atomic) and then ``manifest.json``.

        The shard files are written by the shard actors themselves, so ``directory``
        must be reachable under the same path from every node (a shared file system
        on a multi-machine cluster). Files of older saves in ``directory`` are deleted
        after the new manifest is in place; a crash before that leaves the previous
        save loadable. After ``save``, a restarted shard actor reloads these files.
        """
        directory = os.path.abspath(os.fspath(directory))
        os.makedirs(directory, exist_ok=True)
        generation = uuid.uuid4().hex[:12]
        names = [
            f"shard-{s:05d}-of-{self.num_shards:05d}.{generation}.simdex" for s in range(self.num_shards)
        ]
        versions = list(self._version)
        sizes = self._read(
            range(self.num_shards),
            "save",
            lambda a, s: a.save.remote(os.path.join(directory, names[s]), self._version[s]),
        )
        if list(self._version) != versions:  # a shard lost writes during save (warned): save what is there
            versions = list(self._version)
        manifest = {
            "format": _FORMAT,
            "format_version": _FORMAT_VERSION,
            "routing": HASH_NAME,
            "index": {"kind": self.kind, "dim": self.dim, "metric": self.metric, "params": self.index_params},
            "num_shards": self.num_shards,
            "next_id": self._next_id,
            "shards": [{"file": names[s], "size": int(sizes[s])} for s in range(self.num_shards)],
        }
        manifest_path = os.path.join(directory, MANIFEST_NAME)
        _write_json_atomic(manifest_path, manifest)
        sources = {
            s: {
                "files": [os.path.join(directory, names[s])],
                "whole": True,
                "version": versions[s],
                "manifest": manifest_path,
            }
            for s in range(self.num_shards)
        }
        _ray().get(self._registry.set.remote(self._key, sources))
        keep = set(names)
        for path in glob.glob(os.path.join(directory, "shard-*.simdex")):
            if os.path.basename(path) not in keep:
                with contextlib.suppress(OSError):
                    os.unlink(path)

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike[str],
        *,
        num_shards: int | None = None,
        replicas: int = 1,
        max_restarts: int = 4,
        num_threads: int | None = None,
        actor_options: Mapping[str, Any] | None = None,
    ) -> ShardedIndex:
        """Load a directory written by :meth:`save`, onto any number of shards.

        Args:
            directory: The saved directory.
            num_shards: Shards to load onto (default: as many as were saved). With a
                different count each new shard reads every saved file and keeps the
                rows whose id routes to it.
            replicas, max_restarts, num_threads, actor_options: As in the constructor.

        Raises:
            FileNotFoundError: no manifest or a shard file is missing.
            simdex.CorruptFileError: a shard file is damaged (raised by the actor).
            ValueError: the manifest is not a simdex sharded-index manifest.
        """
        directory = os.path.abspath(os.fspath(directory))
        manifest_path = os.path.join(directory, MANIFEST_NAME)
        with open(manifest_path, encoding="utf-8") as f:
            try:
                manifest = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{manifest_path!r} is not valid JSON: {e}") from e
        if not isinstance(manifest, dict) or manifest.get("format") != _FORMAT:
            raise ValueError(f"{manifest_path!r} is not a simdex sharded-index manifest")
        if manifest.get("format_version") != _FORMAT_VERSION or manifest.get("routing") != HASH_NAME:
            raise ValueError(
                f"{manifest_path!r} has format version {manifest.get('format_version')!r} and routing "
                f"{manifest.get('routing')!r}; this simdex reads version {_FORMAT_VERSION} with {HASH_NAME!r}"
            )
        files = [os.path.join(directory, sh["file"]) for sh in manifest["shards"]]
        for path in files:
            if not os.path.exists(path):
                raise FileNotFoundError(f"shard file {path!r} named in {manifest_path!r} is missing")
        saved = int(manifest["num_shards"])
        n = saved if num_shards is None else check_positive_int(num_shards, "num_shards")
        if n == saved:
            sources = {
                s: {"files": [files[s]], "whole": True, "version": 0, "manifest": manifest_path}
                for s in range(n)
            }
        else:
            sources = {
                s: {"files": files, "whole": False, "version": 0, "manifest": manifest_path} for s in range(n)
            }
        meta = manifest["index"]
        spec = normalize_spec({"kind": meta["kind"], **meta["params"]}, int(meta["dim"]), str(meta["metric"]))
        self = cls.__new__(cls)
        self._setup(spec, n, replicas, max_restarts, num_threads, actor_options, sources)
        self._next_id = int(manifest["next_id"])
        return self

    # -- lifetime -------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop every actor of this index (also done when the object is garbage-collected)."""
        ray = _ray()
        for row in getattr(self, "_actors", []):
            for a in row:
                with contextlib.suppress(Exception):
                    ray.kill(a)
        if getattr(self, "_registry", None) is not None:
            with contextlib.suppress(Exception):
                self._registry.drop.remote(self._key)
        self._actors, self._registry = [], None

    def __enter__(self) -> ShardedIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def actor(self, shard: int, replica: int = 0) -> Any:
        """The Ray actor handle of one replica (for inspection and fault-injection tests)."""
        return self._actors[shard][replica]


def _cause(err: Any) -> BaseException:
    cause = getattr(err, "cause", None)
    return cause if isinstance(cause, BaseException) else err


def _restarting(err: Any) -> bool:
    """Whether Ray says the actor behind ``err`` will come back."""
    text = str(err).lower()
    return "restart" in text and "will not be restarted" not in text and "no_restart" not in text
