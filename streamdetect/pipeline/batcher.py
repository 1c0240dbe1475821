"""Dynamic micro-batching for one stage, in the manner of an inference server's batcher.

Callers ``await batcher.submit(item)`` one item at a time; the batcher groups what is queued
into one call of ``fn(items) -> results`` (up to ``max_batch`` items, waiting at most
``max_wait_ms`` after the first), runs it on the device executor so the event loop stays free
for Kafka heartbeats, and resolves each caller's future. If a batch call raises, its items are
retried one by one, so a bad item fails alone and its batch-mates still get results.

Up to ``batches_in_flight`` batches of one stage are handed to the device at once: while one
runs, the stage already forms the next, so the device finds it queued the moment it is free
instead of idling through the next ``max_wait_ms``. An optional observer hears about every
batch (size, device seconds, failures), which is how metrics see the engine without the
pipeline importing a metrics library.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Callable, Generic, Sequence, TypeVar

import structlog

T = TypeVar("T")
R = TypeVar("R")
log = structlog.get_logger(__name__)
STAGES = ("caption", "generate", "embed")
BATCH_HISTORY = 256  # batch sizes kept for inspection: a long-lived worker must not grow a list per batch


@dataclass(frozen=True)
class BatchSettings:
    max_batch: int = 8
    max_wait_ms: float = 20.0
    max_queue: int = 256
    batches_in_flight: int = 2

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")
        if self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")
        if self.max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {self.max_queue}")
        if self.batches_in_flight < 1:
            raise ValueError(f"batches_in_flight must be >= 1, got {self.batches_in_flight}")

    def for_stage(self, stage: str) -> BatchSettings:
        """The same settings for every stage."""
        return self


@dataclass(frozen=True)
class StageSettings:
    """Per-stage batch settings; a stage left as None uses ``default``."""

    default: BatchSettings = BatchSettings()
    caption: BatchSettings | None = None
    generate: BatchSettings | None = None
    embed: BatchSettings | None = None

    def for_stage(self, stage: str) -> BatchSettings:
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
        return getattr(self, stage) or self.default


@dataclass(frozen=True)
class BatchReport:
    """What an observer hears after each batched call."""

    stage: str
    size: int
    seconds: float  # time in the model call itself, not waiting for the device
    failed: int  # items whose result is an error (after retrying alone)


BatchObserver = Callable[[BatchReport], None]


class Batcher(Generic[T, R]):
    def __init__(
        self,
        name: str,
        fn: Callable[[list[T]], Sequence[R]],
        executor: Executor,
        settings: BatchSettings = BatchSettings(),
        observer: BatchObserver | None = None,
    ) -> None:
        self.name = name
        self.observer = observer
        self._fn = fn
        self._executor = executor
        self._settings = settings
        self._queue: asyncio.Queue[tuple[T, asyncio.Future[R]]] = asyncio.Queue(settings.max_queue)
        self._loop_task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self.batch_sizes: deque[int] = deque(maxlen=BATCH_HISTORY)  # the latest sizes, for tests; bounded

    @property
    def settings(self) -> BatchSettings:
        return self._settings

    def queue_depth(self) -> int:
        """Items waiting to join a batch (not those already on the device)."""
        return self._queue.qsize()

    async def submit(self, item: T) -> R:
        """Queue one item (waits while the queue is full: that is the backpressure) and await its result."""
        if self._loop_task is None:
            self._loop_task = asyncio.create_task(self._run(), name=f"batcher-{self.name}")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        await self._queue.put((item, future))
        return await future

    async def close(self) -> None:
        tasks = [t for t in (self._loop_task, *self._running) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._loop_task = None

    async def _run(self) -> None:
        slots = asyncio.Semaphore(self._settings.batches_in_flight)
        while True:
            await slots.acquire()
            batch = await self._collect()
            task = asyncio.create_task(self._execute(batch), name=f"batch-{self.name}")
            self._running.add(task)
            task.add_done_callback(self._running.discard)
            task.add_done_callback(lambda _: slots.release())

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
        try:
            results, seconds = await asyncio.get_running_loop().run_in_executor(self._executor, _timed, self._fn, items)
            if len(results) != len(items):
                raise RuntimeError(f"stage {self.name} returned {len(results)} results for {len(items)} items")
        except Exception as exc:  # noqa: BLE001 - any model failure is isolated below
            if len(batch) == 1:
                self._report(1, 0.0, failed=1)
                _resolve(batch[0][1], error=exc)
                return
            log.warning("batch.failed_retrying_alone", stage=self.name, size=len(batch), error=str(exc))
            for pair in batch:
                await self._execute([pair])
            return
        self._report(len(items), seconds, failed=0)
        for (_, future), result in zip(batch, results):
            _resolve(future, result=result)

    def _report(self, size: int, seconds: float, failed: int) -> None:
        if self.observer is None:
            return
        try:
            self.observer(BatchReport(self.name, size, seconds, failed))
        except Exception as exc:  # noqa: BLE001 - a broken observer must not fail uploads
            log.warning("batch.observer_failed", stage=self.name, error=str(exc))


def _timed(fn: Callable[[list[T]], Sequence[R]], items: list[T]) -> tuple[Sequence[R], float]:
    start = time.perf_counter()
    results = fn(items)
    return results, time.perf_counter() - start


def _resolve(future: asyncio.Future[R], result: R | None = None, error: BaseException | None = None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)  # type: ignore[arg-type]
