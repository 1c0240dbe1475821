"""JSON on the wire: encoding events, times in RFC 3339, and where a message came from."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any


def encode(event: dict[str, Any]) -> bytes:
    """Compact, key-sorted JSON. NaN and infinities are refused (they are not JSON)."""
    return json.dumps(event, separators=(",", ":"), sort_keys=True, allow_nan=False).encode()


def now_iso() -> str:
    return format_time(datetime.now(timezone.utc))


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with milliseconds and a Z."""
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    """RFC 3339 / ISO 8601 with a zone (a bare time is taken as UTC), always timezone-aware.
    RFC 3339 allows a lower-case ``t`` and ``z``, which datetime.fromisoformat refuses."""
    normalised = text.strip()
    normalised = normalised[:10] + normalised[10:].upper() if len(normalised) > 10 else normalised
    if normalised.endswith("Z"):
        normalised = normalised[:-1] + "+00:00"
    parsed = datetime.fromisoformat(normalised)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def finite(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


@dataclass(frozen=True)
class Source:
    """Where a message came from; carried into verdicts and dead letters for tracing."""

    topic: str
    partition: int
    offset: int

    def as_dict(self) -> dict[str, Any]:
        return {"topic": self.topic, "partition": self.partition, "offset": self.offset}
