"""The detector worker: a faust-streaming application over aiokafka.

Life of an upload: the agent takes it from ``uploads`` (without auto-ack), admits it only if it
is its partition's next offset (admission.py: faust can skip records around a rebalance),
registers it with the OffsetTracker and takes it into the current batch. A batch is what the
polls brought (everything faust has buffered, at most ``take_batch``): one task judges its
uploads together (UploadHandler; the pipeline's stages micro-batch them), sends each upload's
verdict or dead letter as soon as it is judged, waits once for all the broker's
acknowledgements (acks=all), and then the tracker acks them to faust, in partition order, and
faust commits. At most ``max_in_flight`` uploads are open at once: past that the agent stops
pulling, faust's stream buffer fills and faust pauses fetching, so a slow model never means
unbounded buffering. A crash at any point leaves the upload uncommitted, and it is judged
again after restart (at-least-once; verdicts are keyed by upload_id so readers can
de-duplicate).

No max-poll-interval evictions: model calls run on the device thread, so the event loop (and
faust's fetcher on it) never blocks on a batch. The fetcher only waits, on a full stream
buffer, until one in-flight upload finishes: at most a few batches, far below
``max_poll_interval_s`` (default 1000 s, faust's own). Set it above the slowest upload on slow
hardware (the paper profile is about 15 s per image on an A6000).
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from pathlib import Path

import faust
import structlog
from faust.types import TP

from streamdetect.events.topic_specs import MAX_MESSAGE_BYTES
from streamdetect.logs import stdlib_config
from streamdetect.settings import Settings
from streamdetect.events import Source
from streamdetect.stream.handler import Record, UploadHandler
from streamdetect.stream.metrics import Health, WorkerMetrics, worker_health, worker_metrics
from streamdetect.stream.metrics_server import start_metrics_server
from streamdetect.stream.admin import require_topics
from streamdetect.stream.admission import Admissions
from streamdetect.stream.offsets import OffsetTracker
from streamdetect.stream.positions import PartitionPositions

log = structlog.get_logger(__name__)
PUBLISH_ATTEMPTS = 5
LAG_INTERVAL_S = 2.0


def build_app(
    settings: Settings, handler: UploadHandler, metrics: WorkerMetrics | None = None, health: Health | None = None
) -> faust.App:
    """The faust app with one agent on the uploads topic."""
    metrics = metrics or WorkerMetrics()
    health = health or Health()
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
        # faust's default request limit is 1,000,000 bytes; the topics take 16 MiB (docs/architecture.md#client-defaults)
        producer_max_request_size=MAX_MESSAGE_BYTES,
        consumer_auto_offset_reset="earliest",
        broker_max_poll_records=settings.max_in_flight,
        stream_buffer_maxsize=settings.max_in_flight,
        broker_commit_interval=settings.commit_interval_s,
        broker_max_poll_interval=settings.max_poll_interval_s,
        # faust waits 60 s for a silent member by default: a killed worker's partitions sat idle
        # that long. Static membership (group_instance_id) lets a restarted pod take them back at once.
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_interval_s,
        consumer_group_instance_id=settings.group_instance_id,
    )
    tracker = OffsetTracker()
    positions = PartitionPositions(settings.bootstrap, settings.group_id)
    admissions = Admissions(tracker, positions, lambda tp, offset: app.consumer.seek(tp, offset), metrics.rewinds.inc)
    gate = asyncio.Semaphore(settings.max_in_flight)
    outputs = {name: settings.topic(name) for name in ("audit", "alerts", "dlq")}
    uploads = app.topic(settings.topic("uploads"))
    tasks: set[asyncio.Task[None]] = set()

    async def send(records: list[Record]) -> list[asyncio.Future]:
        """Send through faust's producer itself (acks=all, the topics' request size), not through
        faust's Topic.send, whose channel and callback machinery cost more than the send, per
        record; the futures resolve on the broker's acknowledgement."""
        producer = await app.maybe_start_producer()
        return [await producer.send(r.topic, r.key, r.value, None, None, list(r.headers) or None) for r in records]

    async def publish(records: list[Record]) -> None:
        await asyncio.gather(*await send(records))

    async def process(events: list[faust.EventT]) -> None:
        """Judge a taken batch: each upload's records are sent as soon as it is judged (a slow
        reference delays nobody's alert), the acknowledgements are awaited once for the batch,
        and then its offsets are released together."""
        started, sent, failed = time.monotonic(), [], []

        async def judge(event: faust.EventT) -> list[Record]:
            message = event.message
            records = await handler.handle(event.value, Source(message.topic, message.partition, message.offset),
                                           message.headers)
            try:
                sent.extend(await send(records))
            except Exception as exc:  # noqa: BLE001 - the batch is published again below, with retries
                failed.append(exc)
            return records

        try:
            judged = await asyncio.gather(*(judge(event) for event in events))
            await _acknowledged(sent, failed, publish, [r for records in judged for r in records],
                                _source(events[0]))
            for records in judged:
                metrics.count_published(records, **outputs)
                metrics.upload_seconds.observe(time.monotonic() - started)
        except Exception as exc:  # noqa: BLE001 - cannot publish: stop without committing
            log.error("worker.publish_failed", source=_source(events[0]).as_dict(), uploads=len(events),
                      error=str(exc))
            await app.crash(exc)
            return
        finally:
            for _ in events:
                gate.release()
            metrics.in_flight.dec(len(events))
        for event in events:
            tracker.done(event.message.tp, event.message.offset)

    taken: list[faust.EventT] = []
    take_size = min(settings.take_batch or settings.max_in_flight, settings.max_in_flight)

    def start_taken() -> None:
        """Hand what was taken so far to its own task: when the batch is full, when nothing more
        is buffered (what the polls brought is all taken), or before the agent waits for room in
        flight; a batch is never held back waiting for more."""
        if not taken:
            return
        metrics.taken.observe(len(taken))
        task = asyncio.create_task(process(taken.copy()))
        taken.clear()
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    @app.agent(uploads)
    async def check(stream: faust.StreamT) -> None:
        buffered = stream.channel.queue  # the records faust has fetched and the agent has not taken
        async for event in stream.noack().events():
            if health.broken is not None:  # the models keep failing: take nothing more, commit nothing more
                start_taken()
                log.error("worker.out_of_service", why=health.broken, action="restart the worker")
                await asyncio.Event().wait()  # until SIGTERM or the orchestrator's restart; nothing is acked
            try:
                admitted = await admissions.admit(event.message.tp, event.message.offset)
            except Exception as exc:  # noqa: BLE001 - cannot tell where the partition resumes: stop uncommitted
                log.error("worker.admission_failed", partition=str(event.message.tp), error=str(exc))
                await app.crash(exc)
                return
            if not admitted:  # never acked: faust forgets it, and the partition's replay brings it back
                if buffered.empty():
                    start_taken()
                continue
            if gate.locked():
                start_taken()  # what is taken goes on now, so that it can free room
            await gate.acquire()
            metrics.in_flight.inc()
            tracker.track(event.message.tp, event.message.offset, event.ack)
            taken.append(event)
            if len(taken) >= take_size or buffered.empty():
                start_taken()

    @app.on_partitions_revoked.connect
    async def on_revoked(app: faust.App, revoked: set[TP], **_: object) -> None:
        admissions.reset(revoked)
        health.set_assignment(None)
        metrics.forget_partitions((tp.topic, tp.partition) for tp in revoked)
        log.info("worker.partitions_revoked", partitions=sorted(str(tp) for tp in revoked))

    @app.on_partitions_assigned.connect
    async def on_assigned(app: faust.App, assigned: set[TP], **_: object) -> None:
        admissions.reset(assigned)  # state is per assignment: a partition that comes back starts afresh
        names = sorted(f"{tp.topic}/{tp.partition}" for tp in assigned)
        health.set_assignment(names)
        log.info("worker.ready", partitions=names)

    @app.on_before_shutdown.connect
    async def close_positions(app: faust.App, **_: object) -> None:
        await positions.close()

    @app.timer(interval=LAG_INTERVAL_S)
    async def watch() -> None:
        health.heartbeat()
        await _update_lag(app, metrics, uploads.get_topic_name())

    return app


async def _update_lag(app: faust.App, metrics: WorkerMetrics, topic: str) -> None:
    """Lag per assigned uploads partition: the broker's highwater minus our fetch position."""
    consumer = app.consumer
    try:
        for tp in consumer.assignment():
            if tp.topic != topic:
                continue
            highwater, position = consumer.highwater(tp), await consumer.position(tp)
            if highwater is not None and position is not None:
                metrics.set_lag(tp.topic, tp.partition, max(0, highwater - position))
    except Exception as exc:  # noqa: BLE001 - not started or mid-rebalance: the next tick tries again
        log.debug("worker.lag_unavailable", error=str(exc))


async def check_topics(settings: Settings) -> None:
    """The worker's four topics exist, or MissingTopics says which do not and how to make them."""
    await require_topics(settings.bootstrap, [settings.topic(n) for n in ("uploads", "audit", "alerts", "dlq")],
                         settings.topic_prefix)


def _source(event: faust.EventT) -> Source:
    return Source(event.message.topic, event.message.partition, event.message.offset)


async def _acknowledged(sent: list[asyncio.Future], failed: list[BaseException], publish,  # type: ignore[no-untyped-def]
                        records: list[Record], source: Source) -> None:
    """Wait once for every acknowledgement of a batch's sends; if any send failed, publish the
    whole batch again with retries (records are keyed by upload_id: a repeat is a duplicate that
    readers de-duplicate, never a loss)."""
    errors = failed + [r for r in await asyncio.gather(*sent, return_exceptions=True) if isinstance(r, BaseException)]
    if errors:
        log.warning("worker.publish_retry", source=source.as_dict(), attempt=0, records=len(records),
                    error=str(errors[0]))
        await _with_retries(publish, records, source)


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
    """Run until SIGINT/SIGTERM; faust's Worker owns the event loop and signal handling.
    The handler comes with its models loaded, so readiness then waits only for partitions."""
    metrics, health = worker_metrics(), worker_health()
    health.models_loaded = True
    server = start_metrics_server(metrics, health, settings.metrics_host, settings.metrics_port)
    app = build_app(settings, handler, metrics, health)
    level = getattr(logging, settings.log_level.upper())
    worker = faust.Worker(app, loglevel=settings.log_level.upper(), quiet=True,
                          logging_config=stdlib_config(level, settings.log_json))
    # faust's progress spinner, at log levels of warning and above, sets the root logger to DEBUG:
    # every debug line of aiokafka, faust and Pillow was then made (and dropped), per message.
    worker.spinner = None
    try:
        worker.execute_from_commandline()
    finally:
        if server is not None:
            server.stop()
