"""The user's side of the topics: submit uploads, follow alerts, replay the audit log.

Plain aiokafka clients; readers assign partitions themselves (no consumer group), so reading
never disturbs the workers' offsets and any number of people can follow at once.
"""

from __future__ import annotations

import asyncio
import base64
import json
import mimetypes
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import AsyncIterator

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from streamdetect.events.topic_specs import MAX_MESSAGE_BYTES
from streamdetect import events
from streamdetect.events import Upload

ASSIGNMENT_ATTEMPTS = 20
REFERENCE_SCHEMES = ("s3://", "https://", "http://", "file://", "data:", "base64:")


def reference_for(target: str) -> str:
    """A URI is passed through; a local file becomes an inline data URI (workers need no shared disk)."""
    if target.startswith(REFERENCE_SCHEMES):
        return target
    path = Path(target)
    if not path.is_file():
        raise FileNotFoundError(f"{target} is neither a readable file nor a URI ({', '.join(REFERENCE_SCHEMES)})")
    data = path.read_bytes()
    mime = sniff_image_type(data) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


# Leading bytes of the formats the worker decodes: a file is typed by what it is, not by its name.
_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"), (b"GIF87a", "image/gif"),
               (b"GIF89a", "image/gif"), (b"BM", "image/bmp"), (b"II*\x00", "image/tiff"), (b"MM\x00*", "image/tiff"))


def sniff_image_type(data: bytes) -> str | None:
    """The image MIME type ``data`` starts like, or None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[4:8] == b"ftyp" and data[8:12] in (b"avif", b"avis"):
        return "image/avif"
    return next((mime for magic, mime in _SIGNATURES if data.startswith(magic)), None)


@dataclass(frozen=True)
class Submitted:
    upload_id: str
    target: str
    partition: int
    offset: int


async def submit(
    bootstrap: str, topic: str, targets: list[str], caption: str | None = None, id_prefix: str = ""
) -> list[Submitted]:
    """Publish one upload per target and wait until the broker has them all (acks=all)."""
    uploads = [
        Upload(upload_id=f"{id_prefix}{uuid.uuid4()}", image=reference_for(t), caption=caption,
               submitted_at=events.now_iso())
        for t in targets
    ]
    return await publish_uploads(bootstrap, topic, uploads, targets)


async def publish_uploads(bootstrap: str, topic: str, uploads: list[Upload], labels: list[str]) -> list[Submitted]:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, max_request_size=MAX_MESSAGE_BYTES
    )
    await producer.start()
    try:
        futures = []
        for upload in uploads:
            event = upload.to_dict()
            events.validate("upload", event)
            futures.append(await producer.send(topic, events.encode(event), key=upload.upload_id.encode()))
        metadata = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return [Submitted(u.upload_id, label, m.partition, m.offset) for u, label, m in zip(uploads, labels, metadata)]


async def follow(
    bootstrap: str, topic: str, from_beginning: bool = False, idle_timeout_s: float | None = None
) -> AsyncIterator[dict]:
    """Yield each event on ``topic`` as it arrives; stop after ``idle_timeout_s`` without one."""
    consumer = await _reader(bootstrap, topic, "earliest" if from_beginning else "latest")
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=1000 if idle_timeout_s is None else int(idle_timeout_s * 1000))
            if not batch and idle_timeout_s is not None:
                return
            for records in batch.values():
                for record in records:
                    yield _decode(record.value)
    finally:
        await consumer.stop()


async def replay(
    bootstrap: str, topic: str, since: datetime | None = None, until: datetime | None = None
) -> AsyncIterator[dict]:
    """Yield the events in ``topic`` written in [since, until), up to the end as it was at start."""
    async for record in records_between(bootstrap, topic, since, until):
        yield _decode(record.value)


async def records_between(
    bootstrap: str, topic: str, since: datetime | None = None, until: datetime | None = None
) -> AsyncIterator[ConsumerRecord]:
    """The raw records (key, value, headers, timestamp) of ``topic`` written in [since, until),
    up to the end as it was at start, oldest first per partition."""
    consumer = await _reader(bootstrap, topic, "earliest")
    try:
        partitions = sorted(consumer.assignment())
        ends = await consumer.end_offsets(partitions)
        if since is not None:
            await _seek_since(consumer, partitions, since, ends)
        until_ms = int(until.timestamp() * 1000) if until else None
        remaining = {tp for tp in partitions if await consumer.position(tp) < ends[tp]}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=1000)
            for tp, records in batch.items():
                for record in records:
                    if record.offset < ends[tp] and (until_ms is None or record.timestamp < until_ms):
                        yield record
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()


async def _reader(bootstrap: str, topic: str, reset: str) -> AIOKafkaConsumer:
    """A group-less consumer of every partition of ``topic``, started and assigned."""
    # Without a group, aiokafka assigns all partitions of a subscribed topic itself, and
    # auto_offset_reset picks the start, since nothing is ever committed.
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False, auto_offset_reset=reset)
    await consumer.start()
    for _ in range(ASSIGNMENT_ATTEMPTS):  # a just-created topic takes a moment to show in metadata
        if consumer.assignment():
            return consumer
        await asyncio.sleep(0.5)
    await consumer.stop()
    raise LookupError(f"topic {topic!r} does not exist on {bootstrap}; run `streamdetect topics apply`")


async def _seek_since(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition], since: datetime, ends: dict
) -> None:
    found = await consumer.offsets_for_times({tp: int(since.timestamp() * 1000) for tp in partitions})
    for tp in partitions:
        consumer.seek(tp, found[tp].offset if found.get(tp) else ends[tp])


def _decode(value: bytes) -> dict:
    try:
        return json.loads(value)
    except (ValueError, TypeError):
        return {"undecodable": base64.b64encode(value or b"").decode()}
