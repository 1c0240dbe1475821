"""Records the consumer skips are judged anyway, on a real broker.

faust can drop uploads it fetched around a rebalance and, for a partition with no committed
offset, never seek back to them (offsets.py). Here the worker's own consumer is sought past
records before they are judged, which is what that drop leaves behind; the worker must notice
the jump, ask the broker, rewind and judge every upload once. Offsets that hold no record
(transaction markers) must not be mistaken for skipped records.
"""

from __future__ import annotations

import asyncio
import base64
import io
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from faust.types import TP
from PIL import Image

from streamdetect.settings import Settings
from streamdetect import events
from streamdetect.events import Upload
from streamdetect.images import ImagePolicy
from streamdetect.stream.admin import apply_topics
from streamdetect.stream.handler import Topics, UploadHandler
from streamdetect.stream.metrics import WorkerMetrics
from streamdetect.stream.positions import PartitionPositions
from streamdetect.stream.worker import build_app
from streamdetect.events.topic_specs import load_specs
from tests.kafka_support import read_until

pytestmark = pytest.mark.kafka


@dataclass
class Verdict:
    upload_id: str

    def as_dict(self) -> dict[str, Any]:
        return {"upload_id": self.upload_id, "flagged": False, "score": 1.0, "threshold": 0.5,
                "scores": {"e": 1.0}, "caption": "x", "caption_source": "model", "seed": 0,
                "models": {"captioner": "c", "generator": "g", "encoders": ["e"]}}


async def judge(*, upload_id: str, **_: Any) -> Verdict:
    """Stands in for the models, which are not what this test is about."""
    return Verdict(upload_id)


def upload_bytes(upload_id: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buffer, format="PNG")
    image = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    return events.encode(Upload(upload_id=upload_id, image=image).to_dict())


async def produce(bootstrap: str, topic: str, ids: list[str], transactional_id: str | None = None) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", transactional_id=transactional_id)
    await producer.start()
    try:
        for upload_id in ids:
            if transactional_id:
                async with producer.transaction():
                    await producer.send_and_wait(topic, upload_bytes(upload_id), key=upload_id.encode(), partition=0)
            else:
                await producer.send_and_wait(topic, upload_bytes(upload_id), key=upload_id.encode(), partition=0)
    finally:
        await producer.stop()


@pytest.fixture
def settings(kafka_bootstrap: str) -> Settings:
    prefix = f"k{uuid.uuid4().hex[:8]}-"
    return Settings(bootstrap=kafka_bootstrap, topic_prefix=prefix, group_id=f"{prefix}workers",
                    max_in_flight=4, commit_interval_s=0.5)


async def test_probe_tells_transaction_markers_from_records(settings: Settings) -> None:
    await apply_topics(settings.bootstrap, load_specs(), settings.topic_prefix)
    uploads = settings.topic("uploads")
    await produce(settings.bootstrap, uploads, ["a", "b"], transactional_id=f"{settings.group_id}-tx")
    positions = PartitionPositions(settings.bootstrap, settings.group_id)
    try:
        tp = TP(uploads, 0)
        assert await positions.start_of(tp) == 0  # nothing committed: the log's start
        # Each transaction is a record and a commit marker: a at 0, b at 2.
        assert await positions.first_record_from(tp, 1) == 2
        assert await positions.first_record_from(tp, 0) == 0
    finally:
        await positions.close()


async def run_worker_until(
    settings: Settings, done: Any, before: Any, timeout_s: float = 90
) -> tuple[list[dict], WorkerMetrics]:
    handler = UploadHandler(judge, ImagePolicy(), Topics(settings.topic("alerts"), settings.topic("audit"),
                                                         settings.topic("dlq")), worker="w")
    metrics = WorkerMetrics()
    app = build_app(settings, handler, metrics)
    assigned = asyncio.Event()
    app.on_partitions_assigned.connect(lambda *_, **__: assigned.set())  # type: ignore[arg-type]
    await app.start()
    try:
        await asyncio.wait_for(assigned.wait(), 60)
        await before(app)
        return await read_until(settings.bootstrap, settings.topic("audit"), done, timeout_s), metrics
    finally:
        await app.stop()


async def test_worker_rewinds_over_records_its_consumer_skipped(settings: Settings) -> None:
    await apply_topics(settings.bootstrap, load_specs(), settings.topic_prefix)
    uploads = settings.topic("uploads")
    ids = [f"u{i}" for i in range(8)]

    async def skip_ahead_then_produce(app: Any) -> None:
        await app.consumer.seek(TP(uploads, 0), 3)  # what faust's drop leaves: a position past 0..2
        await produce(settings.bootstrap, uploads, ids)

    audit, metrics = await run_worker_until(settings, lambda e: {v["upload_id"] for v in e} >= set(ids),
                                            skip_ahead_then_produce)
    assert sorted(v["upload_id"] for v in audit) == sorted(ids)  # all judged, none twice
    assert metrics.registry.get_sample_value("streamdetect_partition_rewinds_total") == 1


async def test_transaction_markers_are_not_taken_for_skipped_records(settings: Settings) -> None:
    await apply_topics(settings.bootstrap, load_specs(), settings.topic_prefix)
    uploads = settings.topic("uploads")
    ids = ["t0", "t1", "t2"]  # at offsets 0, 2 and 4: a commit marker follows each

    async def produce_in_transactions(app: Any) -> None:
        await produce(settings.bootstrap, uploads, ids, transactional_id=f"{settings.group_id}-tx")

    audit, metrics = await run_worker_until(settings, lambda e: {v["upload_id"] for v in e} >= set(ids),
                                            produce_in_transactions)
    assert sorted(v["upload_id"] for v in audit) == ids
    assert metrics.registry.get_sample_value("streamdetect_partition_rewinds_total") == 0
