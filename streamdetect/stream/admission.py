"""Lets a consumed upload through only at its partition's next offset (offsets.py says why).

On a jump it asks the broker whether records lie inside it: if not (transaction markers,
compaction), the jump is accepted; if so, the partition is sought back to the first of them
and what was fetched before the seek is ignored until that record comes back.

State is per assignment: ``reset`` (on every revoke and assign) forgets a partition's state and
starts a new epoch, and an answer from the broker that arrives after its partition's epoch
moved on is dropped instead of written, so a partition that left and came back never resumes
from a stale expected offset (a rewind over work another worker did, or a stall).
"""

from __future__ import annotations

import time
from typing import Awaitable, Callable, Iterable

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
        self._epochs: dict[PartitionLike, int] = {}

    def reset(self, partitions: Iterable[PartitionLike]) -> None:
        """Partitions were revoked or assigned: forget their state; answers in flight are void."""
        partitions = set(partitions)
        for tp in partitions:
            self._epochs[tp] = self._epochs.get(tp, 0) + 1
        self._tracker.forget(partitions)

    async def admit(self, tp: PartitionLike, offset: int) -> bool:
        """True if the upload at ``offset`` is to be judged now; False if it is seen or will come again."""
        epoch = self._epochs.get(tp, 0)
        if not self._tracker.knows(tp):
            start = await self._positions.start_of(tp)
            if self._epochs.get(tp, 0) != epoch:
                return False  # revoked or re-assigned meanwhile: the next assignment asks again
            self._tracker.begin(tp, start)
        verdict = self._tracker.admit(tp, offset, time.monotonic())
        if verdict is Admission.GAP:
            return await self._close_gap(tp, offset, epoch)
        return verdict is Admission.ACCEPT

    async def _close_gap(self, tp: PartitionLike, offset: int, epoch: int) -> bool:
        expected = self._tracker.next_offset(tp)
        first = await self._positions.first_record_from(tp, expected)
        if self._epochs.get(tp, 0) != epoch:
            return False  # revoked or re-assigned meanwhile: this answer is about an old assignment
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
