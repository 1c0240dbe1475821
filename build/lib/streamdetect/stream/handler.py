"""One upload message in, the records to publish out: a verdict (audit, plus alerts when
flagged) or a dead letter. Every failure becomes a dead letter with a reason; nothing raises
out of ``handle`` except cancellation, so the worker keeps running whatever the input.

No Kafka client and no torch here: the judge is any async callable that returns an object
with ``as_dict()`` (the detector's Verdict), which keeps this testable without either.
"""

from __future__ import annotations

import asyncio
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Awaitable, Protocol

import structlog
from PIL import Image

from streamdetect import events
from streamdetect.events import SchemaError, Source, Upload
from streamdetect.images import ImageError, ImagePolicy, load_image

log = structlog.get_logger(__name__)


class Judge(Protocol):
    def __call__(
        self, *, upload_id: str, image: Image.Image, caption: str | None, seed: int, deadline: float | None
    ) -> Awaitable[Any]: ...


@dataclass(frozen=True)
class Record:
    topic: str
    key: bytes
    value: bytes


@dataclass(frozen=True)
class Topics:
    alerts: str
    audit: str
    dlq: str


class UploadHandler:
    def __init__(self, judge: Judge, policy: ImagePolicy, topics: Topics, worker: str, seed: int = 0) -> None:
        self._judge = judge
        self._policy = policy
        self._topics = topics
        self._worker = worker
        self._seed = seed

    async def handle(self, raw: bytes | None, source: Source) -> list[Record]:
        """Judge one message; return what to publish for it."""
        raw = raw or b""
        try:
            upload = Upload.from_bytes(raw)
        except SchemaError as exc:
            return self._dead(raw, "bad_schema", exc.detail, source, events.upload_id_hint(raw))
        if _expired(upload):
            return self._dead(raw, "deadline", f"deadline {upload.deadline} passed before judging", source,
                              upload.upload_id)
        try:
            image = await asyncio.to_thread(load_image, upload.image, self._policy)
        except ImageError as exc:
            return self._dead(raw, exc.reason, exc.detail, source, upload.upload_id)
        try:
            verdict = await self._judge(
                upload_id=upload.upload_id, image=image, caption=upload.caption, seed=self.seed_for(upload),
                deadline=events.parse_time(upload.deadline).timestamp() if upload.deadline else None,
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a model failure dead-letters this upload only
            # The pipeline marks failures that are not model errors (an expired deadline) itself.
            reason = getattr(exc, "dead_letter_reason", "model_error")
            log.warning("upload.not_judged", upload_id=upload.upload_id, reason=reason, error=str(exc))
            return self._dead(raw, reason, str(exc), source, upload.upload_id)
        return self._verdict_records(verdict.as_dict(), upload, source)

    def seed_for(self, upload: Upload) -> int:
        """Deterministic per upload, so a replayed upload regenerates the same image."""
        return (zlib.crc32(upload.upload_id.encode()) + self._seed) % 2**31

    def _verdict_records(self, verdict: dict[str, Any], upload: Upload, source: Source) -> list[Record]:
        event = {
            **verdict,
            "schema_version": events.SCHEMA_VERSION,
            "submitted_at": upload.submitted_at,
            "decided_at": events.now_iso(),
            "worker": self._worker,
            "source": source.as_dict(),
        }
        events.validate("verdict", event)
        key, value = upload.upload_id.encode(), events.encode(event)
        records = [Record(self._topics.audit, key, value)]
        if event["flagged"]:
            records.append(Record(self._topics.alerts, key, value))
        log.info("upload.judged", upload_id=upload.upload_id, flagged=event["flagged"], score=round(event["score"], 4))
        return records

    def _dead(self, raw: bytes, reason: str, detail: str, source: Source, upload_id: str | None) -> list[Record]:
        log.warning("upload.dead_lettered", upload_id=upload_id, reason=reason, detail=detail)
        event = events.dead_letter(raw, reason, detail, source, self._worker, upload_id)
        key = (upload_id or f"{source.topic}/{source.partition}/{source.offset}").encode()
        return [Record(self._topics.dlq, key, events.encode(event))]


def _expired(upload: Upload) -> bool:
    if not upload.deadline:
        return False
    return events.parse_time(upload.deadline) < datetime.now(timezone.utc)
