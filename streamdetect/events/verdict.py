"""The verdict event, built once as a typed value from the detector's judgement of an upload
and encoded once. A judgement with a score that is not a finite number is refused: NaN is not
a clean verdict (``NaN < threshold`` is false), so it must never reach the wire as one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from streamdetect.events.codec import Source, encode, finite, now_iso
from streamdetect.events.schemas import SCHEMA_VERSION, validate
from streamdetect.events.upload import Upload

THRESHOLD_SOURCES = ("calibration", "setting", "default")


class NotAVerdict(ValueError):
    """The detector returned something that cannot be published as a verdict (e.g. a NaN score)."""


@dataclass(frozen=True)
class VerdictEvent:
    """What goes to audit (and to alerts when flagged), keyed by upload_id."""

    upload_id: str
    flagged: bool
    fields: Mapping[str, Any]  # the whole event, schema-checked

    @classmethod
    def build(cls, judgement: Mapping[str, Any], upload: Upload, source: Source, worker: str,
              threshold_source: str) -> VerdictEvent:
        """Join the detector's judgement (Verdict.as_dict()) with where the upload came from."""
        scores = [judgement.get("score"), judgement.get("threshold"), *dict(judgement.get("scores") or {}).values()]
        if not all(finite(s) for s in scores):
            raise NotAVerdict(f"the detector returned a score that is not a finite number: {judgement.get('score')}, "
                              f"per encoder {judgement.get('scores')}")
        event = {
            **judgement,
            "schema_version": SCHEMA_VERSION,
            "threshold_source": threshold_source,
            "submitted_at": upload.submitted_at,
            "decided_at": now_iso(),
            "worker": worker,
            "source": source.as_dict(),
        }
        validate("verdict", event)
        return cls(upload.upload_id, bool(event["flagged"]), event)

    def key(self) -> bytes:
        return self.upload_id.encode()

    def value(self) -> bytes:
        return encode(dict(self.fields))
