"""Micro-batching of concurrent searches into one native batch call.

Requests from the event loop are queued; one worker thread takes the oldest, waits
until ``window`` seconds after *its* arrival for more (or until ``max_batch`` rows are
queued), stacks them into one (n, d) matrix, runs one ``search`` with the largest
``k`` asked (results for a smaller ``k`` are a prefix: distances ascend and ties
break by id), and hands each request its rows back on its event loop in one
callback per batch. While a batch runs (the native search releases the GIL) new
requests queue up, so a request waits at most for the batch in progress plus the
rest of its window.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["MicroBatcher"]

log = logging.getLogger("simdex")


class _Item:
    __slots__ = ("q", "k", "fn", "future", "loop", "t")

    def __init__(
        self,
        q: np.ndarray | None,
        k: int,
        future: asyncio.Future,
        loop: asyncio.AbstractEventLoop,
        fn: Callable[[], Any] | None = None,
    ) -> None:
        self.q = q
        self.k = k
        self.fn = fn
        self.future = future
        self.loop = loop
        self.t = time.perf_counter()


def _deliver(results: list[tuple[asyncio.Future, Any, BaseException | None]]) -> None:
    for fut, value, err in results:
        if fut.done():  # the client went away
            continue
        if err is not None:
            fut.set_exception(err)
        else:
            fut.set_result(value)


class MicroBatcher:
    """Coalesce concurrent searches within ``window`` seconds into one call.

    Every search runs on the one worker thread, so searches never overlap each
    other: a write waits for at most one native call.

    Args:
        search: ``search(queries (n, d) float32, k) -> (D, I)`` of shape (n, k).
        window: Seconds to wait for more requests after the oldest arrived.
        max_batch: Most query rows per native call (a larger request runs alone).
        coalesce: False runs each request in its own native call (still on the
            worker thread, in arrival order): the "no micro-batching" mode.
        on_batch: Optional ``callback(rows, requests, seconds)`` for metrics.
    """

    def __init__(
        self,
        search: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]],
        *,
        window: float = 0.001,
        max_batch: int = 256,
        coalesce: bool = True,
        on_batch: Callable[[int, int, float], None] | None = None,
    ) -> None:
        if window < 0:
            raise ValueError(f"window must be >= 0 seconds, got {window}")
        self._search = search
        self.window = float(window)
        self.max_batch = int(max_batch)
        self.coalesce = bool(coalesce)
        self._on_batch = on_batch
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False

    async def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Search ``q`` (n, d) float32 (already validated) through the next batch."""
        if self._closed:
            raise RuntimeError("the search worker is stopped (the service is shutting down)")
        if self._thread is None:
            self._start()
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._queue.put(_Item(q, k, fut, loop))
        return await fut

    async def run(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn()`` alone on the worker thread (a search that cannot be batched)."""
        if self._closed:
            raise RuntimeError("the search worker is stopped (the service is shutting down)")
        if self._thread is None:
            self._start()
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._queue.put(_Item(None, 0, fut, loop, fn))
        return await fut

    def _start(self) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="simdex-batcher", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException:  # a bug here must not leave requests waiting forever
            log.exception("simdex batcher stopped")
            with self._lock:
                self._closed = True
            while True:
                try:
                    it = self._queue.get_nowait()
                except queue.Empty:
                    break
                if it is not None:
                    it.loop.call_soon_threadsafe(
                        _deliver, [(it.future, None, RuntimeError("batcher stopped"))]
                    )
            raise

    def _loop(self) -> None:
        carry: _Item | None = None
        while True:
            first = carry if carry is not None else self._queue.get()
            carry = None
            if first is None:
                return
            if first.q is None or not self.coalesce:
                self._run_alone(first)
                continue
            batch = [first]
            rows = first.q.shape[0]
            deadline = first.t + self.window
            stop = False
            while rows < self.max_batch:
                timeout = deadline - time.perf_counter()
                try:
                    nxt = self._queue.get_nowait() if timeout <= 0 else self._queue.get(timeout=timeout)
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                if nxt.q is None or rows + nxt.q.shape[0] > self.max_batch:
                    carry = nxt
                    break
                batch.append(nxt)
                rows += nxt.q.shape[0]
            self._run_batch(batch, rows)
            if stop:
                return

    def _run_alone(self, it: _Item) -> None:
        t0 = time.perf_counter()
        try:
            if it.fn is not None:
                result: tuple[Any, Any, BaseException | None] = (it.future, it.fn(), None)
            else:
                assert it.q is not None
                result = (it.future, self._search(it.q, it.k), None)
        except BaseException as e:  # noqa: BLE001 - handed to the request
            result = (it.future, None, e)
        try:
            it.loop.call_soon_threadsafe(_deliver, [result])
        except RuntimeError:
            pass
        if self._on_batch is not None and it.q is not None:
            self._on_batch(it.q.shape[0], 1, time.perf_counter() - t0)

    def _run_batch(self, batch: list[_Item], rows: int) -> None:
        t0 = time.perf_counter()
        k = max(it.k for it in batch)
        by_loop: dict[asyncio.AbstractEventLoop, list] = {}
        queries = [it.q for it in batch if it.q is not None]  # batched items always carry queries
        try:
            q = queries[0] if len(queries) == 1 else np.concatenate(queries)
            D, I = self._search(q, k)
            off = 0
            for it, qi in zip(batch, queries):
                n = qi.shape[0]
                by_loop.setdefault(it.loop, []).append(
                    (it.future, (D[off : off + n, : it.k], I[off : off + n, : it.k]), None)
                )
                off += n
        except BaseException as e:  # noqa: BLE001 - every request of the batch gets the error
            for it in batch:
                by_loop.setdefault(it.loop, []).append((it.future, None, e))
        for loop, results in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver, results)
            except RuntimeError:  # that loop has closed
                pass
        if self._on_batch is not None:
            self._on_batch(rows, len(batch), time.perf_counter() - t0)

    def close(self) -> None:
        """Finish queued searches and stop the worker thread."""
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout=30)
