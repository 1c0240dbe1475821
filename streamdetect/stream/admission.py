"""Lets a consumed upload through only at its partition's next offset (offsets.py says why).

On a jump it asks the broker whether records lie inside it: if not (transaction markers,
compaction), the jump is accepted; if so, the partition is sought back to the first of them
and what was fetched before the seek is ignored until that record comes back.
"""

from __future__ import annotations

import time
from typing import Awaitable, Callable

import structlog

from streamdetect.stream.offsets import Admission, OffsetTracker
from streamdetect.stream.positions import PartitionLike, PartitionPositions

log = structlog.get_logger(__name__)
Seek = Callable[[PartitionLike, int], Awaitable[None]]


class Admissions:
    def __init__(self, tracker: OffsetTracker, positions: PartitionPositions, seek: Seek,
                 on_rewind: Callable[[], None] = lambda: None) -> None:
        self._tracker = tracker
        self._positions = positions
        self._seek = seek
        self._on_rewind = on_rewind

    async def admit(self, tp: PartitionLike, offset: int) -> bool:
        """True if the upload at ``offset`` is to be judged now; False if it is seen or will come again."""
        if not self._tracker.knows(tp):
            self._tracker.begin(tp, await self._positions.start_of(tp))
        verdict = self._tracker.admit(tp, offset, time.monotonic())
        if verdict is Admission.GAP:
            return await self._close_gap(tp, offset)
        return verdict is Admission.ACCEPT

    async def _close_gap(self, tp: PartitionLike, offset: int) -> bool:
        expected = self._tracker.next_offset(tp)
        first = await self._positions.first_record_from(tp, expected)
        if first is not None and first >= offset:
            self._tracker.skip_to(tp, offset)
            return self._tracker.admit(tp, offset, time.monotonic()) is Admission.ACCEPT
        target = expected if first is None else first
        log.warning("worker.rewind", partition=f"{tp.topic}/{tp.partition}", expected=expected, received=offset,
                    rewind_to=target)
        self._on_rewind()
        self._tracker.rewind(tp, target, time.monotonic())
        try:
            await self._seek(tp, target)
        except Exception as exc:  # noqa: BLE001 - revoked meanwhile; past the grace a later upload retries
            log.warning("worker.rewind_failed", partition=f"{tp.topic}/{tp.partition}", error=str(exc))
        return False
