"""SIGKILL with many batches in flight loses nothing, and the commits it leaves behind never pass
an upload whose verdict was not yet on the broker. Real Apache Kafka, real worker processes."""

from __future__ import annotations

import asyncio
import os
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import GroupCoordinatorNotAvailableError

from streamdetect.events import Upload
from streamdetect.stream.admin import apply_topics
from streamdetect.stream.clients import publish_uploads
from streamdetect.events.topic_specs import load_specs
from tests.kafka_support import WorkerProcess, free_port, read_until
from tests.test_stream_e2e import inline, png

pytestmark = pytest.mark.kafka
UPLOADS = 200
MAX_IN_FLIGHT = 32


async def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        for attempt in range(20):
            try:
                offsets = await admin.list_consumer_group_offsets(group)
                break
            except GroupCoordinatorNotAvailableError:  # the offsets topic is still being set up
                if attempt == 19:
                    raise
                await asyncio.sleep(0.5)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic and meta.offset >= 0}


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line and not line.startswith("#")}


async def test_sigkill_with_many_batches_in_flight_loses_nothing(
    kafka_bootstrap: str, tiny_models: Path, tmp_path: Path
) -> None:
    prefix = f"k{uuid.uuid4().hex[:8]}-"
    group = f"{prefix}workers"
    await apply_topics(kafka_bootstrap, load_specs(), prefix)
    uploads = [Upload(upload_id=f"kill-{i:03d}", image=inline(png((i * 7 % 256, i * 13 % 256, 120))))
               for i in range(UPLOADS)]
    sent = await publish_uploads(kafka_bootstrap, prefix + "uploads", uploads, [u.upload_id for u in uploads])
    where = {s.upload_id: (s.partition, s.offset) for s in sent}
    assert len({p for p, _ in where.values()}) >= 4, "uploads should spread across partitions"

    port = free_port()
    env = {**os.environ, "KAFKA_BOOTSTRAP": kafka_bootstrap, "STREAMDETECT_TOPIC_PREFIX": prefix,
           "STREAMDETECT_GROUP_ID": group, "STREAMDETECT_MODEL_DIR": str(tiny_models), "STREAMDETECT_PROFILE": "tiny",
           "STREAMDETECT_LOG_JSON": "true", "STREAMDETECT_METRICS_PORT": str(port),
           # Frequent commits, so the kill lands after some: the invariant below is then not vacuous.
           "STREAMDETECT_COMMIT_INTERVAL_S": "0.3"}
    first = WorkerProcess(env, tmp_path / "first.log", "--max-batch", "4", "--max-in-flight", str(MAX_IN_FLIGHT))
    try:
        in_flight_at_kill = await _kill_when_committed_and_busy(first, kafka_bootstrap, group, prefix, port)
    finally:
        first.kill()
    assert in_flight_at_kill >= 3 * 4, f"only {in_flight_at_kill} uploads in flight at the kill: not many batches"

    committed = await committed_offsets(kafka_bootstrap, group, prefix + "uploads")
    judged = {v["upload_id"] for v in await read_until(kafka_bootstrap, prefix + "audit", lambda e: False, 3)}
    assert len(judged) < UPLOADS, "the worker finished before it was killed: nothing was tested"
    assert sum(committed.values()) > 0, "nothing was committed before the kill: the invariant would be vacuous"
    passed = [u for u, (p, o) in where.items() if o < committed.get(p, 0)]
    unpublished = sorted(u for u in passed if u not in judged)
    assert not unpublished, f"commits {committed} passed uploads without a verdict: {unpublished}"

    second = WorkerProcess({**env, "STREAMDETECT_METRICS_PORT": "0"}, tmp_path / "second.log")
    try:
        wanted = set(where)
        after = await read_until(kafka_bootstrap, prefix + "audit", lambda e: wanted <= {v["upload_id"] for v in e}, 300)
    finally:
        second.terminate()
    counts = Counter(v["upload_id"] for v in after)
    assert set(counts) == wanted, second.log_tail()
    print(f"killed with {in_flight_at_kill} in flight after {len(judged)} verdicts, {len(passed)} committed; "
          f"{sum(n - 1 for n in counts.values())} duplicate verdicts after restart")


async def _kill_when_committed_and_busy(worker: WorkerProcess, bootstrap: str, group: str, prefix: str,
                                        port: int) -> float:
    """Wait until some offsets are committed while uploads remain; return the in-flight gauge then."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert worker.proc.poll() is None, worker.log_tail()
        if sum((await committed_offsets(bootstrap, group, prefix + "uploads")).values()) > 0:
            try:
                return (await asyncio.to_thread(scrape, port))["streamdetect_uploads_in_flight"]
            except OSError:
                pass
        await asyncio.sleep(0.1)
    raise AssertionError("no offsets committed within 300 s:\n" + worker.log_tail())
