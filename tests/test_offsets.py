"""The commit rule: an offset is released only when every earlier one in its partition is done."""

import pytest

from streamdetect.stream.offsets import REWIND_GRACE_S, Admission, OffsetTracker


def tracked(offsets: list[int], partition: str = "p0") -> tuple[OffsetTracker, list[int]]:
    tracker, acked = OffsetTracker(), []
    for offset in offsets:
        tracker.track(partition, offset, lambda o=offset: acked.append(o))
    return tracker, acked


def test_done_out_of_order_is_held_back_until_the_gap_closes() -> None:
    tracker, acked = tracked([5, 6, 7])
    tracker.done("p0", 7)
    tracker.done("p0", 6)
    assert acked == []  # 5 is still open: committing 6 or 7 would skip it
    tracker.done("p0", 5)
    assert acked == [5, 6, 7]
    assert tracker.in_flight() == 0


def test_partitions_are_independent() -> None:
    tracker, acked = OffsetTracker(), []
    tracker.track("a", 1, lambda: acked.append("a1"))
    tracker.track("b", 1, lambda: acked.append("b1"))
    tracker.done("b", 1)
    assert acked == ["b1"]
    assert tracker.in_flight() == 1


def test_forgotten_partition_releases_nothing() -> None:
    tracker, acked = tracked([1, 2])
    tracker.forget({"p0"})
    assert tracker.done("p0", 1) == 0
    assert acked == []


def test_offsets_must_increase() -> None:
    tracker, _ = tracked([3])
    with pytest.raises(ValueError, match="not after 3"):
        tracker.track("p0", 3, lambda: None)


def started(start: int = 0, partition: str = "p0") -> OffsetTracker:
    tracker = OffsetTracker()
    tracker.begin(partition, start)
    return tracker


def test_uploads_are_admitted_in_offset_order_from_the_start() -> None:
    tracker = started(5)
    assert [tracker.admit("p0", o, 0.0) for o in (5, 6)] == [Admission.ACCEPT, Admission.ACCEPT]
    assert tracker.admit("p0", 6, 0.0) is Admission.SEEN  # delivered twice: judged once
    assert tracker.next_offset("p0") == 7


def test_an_upload_past_undelivered_offsets_is_a_gap_and_moves_nothing() -> None:
    tracker = started(0)
    assert tracker.admit("p0", 4, 0.0) is Admission.GAP  # 0..3 never came: acking 4 would commit past them
    assert tracker.next_offset("p0") == 0


def test_after_a_rewind_earlier_fetches_are_stale_until_the_target_returns() -> None:
    tracker = started(0)
    tracker.rewind("p0", 0, now=100.0)
    assert tracker.admit("p0", 5, 101.0) is Admission.STALE
    assert tracker.admit("p0", 0, 102.0) is Admission.ACCEPT
    assert tracker.admit("p0", 2, 103.0) is Admission.GAP  # the rewind is over: a jump is a gap again


def test_a_rewind_that_never_returns_becomes_a_gap_after_the_grace() -> None:
    tracker = started(0)
    tracker.rewind("p0", 0, now=100.0)
    assert tracker.admit("p0", 5, 100.0 + REWIND_GRACE_S) is Admission.GAP


def test_skip_to_accepts_offsets_that_hold_no_record() -> None:
    tracker = started(3)
    tracker.skip_to("p0", 5)  # e.g. 3 and 4 were transaction markers
    assert tracker.admit("p0", 5, 0.0) is Admission.ACCEPT


def test_forget_clears_the_start_so_a_new_assignment_asks_again() -> None:
    tracker = started(3)
    tracker.forget({"p0"})
    assert not tracker.knows("p0")


class _HeldPositions:
    """A broker stand-in whose answers wait until the test lets them through."""

    def __init__(self, start: int, first: int | None = None) -> None:
        import asyncio

        self.start, self.first, self.release = start, first, asyncio.Event()

    async def start_of(self, tp: object) -> int:
        await self.release.wait()
        return self.start

    async def first_record_from(self, tp: object, offset: int) -> int | None:
        await self.release.wait()
        return self.first


async def test_a_start_answered_after_the_partition_was_revoked_is_dropped() -> None:
    import asyncio

    from streamdetect.stream.admission import Admissions

    tracker, positions = OffsetTracker(), _HeldPositions(start=5)
    admissions = Admissions(tracker, positions, seek=lambda tp, offset: asyncio.sleep(0))  # type: ignore[arg-type]
    pending = asyncio.create_task(admissions.admit("p0", 5))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    admissions.reset({"p0"})  # revoked while the broker was being asked
    positions.release.set()
    assert await pending is False and not tracker.knows("p0")  # nothing stale written
    positions.start = 9  # re-assigned: the group's commit moved on meanwhile
    assert await admissions.admit("p0", 9) is True  # type: ignore[arg-type]
    assert tracker.next_offset("p0") == 10


async def test_reassignment_starts_a_partition_afresh() -> None:
    import asyncio

    from streamdetect.stream.admission import Admissions

    tracker, positions = OffsetTracker(), _HeldPositions(start=0)
    positions.release.set()
    admissions = Admissions(tracker, positions, seek=lambda tp, offset: asyncio.sleep(0))  # type: ignore[arg-type]
    assert await admissions.admit("p0", 0) and await admissions.admit("p0", 1)  # type: ignore[arg-type]
    admissions.reset({"p0"})  # assigned again: another worker may have committed up to 40
    positions.start = 40
    assert await admissions.admit("p0", 40) is True  # type: ignore[arg-type]


async def test_a_gap_answer_for_an_old_assignment_does_not_seek() -> None:
    import asyncio

    from streamdetect.stream.admission import Admissions

    seeks: list[int] = []

    async def seek(tp: object, offset: int) -> None:
        seeks.append(offset)

    tracker, positions = OffsetTracker(), _HeldPositions(start=0, first=0)
    tracker.begin("p0", 0)
    admissions = Admissions(tracker, positions, seek=seek)  # type: ignore[arg-type]
    pending = asyncio.create_task(admissions.admit("p0", 3))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    admissions.reset({"p0"})
    positions.release.set()
    assert await pending is False and seeks == [] and not tracker.knows("p0")
