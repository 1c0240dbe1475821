"""``stream_ceiling`` of `streamdetect bench`: the worker's own per-upload work in the plainest
aiokafka loop, batched per poll: getmany -> process the batch -> send every record and wait for
the acks once -> commit. It is what the stream layer could reach with the same work and the
same poll size (``max_in_flight``), so stream_null / stream_ceiling says how much the worker's
machinery (faust, hand-offs, per-upload acks) costs on top of the work itself.

The work is the real code, not a copy: the upload is parsed and schema-checked
(``parse_upload``), its image fetched, decoded and seeded (``UploadHandler.load``), judged by
the same null models in one call per stage for the whole batch, and the verdict gets its
evidence, is built, validated and encoded by ``UploadHandler.verdict_records``. An upload off
the happy path goes through the real ``UploadHandler.handle``, so nothing is ever dropped.
No delivery guarantees beyond the commit after the acks: it is a measuring stick, not a worker.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord
from PIL import Image

from streamdetect.detector import PairToScore, Verdict, decide, score_batch
from streamdetect.events import Source, Upload, parse_upload
from streamdetect.events.topic_specs import MAX_MESSAGE_BYTES
from streamdetect.bench.procs import start_loop
from streamdetect.settings import Settings
from streamdetect.stream.handler import Record, UploadHandler


@dataclass(frozen=True)
class _Loaded:
    upload: Upload
    source: Source
    image: Image.Image
    seed: int
    described: dict[str, Any]


def judge_batch(models: Any, threshold: float, loaded: list[_Loaded]) -> list[Verdict]:
    """What the pipeline does to a batch, with one call per stage and no hand-offs."""
    images = [item.image for item in loaded]
    captions = models.captioner.caption(images)
    regenerated = models.generator.generate(captions, [item.seed for item in loaded])
    scores = score_batch(models.encoders, [PairToScore(i, r) for i, r in zip(images, regenerated)])
    spec = {"captioner": models.captioner.spec, "generator": models.generator.spec,
            "encoders": [e.spec for e in models.encoders]}
    verdicts = []
    for item, caption, picture, per_encoder in zip(loaded, captions, regenerated, scores):
        score, flagged = decide(per_encoder, threshold)
        verdicts.append(Verdict(upload_id=item.upload.upload_id, flagged=flagged, score=score, threshold=threshold,
                                scores=per_encoder, caption=caption, caption_source="model", seed=item.seed,
                                models=spec, regenerated=picture))
    return verdicts


def _load(handler: UploadHandler, record: ConsumerRecord) -> _Loaded | None:
    """The upload parsed, checked and its image loaded; None when it is off the happy path."""
    try:
        upload = parse_upload(record.value or b"")
        if upload.caption or upload.expired(datetime.now(timezone.utc)):
            return None
        image, seed, described = handler.load(upload.image)
    except Exception:  # noqa: BLE001 - bad uploads and images: the real handler dead-letters them
        return None
    return _Loaded(upload, Source(record.topic, record.partition, record.offset), image, seed, described)


async def process(handler: UploadHandler, models: Any, threshold: float,
                  records: list[ConsumerRecord]) -> list[Record]:
    loaded = [(record, _load(handler, record)) for record in records]
    happy = [item for _, item in loaded if item is not None]
    out: list[Record] = []
    for item, verdict in zip(happy, judge_batch(models, threshold, happy) if happy else []):
        out += handler.verdict_records(item.upload, item.source, verdict, item.image, item.described)
    for record, item in loaded:
        if item is None:
            out += await handler.handle(record.value, Source(record.topic, record.partition, record.offset),
                                        record.headers)
    return out


async def ceiling_loop(settings: Settings, handler: UploadHandler, models: Any, threshold: float) -> None:
    consumer = AIOKafkaConsumer(settings.topic("uploads"), bootstrap_servers=settings.bootstrap,
                                group_id=settings.group_id, enable_auto_commit=False, auto_offset_reset="earliest",
                                max_poll_records=settings.max_in_flight)
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, acks="all", max_request_size=MAX_MESSAGE_BYTES)
    stop = await start_loop(consumer, producer)
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200, max_records=settings.max_in_flight)
            records = [r for partition in batch.values() for r in partition]
            if not records:
                continue
            out = await process(handler, models, threshold, records)
            futures = [await producer.send(r.topic, r.value, key=r.key, headers=list(r.headers) or None) for r in out]
            await asyncio.gather(*futures)
            await consumer.commit()
    finally:
        await producer.stop()
        await consumer.stop()


def run_ceiling() -> None:
    """Settings from the environment, as for the worker; the null models, as for stream_null."""
    from streamdetect import logs
    from streamdetect.app.detector_config import resolve_threshold
    from streamdetect.app.wiring import build_handler
    from streamdetect.pipeline.null_models import NullModels

    settings = Settings.load()
    logs.configure(settings.log_level, settings.log_json)
    models = NullModels()
    asyncio.run(ceiling_loop(settings, build_handler(settings, models), models, resolve_threshold(settings)))
