"""Micro-batching: items from concurrent callers share a call; a bad item fails alone."""

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from streamdetect.pipeline.batcher import Batcher, BatchReport, BatchSettings, StageSettings


@pytest.fixture
def executor():
    with ThreadPoolExecutor(max_workers=1) as pool:
        yield pool


async def test_concurrent_items_are_batched_up_to_max_batch(executor) -> None:
    calls: list[list[int]] = []

    def double(items: list[int]) -> list[int]:
        calls.append(list(items))
        return [i * 2 for i in items]

    batcher = Batcher("double", double, executor, BatchSettings(max_batch=4, max_wait_ms=50))
    results = await asyncio.gather(*(batcher.submit(i) for i in range(10)))
    await batcher.close()
    assert results == [i * 2 for i in range(10)]
    assert max(len(c) for c in calls) == 4
    assert len(calls) < 10  # batched, not one call per item


async def test_a_failing_item_fails_alone(executor) -> None:
    def picky(items: list[int]) -> list[int]:
        if 3 in items:
            raise ValueError("cannot handle 3")
        return items

    batcher = Batcher("picky", picky, executor, BatchSettings(max_batch=8, max_wait_ms=50))
    results = await asyncio.gather(*(batcher.submit(i) for i in range(6)), return_exceptions=True)
    await batcher.close()
    assert [r for r in results if not isinstance(r, Exception)] == [0, 1, 2, 4, 5]
    assert isinstance(results[3], ValueError)


async def test_model_calls_run_off_the_event_loop(executor) -> None:
    loop_thread = threading.get_ident()
    seen: list[int] = []

    def record(items: list[int]) -> list[int]:
        seen.append(threading.get_ident())
        return items

    batcher = Batcher("where", record, executor)
    await batcher.submit(1)
    await batcher.close()
    assert seen and loop_thread not in seen


async def test_a_full_batch_does_not_wait_for_the_timer(executor) -> None:
    release = threading.Event()

    def blocked(items: list[int]) -> list[int]:
        release.wait(5)
        return items

    batcher = Batcher("full", blocked, executor, BatchSettings(max_batch=2, max_wait_ms=60_000))
    pending = asyncio.gather(batcher.submit(1), batcher.submit(2))
    await asyncio.sleep(0.1)
    release.set()
    assert await asyncio.wait_for(pending, 5) == [1, 2]  # would hang a minute if it waited for max_wait_ms
    await batcher.close()


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        BatchSettings(max_batch=0)


async def test_the_next_batch_forms_while_one_runs(executor) -> None:
    """With two batches in flight, the second is handed to the device before the first ends."""
    release = threading.Event()
    calls: list[list[int]] = []

    def gated(items: list[int]) -> list[int]:
        calls.append(list(items))
        release.wait(5)
        return items

    batcher = Batcher("pipelined", gated, executor, BatchSettings(max_batch=2, max_wait_ms=0, batches_in_flight=2))
    pending = asyncio.gather(*(batcher.submit(i) for i in range(6)))
    await asyncio.sleep(0.2)
    # The device runs batch one; batch two is formed and queued behind it; the rest wait.
    assert list(batcher.batch_sizes) == [2, 2] and calls == [[0, 1]]
    release.set()
    assert await asyncio.wait_for(pending, 5) == list(range(6))
    await batcher.close()


async def test_one_batch_in_flight_waits_for_the_previous(executor) -> None:
    release = threading.Event()

    def gated(items: list[int]) -> list[int]:
        release.wait(5)
        return items

    batcher = Batcher("serial", gated, executor, BatchSettings(max_batch=2, max_wait_ms=0, batches_in_flight=1))
    pending = asyncio.gather(*(batcher.submit(i) for i in range(4)))
    await asyncio.sleep(0.2)
    assert list(batcher.batch_sizes) == [2]
    release.set()
    await asyncio.wait_for(pending, 5)
    await batcher.close()


async def test_observer_hears_sizes_times_and_lone_failures(executor) -> None:
    reports: list[BatchReport] = []

    def picky(items: list[int]) -> list[int]:
        if 3 in items:
            raise ValueError("cannot handle 3")
        return items

    batcher = Batcher("picky", picky, executor, BatchSettings(max_batch=8, max_wait_ms=50), observer=reports.append)
    await asyncio.gather(*(batcher.submit(i) for i in range(5)), return_exceptions=True)
    await batcher.close()
    # The batch of five failed, so each item ran alone: four good reports and one failure.
    assert sorted((r.size, r.failed) for r in reports) == [(1, 0)] * 4 + [(1, 1)]
    assert all(r.stage == "picky" and r.seconds >= 0 for r in reports)


async def test_a_broken_observer_does_not_fail_items(executor) -> None:
    def broken(report: BatchReport) -> None:
        raise RuntimeError("observer bug")

    batcher = Batcher("obs", lambda items: items, executor, observer=broken)
    assert await batcher.submit(7) == 7
    await batcher.close()


def test_stage_settings_fall_back_to_the_default() -> None:
    generate = BatchSettings(max_batch=2)
    stages = StageSettings(default=BatchSettings(max_batch=16), generate=generate)
    assert stages.for_stage("generate") is generate
    assert stages.for_stage("embed").max_batch == 16
    with pytest.raises(ValueError, match="stage 'regenerate'"):
        stages.for_stage("regenerate")
    with pytest.raises(ValueError, match="batches_in_flight"):
        BatchSettings(batches_in_flight=0)
