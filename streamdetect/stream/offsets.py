"""Offset bookkeeping for many uploads in flight at once.

Two rules keep a commit from ever passing an upload that was not judged (background:
docs/architecture.md#faust-commits and #faust-drops):

* Acks leave in partition order. faust commits the highest *contiguous run of acked offsets*,
  starting from the lowest acked one, not from the committed one (faust-streaming issue 606):
  acking 7 before 5 can commit past 5. So each partition keeps its uploads in consumption order,
  and an upload's ack is released only when it and every upload before it has been published.
* Uploads are admitted in offset order, from where the partition starts. faust can drop
  messages it fetched around a rebalance (delivered while its flow was suspended, or stamped
  with the old generation) and only repairs that by seeking to the committed offset, which
  aiokafka skips when there is none. The next upload it hands over then lies past ones never
  seen, and acking it would commit past them: that lost the first uploads of a partition taken
  over from a killed worker. ``admit`` reports such a gap; the worker asks the broker whether
  records were really skipped and rewinds the partition if so.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from enum import Enum
from typing import Callable, Hashable

# How long events fetched before a rewind may keep arriving. Past it, an upload beyond the
# rewind's target is judged a new gap, so a target that vanished (retention) cannot stall us.
REWIND_GRACE_S = 30.0


class Admission(Enum):
    ACCEPT = "accept"  # the partition's next offset: judge it
    SEEN = "seen"  # below the next offset: judged or in flight here already
    STALE = "stale"  # fetched before a rewind that has not come back yet
    GAP = "gap"  # beyond offsets never delivered: look before leaping


@dataclass
class _Rewind:
    target: int
    until: float


class OffsetTracker:
    def __init__(self) -> None:
        self._partitions: dict[Hashable, OrderedDict[int, list]] = {}
        self._next: dict[Hashable, int] = {}
        self._rewinds: dict[Hashable, _Rewind] = {}

    def knows(self, partition: Hashable) -> bool:
        return partition in self._next

    def begin(self, partition: Hashable, start: int) -> None:
        """The partition's first offset in this assignment: committed, or the log's start."""
        self._next[partition] = start

    def next_offset(self, partition: Hashable) -> int:
        return self._next[partition]

    def admit(self, partition: Hashable, offset: int, now: float) -> Admission:
        """Whether a consumed upload is the one its partition expects next; ACCEPT moves past it."""
        expected = self._next[partition]
        rewind = self._rewinds.get(partition)
        if offset < expected:
            return Admission.SEEN
        if rewind is not None and offset > rewind.target and now < rewind.until:
            return Admission.STALE
        if offset > expected:
            return Admission.GAP
        self._rewinds.pop(partition, None)
        self._next[partition] = offset + 1
        return Admission.ACCEPT

    def rewind(self, partition: Hashable, target: int, now: float) -> None:
        """The partition was sought back to ``target``: ignore what was fetched before that."""
        self._next[partition] = target
        self._rewinds[partition] = _Rewind(target, now + REWIND_GRACE_S)

    def skip_to(self, partition: Hashable, offset: int) -> None:
        """The offsets before ``offset`` hold no records (transaction markers, compaction)."""
        self._rewinds.pop(partition, None)
        self._next[partition] = offset

    def track(self, partition: Hashable, offset: int, ack: Callable[[], object]) -> None:
        """Register an admitted message; ``ack`` is called once it is safe to commit."""
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
            self._next.pop(partition, None)
            self._rewinds.pop(partition, None)

    def in_flight(self) -> int:
        return sum(len(p) for p in self._partitions.values())
