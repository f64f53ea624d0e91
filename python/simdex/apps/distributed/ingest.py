"""Bulk loading of a :class:`ShardedIndex` from Ray Datasets (embeddings, or raw inputs and a model)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from simdex._optional import import_optional


class SupportsAdd(Protocol):
    """What these loaders need of an index: ``add`` (a ShardedIndex, or any simdex Index)."""

    def add(self, vectors: Any, ids: Any = None, *, replace: bool = False) -> np.ndarray: ...


__all__ = ["add_dataset", "add_from_model", "Progress", "SupportsAdd"]

#: ``progress(rows_done, rows_total_or_None)``, called after every batch.
Progress = Callable[[int, "int | None"], None]


def _column_matrix(batch: dict[str, Any], column: str) -> np.ndarray:
    if column not in batch:
        raise KeyError(f"the dataset has no column {column!r} (columns: {', '.join(batch)})")
    col = batch[column]
    if isinstance(col, np.ndarray) and col.dtype != object:
        return col
    return np.stack([np.asarray(v) for v in col])  # a column of per-row arrays or lists


def _reporter(progress: bool | Progress | None, total: int | None, desc: str) -> tuple[Progress | None, Any]:
    if progress is None or progress is False:
        return None, None
    if callable(progress):
        return progress, None
    tqdm = import_optional(
        "tqdm.auto", "progress=True", 'pip install "simdex[progress]" (or pass a callback)'
    )
    bar = tqdm.tqdm(total=total, desc=desc, unit="vec")

    def update(done: int, _total: int | None) -> None:
        bar.update(done - bar.n)

    return update, bar


def add_dataset(
    index: SupportsAdd,
    dataset: Any,
    *,
    column: str = "embedding",
    id_column: str | None = None,
    batch_size: int = 4096,
    replace: bool = False,
    progress: bool | Progress | None = None,
) -> int:
    """Add every row of a Ray Dataset of embeddings to ``index``; see :meth:`ShardedIndex.add_dataset`."""
    total = dataset.count() if progress not in (None, False) else None
    report, bar = _reporter(progress, total, "simdex add")
    done = 0
    try:
        for batch in dataset.iter_batches(batch_size=batch_size, batch_format="numpy"):
            x = _column_matrix(batch, column)
            ids = None if id_column is None else _column_matrix(batch, id_column)
            index.add(x, ids, replace=replace)
            done += x.shape[0]
            if report is not None:
                report(done, total)
    finally:
        if bar is not None:
            bar.close()
    return done


class _EmbedBatch:
    """``map_batches`` callable: raw inputs -> ``{"embedding": (n, d), "id": (n,)}``.

    ``model`` is a function of a batch of inputs, or a class whose instances are:
    then it is built once per Ray Data worker (load weights in its ``__init__``).
    """

    def __init__(self, model: Any, input_column: str, id_column: str | None) -> None:
        self.model = model() if isinstance(model, type) else model
        self.input_column, self.id_column = input_column, id_column

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        if self.input_column not in batch:
            raise KeyError(f"the dataset has no column {self.input_column!r} (columns: {', '.join(batch)})")
        emb = np.asarray(self.model(batch[self.input_column]))
        n = len(batch[self.input_column])
        if emb.ndim != 2 or emb.shape[0] != n:
            raise ValueError(f"the model returned shape {emb.shape} for {n} inputs; expected (n, dim)")
        out = {"embedding": emb}
        if self.id_column is not None:
            out["id"] = np.asarray(batch[self.id_column])
        return out


def add_from_model(
    index: SupportsAdd,
    dataset: Any,
    model: Callable[[Any], Any] | type,
    *,
    input_column: str = "item",
    id_column: str | None = None,
    batch_size: int = 256,
    concurrency: int | None = None,
    num_cpus: float | None = None,
    add_batch_size: int = 4096,
    progress: bool | Progress | None = None,
) -> int:
    """Embed a Ray Dataset of raw inputs with ``map_batches`` and add the embeddings."""
    kwargs: dict[str, Any] = {"batch_size": batch_size, "batch_format": "numpy"}
    if num_cpus is not None:
        kwargs["num_cpus"] = num_cpus
    if isinstance(model, type):  # a stateful model: a pool of actors, each builds it once
        kwargs["concurrency"] = concurrency or 1
        kwargs["fn_constructor_args"] = (model, input_column, id_column)
        embedded = dataset.map_batches(_EmbedBatch, **kwargs)
    else:
        if concurrency is not None:
            kwargs["concurrency"] = concurrency
        fn = _EmbedBatch(model, input_column, id_column)
        embedded = dataset.map_batches(fn, **kwargs)
    total = dataset.count() if progress not in (None, False) else None
    report, bar = _reporter(progress, total, "simdex embed+add")
    done = 0
    try:
        for batch in embedded.iter_batches(batch_size=add_batch_size, batch_format="numpy"):
            x = batch["embedding"]
            index.add(x, batch["id"] if id_column is not None else None)
            done += x.shape[0]
            if report is not None:
                report(done, total)
    finally:
        if bar is not None:
            bar.close()
    return done
