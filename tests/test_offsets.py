"""The commit rule: an offset is released only when every earlier one in its partition is done."""

import pytest

from streamdetect.stream.offsets import OffsetTracker


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
