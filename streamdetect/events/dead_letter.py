"""The dead-letter event: an upload that could not be judged, with its payload and a reason."""

from __future__ import annotations

import base64
from typing import Any

from streamdetect.events.codec import Source, now_iso
from streamdetect.events.schemas import SCHEMA_VERSION, validate


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
