"""Dynamic micro-batching for one stage, in the manner of an inference server's batcher.

Callers ``await batcher.submit(item)`` one item at a time; the batcher groups what is queued
into one call of ``fn(items) -> results`` (up to ``max_batch`` items, waiting at most
``max_wait_ms`` after the first), runs it on the device executor so the event loop stays free
for Kafka heartbeats, and resolves each caller's future. If a batch call raises, its items are
retried one by one, so a bad item fails alone and its batch-mates still get results.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Callable, Generic, Sequence, TypeVar

import structlog

T = TypeVar("T")
R = TypeVar("R")
log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class BatchSettings:
    max_batch: int = 8
    max_wait_ms: float = 20.0
    max_queue: int = 256

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")
        if self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")
        if self.max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {self.max_queue}")


class Batcher(Generic[T, R]):
    def __init__(
        self,
        name: str,
        fn: Callable[[list[T]], Sequence[R]],
        executor: Executor,
        settings: BatchSettings = BatchSettings(),
    ) -> None:
        self.name = name
        self._fn = fn
        self._executor = executor
        self._settings = settings
        self._queue: asyncio.Queue[tuple[T, asyncio.Future[R]]] = asyncio.Queue(settings.max_queue)
        self._loop_task: asyncio.Task[None] | None = None
        self.batch_sizes: list[int] = []  # observed sizes, for tests and metrics

    async def submit(self, item: T) -> R:
        """Queue one item (waits while the queue is full: that is the backpressure) and await its result."""
        if self._loop_task is None:
            self._loop_task = asyncio.create_task(self._run(), name=f"batcher-{self.name}")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        await self._queue.put((item, future))
        return await future

    async def close(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
            self._loop_task = None

    async def _run(self) -> None:
        while True:
            batch = await self._collect()
            await self._execute(batch)

    async def _collect(self) -> list[tuple[T, asyncio.Future[R]]]:
        batch = [await self._queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.max_wait_ms / 1000
        while len(batch) < self._settings.max_batch:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        # Callers that gave up (cancelled) need no work done for them.
        return [(item, fut) for item, fut in batch if not fut.done()]

    async def _execute(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        if not batch:
            return
        items = [item for item, _ in batch]
        self.batch_sizes.append(len(items))
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(self._executor, self._fn, items)
            if len(results) != len(items):
                raise RuntimeError(f"stage {self.name} returned {len(results)} results for {len(items)} items")
        except Exception as exc:  # noqa: BLE001 - any model failure is isolated below
            if len(batch) == 1:
                _resolve(batch[0][1], error=exc)
                return
            log.warning("batch.failed_retrying_alone", stage=self.name, size=len(batch), error=str(exc))
            for pair in batch:
                await self._execute([pair])
            return
        for (_, future), result in zip(batch, results):
            _resolve(future, result=result)


def _resolve(future: asyncio.Future[R], result: R | None = None, error: BaseException | None = None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)  # type: ignore[arg-type]
