"""The console's side of Kafka: one group-less reader of audit, alerts, labels and claims from a
start time (so it never moves any group's offsets and any number of consoles can run), and one
producer of claims and decisions. Every event read goes into the ReviewState in log order;
a publish waits for the broker's ack and then until the reader has seen the event come back,
so what a moderator is told ("claimed", "decided") is what every console reads from the log.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streamdetect import events
from streamdetect.console.state import ReviewState

log = structlog.get_logger(__name__)
SEEN_TIMEOUT_S = 10.0  # how long a publish waits to read its own event back


@dataclass(frozen=True)
class FeedTopics:
    audit: str
    alerts: str
    labels: str
    claims: str


class Feed:
    def __init__(self, bootstrap: str, topics: FeedTopics, state: ReviewState, since: datetime,
                 on_change: Callable[[str, Any], None] = lambda kind, data: None) -> None:
        self._bootstrap, self._topics, self.state, self._since = bootstrap, topics, state, since
        self._on_change = on_change
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None
        self._waiting: dict[str, asyncio.Future[None]] = {}  # event ids this console awaits reading back
        self.caught_up = asyncio.Event()  # set once everything before the start was read

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(bootstrap_servers=self._bootstrap, acks="all", enable_idempotence=True)
        await self._producer.start()
        self._consumer = AIOKafkaConsumer(bootstrap_servers=self._bootstrap, group_id=None,
                                          enable_auto_commit=False, auto_offset_reset="earliest")
        await self._consumer.start()
        partitions = await self._assign()
        ends = await self._consumer.end_offsets(partitions)
        await self._seek_since(partitions, ends)
        self._task = asyncio.create_task(self._read(ends), name="console-feed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for client in (self._consumer, self._producer):
            if client is not None:
                await client.stop()

    async def publish(self, kind: str, event: dict[str, Any]) -> None:
        """Publish a claim or a label (schema-checked), keyed by upload_id, and return once this
        console has read it back, so the state already includes it."""
        assert self._producer is not None, "start() first"
        events.validate(kind, event)
        marker = event.setdefault("console", self.state.console) if kind == "claim" else None
        token = f"{event['upload_id']}|{event.get('claimed_at') or event.get('decided_at')}|{marker or ''}"
        seen = asyncio.get_running_loop().create_future()
        self._waiting[token] = seen
        topic = self._topics.claims if kind == "claim" else self._topics.labels
        try:
            await self._producer.send_and_wait(topic, events.encode(event), key=event["upload_id"].encode())
            await asyncio.wait_for(seen, SEEN_TIMEOUT_S)
        finally:
            self._waiting.pop(token, None)

    async def _assign(self) -> list[Any]:
        from aiokafka import TopicPartition

        assert self._consumer is not None
        names = [self._topics.audit, self._topics.alerts, self._topics.labels, self._topics.claims]
        partitions = []
        for name in names:
            found = self._consumer.partitions_for_topic(name) or await self._partitions(name)
            partitions += [TopicPartition(name, p) for p in sorted(found)]
        self._consumer.assign(partitions)
        return partitions

    async def _partitions(self, topic: str) -> set[int]:
        assert self._consumer is not None
        for _ in range(20):  # metadata for a just-created topic takes a moment
            await self._consumer._client.force_metadata_update()  # noqa: SLF001 - aiokafka has no public call
            found = self._consumer.partitions_for_topic(topic)
            if found:
                return found
            await asyncio.sleep(0.5)
        raise LookupError(f"topic {topic!r} does not exist on {self._bootstrap}; run `streamdetect topics apply`")

    async def _seek_since(self, partitions: list[Any], ends: dict[Any, int]) -> None:
        assert self._consumer is not None
        found = await self._consumer.offsets_for_times({tp: int(self._since.timestamp() * 1000) for tp in partitions})
        for tp in partitions:
            self._consumer.seek(tp, found[tp].offset if found.get(tp) else ends[tp])

    async def _read(self, ends: dict[Any, int]) -> None:
        assert self._consumer is not None
        behind = {tp for tp, end in ends.items() if await self._consumer.position(tp) < end}
        if not behind:
            self.caught_up.set()
        while True:
            batch = await self._consumer.getmany(timeout_ms=500)
            for tp, records in batch.items():
                for record in records:
                    self._take(tp.topic, record.value)
                    if record.offset + 1 >= ends[tp]:
                        behind.discard(tp)
            if behind and not self.caught_up.is_set():
                behind = {tp for tp in behind if await self._consumer.position(tp) < ends[tp]}
            if not behind:
                self.caught_up.set()

    def _take(self, topic: str, value: bytes | None) -> None:
        """One record into the state; anything unreadable is logged and skipped, never fatal."""
        try:
            event = json.loads(value or b"")
            if not isinstance(event, dict):
                raise ValueError("not a JSON object")
            self._apply(topic, event)
        except Exception as exc:  # noqa: BLE001 - a bad record on a topic must not stop the console
            log.warning("console.bad_record", topic=topic, error=f"{type(exc).__name__}: {str(exc)[:200]}")

    def _apply(self, topic: str, event: dict[str, Any]) -> None:
        if topic in (self._topics.audit, self._topics.alerts):
            if self.state.add_verdict(event):
                self._on_change("alert", event["upload_id"])
            else:
                self._on_change("verdict", None)
            return
        if topic == self._topics.labels:
            events.validate("label", event)
            self.state.add_label(event)
            token = f"{event['upload_id']}|{event['decided_at']}|"
        else:
            events.validate("claim", event)
            self.state.add_claim(event)
            token = f"{event['upload_id']}|{event['claimed_at']}|{event['console']}"
        self._on_change("alert", event["upload_id"])
        waiter = self._waiting.get(token)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


def new_console_id() -> str:
    return f"console-{uuid.uuid4().hex[:12]}"


def claim_event(state: ReviewState, upload_id: str, moderator: str, timeout_s: float,
                released: bool = False) -> dict[str, Any]:
    now = datetime.now(timezone.utc)
    return {"schema_version": events.SCHEMA_VERSIONS["claim"], "upload_id": upload_id, "moderator": moderator,
            "console": state.console, "claimed_at": events.format_time(now),
            "expires_at": events.format_time(now + timedelta(seconds=0 if released else timeout_s)),
            **({"released": True} if released else {})}


def label_event(verdict: dict[str, Any], decision: str, moderator: str, note: str, console: str) -> dict[str, Any]:
    snapshot = {k: verdict[k] for k in ("score", "threshold", "flagged", "models", "decided_at") if k in verdict}
    if "stochastic" in verdict:
        snapshot["stochastic"] = verdict["stochastic"]
    snapshot["schema_version"] = verdict.get("schema_version", 1)
    return {"schema_version": events.SCHEMA_VERSIONS["label"], "upload_id": verdict["upload_id"],
            "decision": decision, "moderator": moderator, "decided_at": events.now_iso(), "console": console,
            **({"note": note} if note else {}), "verdict": snapshot}
