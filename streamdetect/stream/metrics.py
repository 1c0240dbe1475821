"""The worker's Prometheus metrics and its health state. Stream layer: no torch, no pipeline import.

The pipeline reports each batched call through a plain callback (``observe_batch`` takes any
object with ``stage``, ``size``, ``seconds`` and ``failed``), and queue depths are read at
scrape time from callables, so the engine never imports prometheus_client. One WorkerMetrics
per process (``worker_metrics()``), on its own registry, served by metrics_server.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class BatchReportLike(Protocol):
    stage: str
    size: int
    seconds: float
    failed: int


class RecordLike(Protocol):
    topic: str
    value: bytes


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        ProcessCollector(registry=self.registry)
        r = self.registry
        self.batch_size = Histogram("streamdetect_batch_size", "Items per batched model call.", ["stage"],
                                    buckets=SIZE_BUCKETS, registry=r)
        self.batch_seconds = Histogram("streamdetect_batch_seconds", "Seconds per batched model call.", ["stage"],
                                       buckets=SECONDS_BUCKETS, registry=r)
        self.item_failures = Counter("streamdetect_stage_item_failures", "Items a stage failed on, run alone.",
                                     ["stage"], registry=r)
        self.queue_depth = Gauge("streamdetect_stage_queue_depth", "Items waiting to join a batch.", ["stage"],
                                 registry=r)
        self.in_flight = Gauge("streamdetect_uploads_in_flight", "Uploads consumed and not yet published.",
                               registry=r)
        self.upload_seconds = Histogram("streamdetect_upload_seconds", "Seconds from consuming an upload to its "
                                        "outcome being on the broker.", buckets=SECONDS_BUCKETS, registry=r)
        self.taken = Histogram("streamdetect_taken_batch_uploads", "Uploads the worker took as one unit (judged "
                               "together, acknowledged once).", buckets=SIZE_BUCKETS, registry=r)
        self.verdicts = Counter("streamdetect_verdicts", "Published verdicts by outcome.", ["outcome"], registry=r)
        self.dead_letters = Counter("streamdetect_dead_letters", "Published dead letters by reason.", ["reason"],
                                    registry=r)
        self.retries = Counter("streamdetect_retries", "Fetches and judgements tried again after a transient "
                               "failure.", ["kind"], registry=r)
        self.rewinds = Counter("streamdetect_partition_rewinds", "Partitions sought back over records the "
                               "consumer skipped (around rebalances).", registry=r)
        self.consumer_lag = Gauge("streamdetect_consumer_lag", "Messages on the broker not yet fetched: highwater "
                                  "minus position.", ["topic", "partition"], registry=r)

    def observe_batch(self, report: BatchReportLike) -> None:
        """The pipeline's batch observer."""
        if report.size - report.failed > 0:
            self.batch_size.labels(report.stage).observe(report.size)
            self.batch_seconds.labels(report.stage).observe(report.seconds)
        if report.failed:
            self.item_failures.labels(report.stage).inc(report.failed)

    def watch_queue(self, stage: str, depth: Callable[[], int]) -> None:
        """Read a stage's queue depth at scrape time."""
        self.queue_depth.labels(stage).set_function(depth)

    def count_published(self, records: Iterable[RecordLike], audit: str, alerts: str, dlq: str) -> None:
        """Count one upload's published records: a verdict (flagged when it also went to alerts) or a dead letter."""
        records = list(records)
        topics = {r.topic for r in records}
        if audit in topics:
            self.verdicts.labels("flagged" if alerts in topics else "clean").inc()
        for record in records:
            if record.topic == dlq:
                self.dead_letters.labels(_reason(record.value)).inc()

    def set_lag(self, topic: str, partition: int, lag: int) -> None:
        self.consumer_lag.labels(topic, str(partition)).set(lag)

    def forget_partitions(self, partitions: Iterable[tuple[str, int]]) -> None:
        for topic, partition in partitions:
            try:
                self.consumer_lag.remove(topic, str(partition))
            except KeyError:
                pass


def _reason(value: bytes) -> str:
    try:
        return str(json.loads(value)["reason"])
    except (ValueError, KeyError, TypeError):
        return "unknown"


@dataclass
class Health:
    """Liveness and readiness, written on the event loop, read by the HTTP thread."""

    stale_after_s: float = 30.0
    models_loaded: bool = False
    assigned: bool = False
    partitions: frozenset[str] = frozenset()
    beat: float | None = None  # monotonic time of the event loop's last heartbeat
    broken: str | None = None  # why the worker stopped taking uploads (the models keep failing)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def heartbeat(self) -> None:
        self.beat = time.monotonic()

    def set_assignment(self, partitions: Iterable[str] | None) -> None:
        """None while a rebalance has taken partitions away; a set (maybe empty) once assigned."""
        with self._lock:
            self.assigned = partitions is not None
            self.partitions = frozenset(partitions or ())

    def set_broken(self, why: str) -> None:
        self.broken = why

    def alive(self) -> tuple[bool, str]:
        if self.broken is not None:
            return False, self.broken
        if self.beat is None:
            return True, "starting"
        age = time.monotonic() - self.beat
        if age > self.stale_after_s:
            return False, f"event loop silent for {age:.0f}s (limit {self.stale_after_s:.0f}s)"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        with self._lock:
            if not self.models_loaded:
                return False, "models loading"
            if not self.assigned:
                return False, "waiting for a partition assignment"
            # An empty assignment is still ready: with more workers than partitions, a standby
            # worker that never turned ready would stall a rolling update.
            return True, f"ok, {len(self.partitions)} partitions"


# One of each per process, made on import: both are cheap and only touch their own registry.
_METRICS = WorkerMetrics()
_HEALTH = Health()


def worker_metrics() -> WorkerMetrics:
    """The process's metrics (the pipeline's observer and the worker share them)."""
    return _METRICS


def worker_health() -> Health:
    return _HEALTH
