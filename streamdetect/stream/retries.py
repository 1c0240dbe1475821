"""Transient is not final: how often an upload's fetch or judgement is tried again before it is
dead-lettered, and the breaker that takes a worker out of service when the models keep failing.

An S3 or HTTPS blip (``unreachable``) and a model error from a wedged device are retried with
doubling waits, never past the upload's deadline. A run of model errors in a row means the
device, not the uploads, is broken: the breaker trips, ``/healthz`` turns red and the worker
stops taking uploads, so an orchestrator restarts it instead of the worker draining the topic
into the dead-letter queue.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Awaitable, Callable

import structlog

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Retries:
    fetch: int = 2  # extra attempts for an image that was unreachable
    model: int = 1  # extra attempts for a model error
    backoff_s: float = 0.5  # the first wait; each later one doubles
    model_error_limit: int = 5  # model errors in a row that trip the breaker; 0 = never

    def __post_init__(self) -> None:
        if self.fetch < 0 or self.model < 0 or self.backoff_s < 0 or self.model_error_limit < 0:
            raise ValueError(f"retries must be >= 0, got {self}")

    async def wait(self, attempt: int, deadline: float | None) -> bool:
        """Sleep before attempt ``attempt + 1``; False (without sleeping) if that would pass the deadline."""
        delay = self.backoff_s * 2**attempt
        if deadline is not None and time.time() + delay >= deadline:
            return False
        await asyncio.sleep(delay)
        return True


class ModelBreaker:
    """Counts model errors in a row. At the limit it asks ``probe`` (judge a known-good sample)
    whether the models still work: if they do, the failures were the uploads' own (an attacker
    cannot take the worker out of service with a few poisoned uploads) and the count starts
    again; if not, it calls ``trip`` once."""

    def __init__(self, limit: int, trip: Callable[[int], None] = lambda n: None,
                 probe: Callable[[], Awaitable[bool]] | None = None) -> None:
        self._limit, self._trip, self._probe = limit, trip, probe
        self.in_a_row = 0
        self.tripped = False

    def success(self) -> None:
        self.in_a_row = 0

    async def failure(self) -> None:
        self.in_a_row += 1
        if not self._limit or self.in_a_row < self._limit or self.tripped:
            return
        if self._probe is not None and await self._probe():
            log.warning("worker.model_errors_were_the_uploads", model_errors_in_a_row=self.in_a_row,
                        detail="a known-good sample was judged: the models work, the uploads failed them")
            self.in_a_row = 0
            return
        if self.tripped:  # another failure's probe tripped it while this one waited
            return
        self.tripped = True
        log.error("worker.models_failing", model_errors_in_a_row=self.in_a_row,
                  action="stopped taking uploads; /healthz is unhealthy: restart the worker")
        self._trip(self.in_a_row)
