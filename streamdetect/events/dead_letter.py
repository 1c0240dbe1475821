"""The dead-letter event: an upload that could not be judged, with its payload and a reason.

A dead letter must itself be publishable, whatever the upload was: the payload it copies is cut
at a cap (the first bytes, with the full size and sha256 so the original can be matched), and
the detail is cut too, since it may quote the offending value.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from streamdetect.events.codec import Source, now_iso
from streamdetect.events.schemas import SCHEMA_VERSIONS, validate_own

PAYLOAD_MAX_BYTES = 256 * 1024  # default cap; the dead_letter_payload_max_bytes setting
DETAIL_MAX_CHARS = 1000


def cap_text(text: str, limit: int = DETAIL_MAX_CHARS) -> str:
    """``text`` cut to ``limit`` characters, saying how long it was."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


def dead_letter(
    raw: bytes, reason: str, detail: str, source: Source, worker: str, upload_id: str | None,
    max_payload_bytes: int = PAYLOAD_MAX_BYTES,
) -> dict[str, Any]:
    """A dead-letter event carrying the original payload (text, or base64 if binary) up to the cap."""
    kept = raw[:max_payload_bytes]
    try:
        payload, encoding = kept.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        payload, encoding = base64.b64encode(kept).decode(), "base64"
    event = {
        "schema_version": SCHEMA_VERSIONS["dead_letter"],
        "upload_id": None if upload_id is None else cap_text(upload_id, 256),
        "reason": reason,
        "detail": cap_text(detail),
        "payload": payload,
        "payload_encoding": encoding,
        "payload_size": len(raw),
        "payload_sha256": hashlib.sha256(raw).hexdigest(),
        "payload_truncated": len(kept) < len(raw),
        "source": source.as_dict(),
        "failed_at": now_iso(),
        "worker": worker,
    }
    validate_own("dead_letter", event)
    return event
