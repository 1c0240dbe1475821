"""Offset bookkeeping for many uploads in flight at once.

faust commits the highest *contiguous run of acked offsets*, starting from the lowest acked
one, not from the committed one (see faust-streaming issue 606): acking offset 7 before 5 can
commit past 5. So nothing here is acked out of order: each partition keeps its uploads in
consumption order, and an upload's ack is released only when it and every upload before it
in that partition has been published.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Hashable


class OffsetTracker:
    def __init__(self) -> None:
        self._partitions: dict[Hashable, OrderedDict[int, list]] = {}

    def track(self, partition: Hashable, offset: int, ack: Callable[[], object]) -> None:
        """Register a consumed message; ``ack`` is called once it is safe to commit."""
        pending = self._partitions.setdefault(partition, OrderedDict())
        if pending and offset <= next(reversed(pending)):
            raise ValueError(f"offset {offset} on {partition} is not after {next(reversed(pending))}")
        pending[offset] = [False, ack]

    def done(self, partition: Hashable, offset: int) -> int:
        """Mark a message as published; ack the done prefix of its partition. Returns acks released."""
        pending = self._partitions.get(partition)
        if pending is None or offset not in pending:
            return 0  # revoked and forgotten meanwhile; its replay is the new owner's
        pending[offset][0] = True
        released = 0
        while pending and next(iter(pending.values()))[0]:
            _, (_, ack) = pending.popitem(last=False)
            ack()
            released += 1
        return released

    def forget(self, partitions: set[Hashable]) -> None:
        """Drop partitions this worker no longer owns: their un-acked uploads will be replayed."""
        for partition in partitions:
            self._partitions.pop(partition, None)

    def in_flight(self) -> int:
        return sum(len(p) for p in self._partitions.values())
