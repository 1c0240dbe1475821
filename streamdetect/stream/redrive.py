"""Redrive: send dead letters back to ``uploads`` once what made them fail is fixed (an S3 object
restored, a model repaired, a reference allowed).

The dead letter's own payload is sent again, keyed by its upload id, with a header counting the
rounds it has been redriven; the worker copies that count into any dead letter it makes of it
again, so an upload that keeps failing stops after ``max_rounds`` instead of circling for ever.
Only each upload's latest dead letter counts. A dead letter whose payload was cut
(``payload_truncated``) cannot be redriven and is reported. Redrive does not read the audit log:
an upload judged since its dead letter is judged again (verdicts are keyed by upload_id).
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from aiokafka import AIOKafkaProducer

from streamdetect.events.topic_specs import MAX_MESSAGE_BYTES
from streamdetect.stream.clients import records_between
from streamdetect.stream.handler import REDRIVE_HEADER, redrive_count


@dataclass(frozen=True)
class Selection:
    """Which dead letters to send back; an empty set means any."""

    reasons: frozenset[str] = frozenset()
    upload_ids: frozenset[str] = frozenset()
    since: datetime | None = None
    until: datetime | None = None
    max_rounds: int = 3


@dataclass(frozen=True)
class Candidate:
    upload_id: str | None
    reason: str
    payload: bytes
    rounds: int  # how often it has been redriven already


@dataclass
class Plan:
    chosen: list[Candidate] = field(default_factory=list)
    by_reason: Counter[str] = field(default_factory=Counter)  # of the chosen
    skipped: Counter[str] = field(default_factory=Counter)  # why others stay: truncated, max_rounds, unreadable

    def histogram(self) -> str:
        lines = [f"{reason:16} {count:7d}" for reason, count in sorted(self.by_reason.items())]
        lines.append(f"{'to redrive':16} {len(self.chosen):7d}")
        lines += [f"skipped: {why:7} {count:7d}" for why, count in sorted(self.skipped.items())]
        return "\n".join(lines)


async def plan_redrive(bootstrap: str, dlq_topic: str, selection: Selection) -> Plan:
    """Read the dead-letter topic to its current end and choose what ``selection`` asks for: the
    latest dead letter of each upload, so one that failed again after a redrive counts its rounds."""
    plan, latest = Plan(), {}
    async for record in records_between(bootstrap, dlq_topic, selection.since, selection.until):
        try:
            letter = json.loads(record.value)
            # Without an id, the payload's hash names the upload: a redriven one that fails again
            # replaces its older letter instead of piling up beside it.
            key = letter.get("upload_id") or letter.get("payload_sha256") or f"{record.partition}/{record.offset}"
            latest.pop(key, None)  # re-insert: the dict keeps the order of each upload's latest letter
            latest[key] = (letter, redrive_count(record.headers))
        except (ValueError, TypeError, AttributeError):
            plan.skipped["unreadable"] += 1
    for letter, rounds in latest.values():
        _consider(letter, rounds, selection, plan)
    return plan


def _consider(letter: dict[str, Any], rounds: int, selection: Selection, plan: Plan) -> None:
    reason, upload_id = str(letter.get("reason")), letter.get("upload_id")
    if (selection.reasons and reason not in selection.reasons) or \
            (selection.upload_ids and upload_id not in selection.upload_ids):
        return
    if letter.get("payload_truncated"):
        plan.skipped["truncated"] += 1
    elif rounds >= selection.max_rounds:
        plan.skipped["max_rounds"] += 1
    else:
        payload = str(letter.get("payload", ""))
        raw = base64.b64decode(payload) if letter.get("payload_encoding") == "base64" else payload.encode()
        plan.chosen.append(Candidate(upload_id, reason, raw, rounds))
        plan.by_reason[reason] += 1


async def send_back(bootstrap: str, uploads_topic: str, plan: Plan) -> int:
    """Publish every chosen payload to ``uploads`` (acks=all) with its round count raised by one."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                                max_request_size=MAX_MESSAGE_BYTES)
    await producer.start()
    try:
        futures = [await producer.send(uploads_topic, c.payload, key=c.upload_id.encode() if c.upload_id else None,
                                       headers=[(REDRIVE_HEADER, str(c.rounds + 1).encode())]) for c in plan.chosen]
        for future in futures:
            await future
    finally:
        await producer.stop()
    return len(plan.chosen)
