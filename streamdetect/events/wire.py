"""Wire formats: uploads in, verdicts and dead letters out (schemas in ``topics/schemas``).

This module knows JSON and the schemas, nothing about Kafka or models. Every event the code
produces is built here, so one place decides what goes on the wire.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

SCHEMA_VERSION = 1
SCHEMA_FILES = {
    "upload": "upload.schema.json",
    "verdict": "verdict.schema.json",
    "dead_letter": "dead_letter.schema.json",
}


class SchemaError(ValueError):
    """A message does not match its event schema; ``detail`` says where and why."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind} does not match its schema: {detail}")
        self.kind = kind
        self.detail = detail


PACKAGE_DIR = Path(__file__).resolve().parent
SCHEMAS_DIR = PACKAGE_DIR / "schemas"  # package data: an installed wheel validates without a checkout
TOPICS_DIR = PACKAGE_DIR / "topics"


@cache
def _validator(kind: str) -> jsonschema.protocols.Validator:
    schema = json.loads((SCHEMAS_DIR / SCHEMA_FILES[kind]).read_text())
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def validate(kind: str, event: dict[str, Any]) -> None:
    """Raise SchemaError naming the first failing field if ``event`` breaks the ``kind`` schema."""
    error = jsonschema.exceptions.best_match(_validator(kind).iter_errors(event))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise SchemaError(kind, f"{where}: {error.message}")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    """ISO 8601 with a zone; a bare time is taken as UTC."""
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class Source:
    """Where a message came from; carried into verdicts and dead letters for tracing."""

    topic: str
    partition: int
    offset: int

    def as_dict(self) -> dict[str, Any]:
        return {"topic": self.topic, "partition": self.partition, "offset": self.offset}


@dataclass(frozen=True)
class Upload:
    upload_id: str
    image: str
    caption: str | None = None
    submitted_at: str | None = None
    deadline: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_bytes(cls, raw: bytes) -> Upload:
        """Parse and validate one message value; SchemaError on anything else."""
        try:
            event = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SchemaError("upload", f"not JSON: {exc}") from exc
        if not isinstance(event, dict):
            raise SchemaError("upload", "not a JSON object")
        validate("upload", event)
        return cls(
            upload_id=event["upload_id"],
            image=event["image"],
            caption=event.get("caption"),
            submitted_at=event.get("submitted_at"),
            deadline=event.get("deadline"),
            metadata=event.get("metadata", {}),
        )

    def to_dict(self) -> dict[str, Any]:
        event: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "upload_id": self.upload_id, "image": self.image}
        for name in ("caption", "submitted_at", "deadline"):
            if getattr(self, name) is not None:
                event[name] = getattr(self, name)
        if self.metadata:
            event["metadata"] = self.metadata
        return event


def encode(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":"), sort_keys=True).encode()


def upload_id_hint(raw: bytes) -> str | None:
    """Best-effort upload id from a message that failed validation, for the dead letter."""
    try:
        value = json.loads(raw).get("upload_id")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def dead_letter(
    raw: bytes, reason: str, detail: str, source: Source, worker: str, upload_id: str | None
) -> dict[str, Any]:
    """A dead-letter event carrying the original payload untouched (text, or base64 if binary)."""
    try:
        payload, encoding = raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        payload, encoding = base64.b64encode(raw).decode(), "base64"
    event = {
        "schema_version": SCHEMA_VERSION,
        "upload_id": upload_id,
        "reason": reason,
        "detail": detail,
        "payload": payload,
        "payload_encoding": encoding,
        "source": source.as_dict(),
        "failed_at": now_iso(),
        "worker": worker,
    }
    validate("dead_letter", event)
    return event
