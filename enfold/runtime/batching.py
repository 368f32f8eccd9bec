"""Dynamic batching for asyncio servers: concurrent requests become single model calls.

Generic over the batch function (``(N, ...) tensor -> (N, ...) tensor``); ``enfold serve`` keeps
one :class:`MicroBatcher` per served target.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

log = logging.getLogger("enfold.serve")


@dataclass
class Batched:
    """A request's output rows and the size of the batch they were computed in.

    A request split into several chunks (more rows than ``max_batch``) reports the largest.
    """

    rows: torch.Tensor
    batch_size: int


@dataclass
class _Item:
    x: torch.Tensor
    future: asyncio.Future
    enqueued: float


@dataclass
class _Counters:
    requests: int = 0
    batches: int = 0
    images: int = 0
    failed_batches: int = 0
    largest_batch: int = 0
    sizes: dict[int, int] = field(default_factory=dict)  # batch size -> how many batches


class MicroBatcher:
    """Groups concurrent requests into single calls of a synchronous batch function.

    ``await submit(x)`` queues ``x`` (``(N, C, H, W)``) and returns its rows of ``fn``'s output.
    One worker task takes the queue head, waits up to ``max_wait_ms`` after that item arrived
    for more rows (or until ``max_batch`` rows are queued), concatenates them and runs ``fn`` in
    a thread. Requests with more than ``max_batch`` rows are split into chunks that batch like
    any other. An exception from ``fn`` is delivered to every request of that batch only; one
    from ``check`` (called on each request's own output rows) to that request only.
    """

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], max_batch: int = 16,
                 max_wait_ms: float = 5.0, name: str = "model",
                 check: Callable[[torch.Tensor], None] | None = None) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self.fn = fn
        self.max_batch = int(max_batch)
        self.max_wait = float(max_wait_ms) / 1000.0
        self.name = name
        self.check = check
        self.counters = _Counters()
        self._queue: deque[_Item] = deque()
        self._queued_rows = 0
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None

    # -- public API
    async def submit(self, x: torch.Tensor) -> Batched:
        """Queue ``x`` ``(N, C, H, W)`` and wait for its ``N`` output rows."""
        if x.ndim < 1 or x.shape[0] == 0:
            raise ValueError(f"submit needs a batch of at least one row, got {tuple(x.shape)}")
        self._ensure_worker()
        loop = asyncio.get_running_loop()
        futures = []
        for chunk in x.split(self.max_batch):
            fut = loop.create_future()
            self._queue.append(_Item(chunk, fut, loop.time()))
            self._queued_rows += chunk.shape[0]
            futures.append(fut)
        self.counters.requests += 1
        assert self._wakeup is not None
        self._wakeup.set()
        try:
            results = await asyncio.gather(*futures)
        except BaseException:
            for fut in futures:  # chunks still queued are skipped by the worker
                fut.cancel()
            raise
        rows = results[0][0] if len(results) == 1 else torch.cat([r[0] for r in results])
        return Batched(rows, max(r[1] for r in results))

    def stats(self) -> dict[str, Any]:
        """Requests, batches, images, mean batch size and the batch-size histogram so far."""
        c = self.counters
        return {"requests": c.requests, "batches": c.batches, "images": c.images,
                "mean_batch_size": round(c.images / c.batches, 3) if c.batches else 0.0,
                "largest_batch": c.largest_batch, "failed_batches": c.failed_batches,
                "queued_images": self._queued_rows,
                "batch_sizes": {str(k): v for k, v in sorted(c.sizes.items())}}

    async def stop(self) -> None:
        """Stop the worker; requests still queued fail with a RuntimeError."""
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None
        while self._queue:
            item = self._queue.popleft()
            if not item.future.done():
                item.future.set_exception(RuntimeError("the server is shutting down"))
        self._queued_rows = 0

    # -- internals
    def _ensure_worker(self) -> None:
        # Started lazily so the queue, event and task belong to the loop that serves requests.
        if self._worker is None or self._worker.done():
            self._wakeup = asyncio.Event()
            self._worker = asyncio.get_running_loop().create_task(
                self._work(), name=f"enfold-batcher-{self.name}")

    async def _work(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            while not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            # The oldest request waits at most max_wait for company; requests that queued while
            # the previous batch ran are usually past that already and go at once.
            deadline = self._queue[0].enqueued + self.max_wait
            while self._queued_rows < self.max_batch:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            items = self._take()
            if items:
                await self._run_batch(items)

    def _take(self) -> list[_Item]:
        """Pop queued items, oldest first, while they fit ``max_batch`` and share a shape."""
        items: list[_Item] = []
        rows = 0
        while self._queue:
            item = self._queue[0]
            n = item.x.shape[0]
            if item.future.done():  # its request was cancelled (client went away)
                self._queue.popleft()
                self._queued_rows -= n
                continue
            if items and (rows + n > self.max_batch or item.x.shape[1:] != items[0].x.shape[1:]):
                break
            self._queue.popleft()
            self._queued_rows -= n
            items.append(item)
            rows += n
        return items

    async def _run_batch(self, items: list[_Item]) -> None:
        sizes = [item.x.shape[0] for item in items]
        total = sum(sizes)
        try:
            batch = items[0].x if len(items) == 1 else torch.cat([item.x for item in items])
            out = await asyncio.to_thread(self.fn, batch)
            if len(out) != total:
                raise RuntimeError(f"{self.name}: a batch of {total} gave {len(out)} outputs")
        except Exception as exc:  # delivered to the waiting requests, never lost
            self.counters.failed_batches += 1
            log.error("%s batch of %d failed: %s: %s", self.name, total, type(exc).__name__, exc)
            for item in items:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        c = self.counters
        c.batches += 1
        c.images += total
        c.largest_batch = max(c.largest_batch, total)
        c.sizes[total] = c.sizes.get(total, 0) + 1
        start = 0
        for item, n in zip(items, sizes, strict=True):
            rows = out[start:start + n]
            start += n
            if item.future.done():
                continue
            try:
                if self.check is not None:
                    self.check(rows)
            except Exception as exc:  # this request's rows only: its batch-mates are fine
                log.error("%s: %s", self.name, exc)
                item.future.set_exception(exc)
                continue
            item.future.set_result((rows, total))
