"""The verdict event, built once as a typed value from the detector's judgement of an upload
and encoded once. A judgement with a score that is not a finite number is refused: NaN is not
a clean verdict (``NaN < threshold`` is false), so it must never reach the wire as one."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Mapping

from streamdetect.events.codec import Source, encode, finite, now_iso
from streamdetect.events.schemas import SCHEMA_VERSIONS, validate_own
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
              threshold_source: str, image: Mapping[str, Any], evidence: Mapping[str, Any]) -> VerdictEvent:
        """Join the detector's judgement (Verdict.as_dict()) with where the upload came from:
        ``image`` describes what was fetched (image_description), ``evidence`` what was stored."""
        check_finite(judgement)
        event = {
            **judgement,
            "schema_version": SCHEMA_VERSIONS["verdict"],
            "image": dict(image),
            "metadata": dict(upload.metadata),
            "threshold_source": threshold_source,
            "submitted_at": upload.submitted_at,
            "decided_at": now_iso(),
            "worker": worker,
            "source": source.as_dict(),
            "evidence": {"caption": judgement.get("caption"), "caption_source": judgement.get("caption_source"),
                         "scores": dict(judgement.get("scores") or {}), "threshold": judgement.get("threshold"),
                         **evidence},
        }
        validate_own("verdict", event)
        return cls(upload.upload_id, bool(event["flagged"]), event)

    def key(self) -> bytes:
        return self.upload_id.encode()

    def value(self) -> bytes:
        return encode(dict(self.fields))


def check_finite(judgement: Mapping[str, Any]) -> None:
    """Refuse a judgement whose score, threshold or any per-encoder score is not a finite number."""
    scores = [judgement.get("score"), judgement.get("threshold"), *dict(judgement.get("scores") or {}).values()]
    if not all(finite(s) for s in scores):
        raise NotAVerdict(f"the detector returned a score that is not a finite number: {judgement.get('score')}, "
                          f"per encoder {judgement.get('scores')}")


INLINE_SCHEMES = ("data:", "base64:")


def image_description(reference: str, fetched: bytes) -> dict[str, Any]:
    """The verdict's ``image``: the reference as uploaded, except inline data, which is replaced by
    the hash and size of its bytes (a verdict never repeats an upload's pixels)."""
    inline = reference[:7].lower().startswith(INLINE_SCHEMES)
    return {"reference": None if inline else reference, "inline": inline,
            "sha256": hashlib.sha256(fetched).hexdigest(), "size": len(fetched)}
