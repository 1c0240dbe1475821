"""The detector worker: a faust-streaming application over aiokafka.

Life of an upload: the agent takes it from ``uploads`` (without auto-ack), registers it with
the OffsetTracker and starts a task for it; the task judges it (UploadHandler), publishes the
verdict or dead letter and waits for the broker's acknowledgement (acks=all); then the tracker
acks it to faust, in partition order, and faust commits. At most ``max_in_flight`` uploads are
open at once: past that the agent stops pulling, faust's stream buffer fills and faust pauses
fetching, so a slow model never means unbounded buffering. A crash at any point leaves the
upload uncommitted, and it is judged again after restart (at-least-once; verdicts are keyed by
upload_id so readers can de-duplicate).
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import faust
import structlog
from faust.types import TP

from streamdetect.config import Settings
from streamdetect.events import Source
from streamdetect.stream.handler import Record, UploadHandler
from streamdetect.stream.offsets import OffsetTracker

log = structlog.get_logger(__name__)
PUBLISH_ATTEMPTS = 5


def build_app(settings: Settings, handler: UploadHandler) -> faust.App:
    """The faust app with one agent on the uploads topic."""
    app = faust.App(
        settings.group_id,
        broker=[f"kafka://{host.strip()}" for host in settings.bootstrap.split(",")],
        datadir=str(Path(tempfile.gettempdir()) / f"streamdetect-{settings.group_id}"),
        key_serializer="raw",
        value_serializer="raw",
        topic_allow_declare=False,  # topics are created by `streamdetect topics apply`
        topic_disable_leader=True,
        web_enabled=False,
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
        broker_max_poll_records=settings.max_in_flight,
        stream_buffer_maxsize=settings.max_in_flight,
    )
    tracker = OffsetTracker()
    gate = asyncio.Semaphore(settings.max_in_flight)
    outputs = {name: app.topic(settings.topic(name)) for name in ("audit", "alerts", "dlq")}
    uploads = app.topic(settings.topic("uploads"))
    tasks: set[asyncio.Task[None]] = set()

    async def publish(records: list[Record]) -> None:
        futures = [await outputs_for(r.topic).send(key=r.key, value=r.value) for r in records]
        await asyncio.gather(*futures)

    def outputs_for(topic: str) -> faust.TopicT:
        return next(t for t in outputs.values() if t.get_topic_name() == topic)

    async def process(event: faust.EventT) -> None:
        message = event.message
        source = Source(message.topic, message.partition, message.offset)
        try:
            records = await handler.handle(event.value, source)
            await _with_retries(publish, records, source)
        except Exception as exc:  # noqa: BLE001 - cannot publish: stop without committing
            log.error("worker.publish_failed", source=source.as_dict(), error=str(exc))
            await app.crash(exc)
            return
        finally:
            gate.release()
        tracker.done(message.tp, message.offset)

    @app.agent(uploads)
    async def check(stream: faust.StreamT) -> None:
        async for event in stream.noack().events():
            await gate.acquire()
            tracker.track(event.message.tp, event.message.offset, event.ack)
            task = asyncio.create_task(process(event))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    @app.on_partitions_revoked.connect
    async def on_revoked(app: faust.App, revoked: set[TP], **_: object) -> None:
        tracker.forget(set(revoked))
        log.info("worker.partitions_revoked", partitions=sorted(str(tp) for tp in revoked))

    @app.on_partitions_assigned.connect
    async def on_assigned(app: faust.App, assigned: set[TP], **_: object) -> None:
        log.info("worker.ready", partitions=sorted(f"{tp.topic}/{tp.partition}" for tp in assigned))

    return app


async def _with_retries(publish, records: list[Record], source: Source) -> None:  # type: ignore[no-untyped-def]
    for attempt in range(1, PUBLISH_ATTEMPTS + 1):
        try:
            await publish(records)
            return
        except Exception as exc:  # noqa: BLE001 - transient broker errors are retried
            if attempt == PUBLISH_ATTEMPTS:
                raise
            log.warning("worker.publish_retry", source=source.as_dict(), attempt=attempt, error=str(exc))
            await asyncio.sleep(0.5 * 2**attempt)


def run_worker(settings: Settings, handler: UploadHandler) -> None:
    """Run until SIGINT/SIGTERM; faust's Worker owns the event loop and signal handling."""
    app = build_app(settings, handler)
    worker = faust.Worker(app, loglevel=settings.log_level.upper(), quiet=True)
    worker.execute_from_commandline()
