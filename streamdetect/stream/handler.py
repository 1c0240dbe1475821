"""One upload message in, the records to publish out: a verdict (audit, plus alerts when
flagged) or a dead letter. Every failure becomes a dead letter with a reason; nothing raises
out of ``handle`` except cancellation, so the worker keeps running whatever the input.

No Kafka client and no torch here: the judge is any async callable that returns an object
with ``as_dict()`` (the detector's Verdict), which keeps this testable without either.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import cached_property
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, Protocol

import structlog
from PIL import Image

from streamdetect import __version__
from streamdetect.events import (NotAVerdict, Source, Upload, UploadError, VerdictEvent, cap_text, check_finite,
                                 dead_letter, encode, image_description, parse_upload)
from streamdetect.events.codec import finite
from streamdetect.events.dead_letter import PAYLOAD_MAX_BYTES
from streamdetect.events.verdict import INLINE_SCHEMES
from streamdetect.evidence import EvidenceError, EvidenceStore, png_bytes
from streamdetect.evidence.store import describe
from streamdetect.images import ImageError, ImagePolicy, fetch_image
from streamdetect.stream.retries import ModelBreaker, Retries

log = structlog.get_logger(__name__)
REDRIVE_HEADER = "streamdetect.redrive.count"  # rounds an upload was redriven (stream/redrive.py)
MAX_KEY_CHARS = 256  # the upload schema's limit on upload_id
# Far under the producer's 16 MiB request limit: a dead letter must always be publishable, or
# the worker would stop on it after every restart.
MAX_DEAD_LETTER_BYTES = 4 * 1024 * 1024
# Work on a picture this small (decoding it, its evidence PNGs, the verdict) costs less than
# handing it to a thread and back, which under the GIL waited tens of milliseconds per hand-off
# under load: it runs on the event loop, well under a millisecond each (docs/architecture.md#small-work).
SMALL_WORK_PIXELS = 64 * 64
SMALL_INLINE_CHARS = 64 * 1024  # an inline reference longer than this is never decoded on the loop


class Judge(Protocol):
    def __call__(
        self, *, upload_id: str, image: Image.Image, caption: str | None, seed: int, deadline: float | None
    ) -> Awaitable[Any]: ...


@dataclass(frozen=True)
class Record:
    topic: str
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True)
class Evidence:
    """Where a verdict's images go: ``store`` (None: nowhere, only their hashes are recorded),
    for flagged verdicts only or, with ``of_all``, for every verdict."""

    store: EvidenceStore | None = None
    of_all: bool = False


@dataclass(frozen=True)
class Topics:
    alerts: str
    audit: str
    dlq: str


class UploadHandler:
    def __init__(self, judge: Judge, policy: ImagePolicy, topics: Topics, worker: str, seed: int = 0,
                 threshold_source: str = "setting", dead_letter_payload_max_bytes: int = PAYLOAD_MAX_BYTES,
                 retries: Retries = Retries(), fetch_threads: int = 8,
                 on_retry: Callable[[str], None] = lambda kind: None,
                 on_models_failing: Callable[[int], None] = lambda n: None, seed_key: bytes = b"",
                 evidence: Evidence = Evidence()) -> None:
        self._judge = judge
        self._evidence = evidence
        self._seed_key = seed_key
        self._retries, self._on_retry = retries, on_retry
        self.breaker = ModelBreaker(retries.model_error_limit, on_models_failing, self._models_work)
        # Fetches get their own bounded pool: slow references cannot starve the default pool
        # that other work (decoding, faust) uses; each fetch is bounded by its own deadline.
        self._fetch_pool = ThreadPoolExecutor(max_workers=fetch_threads, thread_name_prefix="fetch")
        self._payload_cap = dead_letter_payload_max_bytes
        self._policy = policy
        self._topics = topics
        self._worker = worker
        self._seed = seed
        self._threshold_source = threshold_source  # recorded in every verdict (events/verdict.py)

    async def handle(self, raw: bytes | None, source: Source, headers: Any = ()) -> list[Record]:
        """Judge one message; return what to publish for it. Only cancellation escapes: a fault of
        the worker's own is an ``internal`` dead letter, so no upload can stop a partition.
        ``headers`` are the message's Kafka headers; a redrive count among them is carried over."""
        raw, rounds = raw or b"", redrive_count(headers)
        try:
            return [_with_rounds(r, rounds) for r in await self._handle(raw, source)]
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a bug must not become a crash loop on one record
            log.error("upload.internal_error", source=source.as_dict(), error_type=type(exc).__name__,
                      error=cap_text(str(exc), 300))
            return [_with_rounds(r, rounds) for r in
                    self._dead(raw, "internal", f"{type(exc).__name__}: {exc}", source, None, type(exc).__name__)]

    async def _handle(self, raw: bytes, source: Source) -> list[Record]:
        try:
            upload = parse_upload(raw)
        except UploadError as exc:
            return self._dead(raw, "bad_schema", exc.detail, source, exc.upload_id)
        if upload.expired(datetime.now(timezone.utc)):
            return self._dead(raw, "deadline", f"deadline {upload.deadline} passed before judging", source,
                              upload.upload_id)
        try:
            image, seed, described = await self._fetch(upload)
        except ImageError as exc:
            return self._dead(raw, exc.reason, exc.detail, source, upload.upload_id)
        try:
            judgement = await self._judged(upload, image, seed)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a model failure dead-letters this upload only
            reason = _failure_reason(exc)
            log.warning("upload.not_judged", upload_id=upload.upload_id, reason=reason, error=cap_text(str(exc), 300))
            return self._dead(raw, reason, str(exc), source, upload.upload_id, type(exc).__name__)
        if self._small_work(judgement, image):
            return self.verdict_records(upload, source, judgement, image, described)
        return await asyncio.get_running_loop().run_in_executor(
            self._fetch_pool, self.verdict_records, upload, source, judgement, image, described)

    def _small_work(self, judgement: Any, image: Image.Image) -> bool:
        """Both pictures are thumbnails and nothing goes to a store (a put is I/O)."""
        regenerated = getattr(judgement, "regenerated", None)
        stores = self._evidence.store is not None and (self._evidence.of_all or bool(judgement.as_dict()["flagged"]))
        return not stores and all(p is None or p.width * p.height <= SMALL_WORK_PIXELS for p in (image, regenerated))

    def verdict_records(self, upload: Upload, source: Source, judgement: Any, image: Image.Image,
                        described: dict[str, Any]) -> list[Record]:
        """What a judged upload publishes, in one synchronous call: evidence kept, verdict built,
        checked and encoded (on a thread unless it is small work). The bench's stream_ceiling
        measures the worker with the same call."""
        evidence = self._keep_evidence(upload.upload_id, judgement, image)
        verdict = VerdictEvent.build(judgement.as_dict(), upload, source, self._worker, self._threshold_source,
                                     described, evidence)
        return self._verdict_records(verdict)

    def load(self, reference: str, policy: ImagePolicy | None = None) -> tuple[Image.Image, int, dict[str, Any]]:
        """Fetch, decode and seed, on a thread unless it is small work: hashing a large picture is no work
        for the event loop."""
        image, data = fetch_image(reference, policy or self._policy)
        return image, self.seed_for(image), image_description(reference, data)

    @cached_property
    def _small_policy(self) -> ImagePolicy:
        return replace(self._policy, max_pixels=min(self._policy.max_pixels, SMALL_WORK_PIXELS))

    def _load_small(self, reference: str) -> tuple[Image.Image, int, dict[str, Any]] | None:
        """An inline thumbnail, loaded in place; None for anything else. The pixel limit of
        SMALL_WORK_PIXELS is checked from the header before anything is decompressed, so a larger
        picture costs a header read here and is then loaded on a thread under the real limits."""
        if len(reference) > SMALL_INLINE_CHARS or not reference[:7].lower().startswith(INLINE_SCHEMES):
            return None  # never a network or file read on the event loop
        try:
            return self.load(reference, self._small_policy)
        except ImageError as exc:
            if exc.reason == "too_large":
                return None
            raise

    def _keep_evidence(self, upload_id: str, judgement: Any, image: Image.Image) -> dict[str, Any]:
        """The verdict's evidence block: both images as PNG, stored when a store is configured and
        the verdict is flagged (or every verdict is kept). A store that fails costs the pictures,
        never the verdict: the alert still goes out, saying why its evidence is missing."""
        store, flagged = self._evidence.store, bool(judgement.as_dict()["flagged"])
        pictures = {"input": image, "regenerated": getattr(judgement, "regenerated", None)}
        encoded = {kind: png_bytes(p) for kind, p in pictures.items() if p is not None}
        out: dict[str, Any] = {"store": store.location if store else None,
                               **{kind: None for kind in pictures},
                               **{kind: describe(kind, data)[1].as_dict() for kind, data in encoded.items()}}
        if store is None or not (flagged or self._evidence.of_all):
            return out
        try:
            for kind, data in encoded.items():
                out[kind] = store.put(kind, data).as_dict()
        except EvidenceError as exc:
            log.warning("upload.evidence_not_stored", upload_id=upload_id, error=cap_text(str(exc), 300))
            out["error"] = cap_text(str(exc), 1000)
        return out

    async def _fetch(self, upload: Upload) -> tuple[Image.Image, int, dict[str, Any]]:
        """Fetch and decode on the fetch pool, trying an unreachable image again with backoff; an
        inline thumbnail is decoded in place (SMALL_WORK_PIXELS)."""
        loop, deadline = asyncio.get_running_loop(), _timestamp(upload)
        small = self._load_small(upload.image)
        if small is not None:
            return small
        for attempt in range(self._retries.fetch + 1):
            try:
                return await loop.run_in_executor(self._fetch_pool, self.load, upload.image)
            except ImageError as exc:
                if exc.reason != "unreachable" or attempt == self._retries.fetch or \
                        not await self._retries.wait(attempt, deadline):
                    raise
                self._on_retry("fetch")
                log.info("upload.fetch_retry", upload_id=upload.upload_id, attempt=attempt + 1)
        raise AssertionError("unreachable: the loop returns or raises")

    async def _judged(self, upload: Upload, image: Image.Image, seed: int) -> Any:
        """The detector's judgement (finite scores only), trying a model error again with backoff;
        counted by the breaker."""
        deadline = _timestamp(upload)
        for attempt in range(self._retries.model + 1):
            try:
                judgement = await self._judge(upload_id=upload.upload_id, image=image, caption=upload.caption,
                                              seed=seed, deadline=deadline)
                check_finite(judgement.as_dict())
                self.breaker.success()
                return judgement
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if _failure_reason(exc) != "model_error":
                    raise
                if attempt == self._retries.model or not await self._retries.wait(attempt, deadline):
                    await self.breaker.failure()
                    raise
                self._on_retry("model")
                log.info("upload.model_retry", upload_id=upload.upload_id, attempt=attempt + 1)
        raise AssertionError("unreachable: the loop returns or raises")

    async def _models_work(self) -> bool:
        """Judge a plain grey picture, captioned by the models: do they still answer at all?"""
        try:
            judgement = await self._judge(upload_id="streamdetect-probe", image=Image.new("RGB", (32, 32), "grey"),
                                          caption=None, seed=0, deadline=None)
            return all(finite(v) for v in [judgement.as_dict()["score"], *judgement.as_dict()["scores"].values()])
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure of the probe means the models do not work
            log.warning("worker.probe_failed", error=cap_text(str(exc), 300))
            return False

    def close(self) -> None:
        self._fetch_pool.shutdown(wait=False, cancel_futures=True)

    def seed_for(self, image: Image.Image) -> int:
        """The regeneration seed, from the picture's pixels under the secret key: the same image
        gets the same regeneration (and verdict) whatever id it is sent under, a replay is judged
        alike, and without the key a sender cannot search for ids or pixels with a lucky seed."""
        digest = hmac.new(self._seed_key, f"{self._seed}:{image.mode}:{image.size}:".encode(), hashlib.sha256)
        digest.update(image.tobytes())
        return int.from_bytes(digest.digest()[:8], "big") % 2**31

    def _verdict_records(self, verdict: VerdictEvent) -> list[Record]:
        key, value = verdict.key(), verdict.value()
        records = [Record(self._topics.audit, key, value)]
        if verdict.flagged:
            records.append(Record(self._topics.alerts, key, value))
        log.info("upload.judged", upload_id=verdict.upload_id, flagged=verdict.flagged,
                 score=round(verdict.fields["score"], 4))
        return records

    def _dead(self, raw: bytes, reason: str, detail: str, source: Source, upload_id: str | None,
              exception: str | None = None) -> list[Record]:
        if upload_id is not None and len(upload_id) > MAX_KEY_CHARS:
            upload_id = None  # not a valid id (the schema's limit), and too big to be a record key
        event = dead_letter(raw, reason, detail, source, self._worker, upload_id, self._payload_cap)
        value = encode(event)
        if len(value) > MAX_DEAD_LETTER_BYTES:  # JSON escaping can triple a capped payload: publish it anyway
            event = dead_letter(raw, reason, detail, source, self._worker, upload_id, 0)
            value = encode(event)
        log.warning("upload.dead_lettered", upload_id=event["upload_id"], reason=reason,
                    detail=cap_text(event["detail"], 300), payload_size=event["payload_size"])
        key = (upload_id or f"{source.topic}/{source.partition}/{source.offset}").encode()
        return [Record(self._topics.dlq, key, value, dead_letter_headers(event, exception))]


def redrive_count(headers: Any) -> int:
    """The redrive count in a record's headers (a list of (name, bytes) pairs); 0 when absent or
    malformed: headers come from the producer and may be anything."""
    try:
        pairs = headers.items() if isinstance(headers, dict) else headers or ()
        return next((max(0, int(value)) for name, value in pairs if name == REDRIVE_HEADER), 0)
    except (TypeError, ValueError):
        return 0


def _with_rounds(record: Record, rounds: int) -> Record:
    """A dead letter of a redriven upload keeps its round count, so redrive knows when to stop."""
    if not rounds or not any(name == "dlq.reason" for name, _ in record.headers):
        return record
    return Record(record.topic, record.key, record.value, (*record.headers, (REDRIVE_HEADER, str(rounds).encode())))


def _failure_reason(exc: BaseException) -> str:
    """The pipeline marks failures that are not model errors (an expired deadline) itself; a NaN
    score is a model error: never a clean verdict."""
    if isinstance(exc, NotAVerdict):
        return "model_error"
    return getattr(exc, "dead_letter_reason", "model_error")


def _timestamp(upload: Upload) -> float | None:
    return upload.deadline.timestamp() if upload.deadline else None


def dead_letter_headers(event: dict[str, Any], exception: str | None) -> tuple[tuple[str, bytes], ...]:
    """Kafka headers in the spirit of KIP-1034, so tools that read only headers can route a dead
    letter without parsing it: why, what raised, where the upload was, who judged it."""
    source = event["source"]
    headers = {
        "dlq.reason": event["reason"],
        "dlq.exception": exception or "",
        "dlq.source.topic": source["topic"],
        "dlq.source.partition": str(source["partition"]),
        "dlq.source.offset": str(source["offset"]),
        "dlq.worker": event["worker"],
        "dlq.detector.version": __version__,
    }
    return tuple((name, value.encode()) for name, value in headers.items() if value)
