"""The upload event, parsed and validated once at the edge into a typed value.

Everything after ``parse_upload`` works on the ``Upload`` it returns: the deadline is a
timezone-aware datetime, the id is encodable as a record key, and every way a message can be
malformed (not JSON, NaN or Infinity literals, a key given twice, nested too deep, a number too
long to parse, a date the schema accepts but the parser does not) is one SchemaError naming it,
never another exception.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from streamdetect.events.codec import format_time, parse_time
from streamdetect.events.schemas import SCHEMA_VERSION, SchemaError, validate


@dataclass(frozen=True)
class Upload:
    upload_id: str
    image: str
    caption: str | None = None
    submitted_at: str | None = None  # passed through to the verdict as the producer wrote it
    deadline: datetime | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def expired(self, now: datetime) -> bool:
        return self.deadline is not None and self.deadline < now

    def to_dict(self) -> dict[str, Any]:
        event: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "upload_id": self.upload_id, "image": self.image}
        if self.caption is not None:
            event["caption"] = self.caption
        if self.submitted_at is not None:
            event["submitted_at"] = self.submitted_at
        if self.deadline is not None:
            event["deadline"] = format_time(self.deadline)
        if self.metadata:
            event["metadata"] = self.metadata
        return event


class UploadError(SchemaError):
    """An upload message that cannot be judged; ``upload_id`` is its id when one could be read."""

    def __init__(self, detail: str, upload_id: str | None = None) -> None:
        super().__init__("upload", detail)
        self.upload_id = upload_id


def parse_upload(raw: bytes) -> Upload:
    """Parse and validate one message value; UploadError on anything else."""
    event = _json_object(raw)
    hint = _utf8_text(event.get("upload_id"))
    try:
        validate("upload", event)
    except SchemaError as exc:
        raise UploadError(exc.detail, hint) from None
    if hint is None:
        raise UploadError("upload_id: not valid Unicode (a lone surrogate?); it must be encodable as UTF-8")
    for name in ("image", "caption", "submitted_at", "deadline"):
        if name in event and _utf8_text(event[name]) is None:
            raise UploadError(f"{name}: not valid Unicode (a lone surrogate?); it must be encodable as UTF-8", hint)
    deadline = None
    if "deadline" in event:
        try:
            deadline = parse_time(event["deadline"])
        except ValueError:
            raise UploadError(f"deadline: {event['deadline'][:64]!r} is not an RFC 3339 time", hint) from None
    return Upload(upload_id=hint, image=event["image"], caption=event.get("caption"),
                  submitted_at=event.get("submitted_at"), deadline=deadline, metadata=event.get("metadata", {}))


class _NotStrictJSON(ValueError):
    """NaN/Infinity literals (not JSON, RFC 8259) or a key given twice (readers disagree which wins)."""


def _no_constants(name: str) -> Any:
    raise _NotStrictJSON(f"{name} is not a JSON value")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        twice = sorted({key for key in keys if keys.count(key) > 1})
        raise _NotStrictJSON(f"key {twice[0][:64]!r} appears more than once in one object")
    return dict(pairs)


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        event = json.loads(raw, parse_constant=_no_constants, object_pairs_hook=_unique_keys)
    except _NotStrictJSON as exc:
        raise UploadError(f"not strict JSON: {exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UploadError(f"not JSON: {exc}") from None
    except RecursionError:
        raise UploadError("not JSON the worker accepts: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer past Python's digit limit
        raise UploadError(f"not JSON the worker accepts: {str(exc)[:200]}") from None
    if not isinstance(event, dict):
        raise UploadError("not a JSON object")
    return event


def _utf8_text(value: Any) -> str | None:
    """The id if it is a string that can become a record key, else None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return value
