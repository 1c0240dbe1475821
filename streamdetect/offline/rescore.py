"""Re-score audit verdicts with the seeds and draws they recorded, and say whether the number holds.

A verdict records everything its score depends on: the caption, the regeneration seed, the
generator and encoders, and in stochastic mode the draw's seed and noise scale
(detector/stochastic.py). Given the same input pixels and models, the score comes out the same
(to float noise: a batched regeneration can move a pixel by 1/255 against a batch of one), so a
verdict whose number does not come back was tampered with, or made by other weights than the
ones it names. The input comes from the verdict's evidence store (the very pixels the worker
decoded) and, failing that, from its image reference, fetched under the image policy. A
record that cannot be re-scored is reported with the reason and the run goes on.

Reading the audit topic is the CLI's job (this layer knows no Kafka): it hands records in.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping

from PIL import Image

from streamdetect.settings import Settings

DEFAULT_TOLERANCE = 1e-4


class CannotRescore(Exception):
    """This record cannot be re-scored; the message says why, in words for the operator."""


@dataclass(frozen=True)
class NotJson:
    """A line of the input that is not JSON (kept in the stream so its line number is reported)."""

    line: int
    error: str


@dataclass
class RescoreResult:
    """One record's outcome: the recomputed numbers, or why there are none (``reason``)."""

    upload_id: str | None
    tolerance: float
    recorded: float | None = None
    recomputed: float | None = None
    recorded_scores: dict[str, float] = field(default_factory=dict)
    recomputed_scores: dict[str, float] = field(default_factory=dict)
    recorded_regeneration: str | None = None  # sha256 of the regeneration's PNG, from the evidence
    recomputed_regeneration: str | None = None
    image_from: str | None = None  # "evidence" or "reference"
    reason: str | None = None  # set when the record could not be re-scored

    @property
    def rescored(self) -> bool:
        return self.recomputed is not None

    @property
    def difference(self) -> float | None:
        return None if self.recomputed is None or self.recorded is None else self.recomputed - self.recorded

    @property
    def matches(self) -> bool:
        """The ensemble score and every per-encoder score came back within the tolerance."""
        if self.difference is None or abs(self.difference) > self.tolerance:
            return False
        return all(abs(self.recomputed_scores.get(name, math.inf) - value) <= self.tolerance
                   for name, value in self.recorded_scores.items())

    @property
    def regeneration_matches(self) -> bool | None:
        """None when the evidence recorded no regeneration hash to compare with."""
        if self.recorded_regeneration is None or self.recomputed_regeneration is None:
            return None
        return self.recorded_regeneration == self.recomputed_regeneration

    @property
    def status(self) -> str:
        return "cannot rescore" if not self.rescored else ("match" if self.matches else "MISMATCH")

    def as_dict(self) -> dict[str, Any]:
        return {"upload_id": self.upload_id, "status": self.status.lower(), "matches": self.rescored and self.matches,
                "recorded_score": self.recorded, "recomputed_score": self.recomputed, "difference": self.difference,
                "tolerance": self.tolerance, "recorded_scores": self.recorded_scores,
                "recomputed_scores": self.recomputed_scores, "image_from": self.image_from,
                "regenerated_sha256": {"recorded": self.recorded_regeneration,
                                       "recomputed": self.recomputed_regeneration},
                "regeneration_matches": self.regeneration_matches, "reason": self.reason}

    def line(self) -> str:
        """One line for the terminal."""
        who = self.upload_id or "?"
        if not self.rescored:
            return f"{who}  cannot rescore: {self.reason}"
        text = (f"{who}  recorded {self.recorded:.6f}  recomputed {self.recomputed:.6f}  "
                f"diff {self.difference:+.2e}  {self.status}  (image from {self.image_from})")
        if self.regeneration_matches is not None:
            verb = "same" if self.regeneration_matches else "DIFFERS"
            text += (f"  regeneration {verb}: recorded {self.recorded_regeneration[:12]} "  # type: ignore[index]
                     f"recomputed {self.recomputed_regeneration[:12]}")  # type: ignore[index]
        return text


def records_from_lines(lines: Iterable[str]) -> Iterator[Any]:
    """JSON lines (as `streamdetect replay` prints them) as decoded values; a bad line as NotJson."""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except ValueError as exc:  # RecursionError is not caught: an audit file is not hostile input
            yield NotJson(number, str(exc))


class InputImages:
    """Where a record's input pixels come from: its evidence store first, then its reference."""

    def __init__(self, settings: Settings) -> None:
        from streamdetect.app.wiring import image_policy

        self._settings = settings
        self._policy = image_policy(settings)
        self._stores: dict[str, Any] = {}  # one store (and S3 client) per location

    def get(self, verdict: Mapping[str, Any]) -> tuple[Image.Image, str]:
        """The input image and where it came from ("evidence" or "reference"), or CannotRescore."""
        if not isinstance(verdict.get("evidence"), dict) and not verdict.get("image"):
            raise CannotRescore(f"no input image: a schema v{verdict.get('schema_version', 1)} verdict keeps no "
                                "evidence and records no image reference")
        problems: list[str] = []
        for where, source in (("evidence", self._from_evidence), ("reference", self._from_reference)):
            image = source(verdict, problems)
            if image is not None:
                return image, where
        raise CannotRescore("no input image: " + "; ".join(problems))

    def _from_evidence(self, verdict: Mapping[str, Any], problems: list[str]) -> Image.Image | None:
        from streamdetect.images import ImageError, decode_image

        evidence = verdict.get("evidence")
        if not isinstance(evidence, dict):
            problems.append("no evidence (a schema v1 verdict)")
            return None
        stored, location = evidence.get("input") or {}, evidence.get("store")
        if not location or not stored.get("key"):
            why = evidence.get("error") or ("no evidence store was configured" if not location else
                                            "the worker kept no input for it: evidence_of=flagged keeps flagged "
                                            "verdicts' images only")
            problems.append(f"no stored input ({why})")
            return None
        data = self._read_stored(location, stored["key"], problems)
        if data is None:
            return None
        if stored.get("sha256") and hashlib.sha256(data).hexdigest() != stored["sha256"]:
            problems.append(f"stored input {stored['key']} does not hash to the sha256 the verdict recorded")
            return None
        try:
            return decode_image(data, self._policy)
        except ImageError as exc:
            problems.append(f"stored input {stored['key']}: {exc}")
            return None

    def _read_stored(self, location: str, key: str, problems: list[str]) -> bytes | None:
        from streamdetect.evidence import EvidenceError, open_store

        try:
            if location not in self._stores:
                self._stores[location] = open_store(location, self._settings.s3_endpoint, self._settings.s3_region)
            return self._stores[location].get(key)
        except (EvidenceError, ValueError) as exc:
            problems.append(f"stored input unreadable ({exc})")
            return None

    def _from_reference(self, verdict: Mapping[str, Any], problems: list[str]) -> Image.Image | None:
        from streamdetect.images import ImageError, fetch_image

        described = verdict.get("image")
        if isinstance(described, str):  # not in any schema, but a hand-joined v1 record may carry one
            described = {"reference": described}
        reference = described.get("reference") if isinstance(described, dict) else None
        if not reference:
            inline = isinstance(described, dict) and described.get("inline")
            problems.append("the upload was inline, and a verdict never carries its pixels" if inline
                            else "no image reference recorded")
            return None
        try:
            image, data = fetch_image(reference, self._policy)
        except ImageError as exc:
            problems.append(f"reference could not be fetched ({exc})")
            return None
        # The object behind a reference can change after judging: other bytes are another picture.
        if described.get("sha256") and hashlib.sha256(data).hexdigest() != described["sha256"]:
            problems.append("the reference now holds other bytes than the ones judged (sha256 differs)")
            return None
        return image


class Rescorer:
    """Re-scores records on loaded models; ``generators`` and ``encoders`` map spec -> model."""

    def __init__(self, generators: Mapping[str, Any], encoders: Mapping[str, Any], images: InputImages,
                 tolerance: float = DEFAULT_TOLERANCE, zoo_name: str = "the configured zoo") -> None:
        self.generators, self.encoders, self.images = dict(generators), dict(encoders), images
        self.tolerance, self.zoo_name = tolerance, zoo_name

    @classmethod
    def from_settings(cls, settings: Settings, tolerance: float = DEFAULT_TOLERANCE) -> Rescorer:
        """Load the configured profile's (or zoo's) generators and encoders; no captioner: the
        caption is recorded, and re-captioning would score another regeneration."""
        from streamdetect.app.detector_config import load_detector_models
        from streamdetect.models._torch import quiet_model_libraries, set_cpu_threads

        set_cpu_threads(settings.cpu_threads)
        quiet_model_libraries()
        zoo = load_detector_models(settings, captioner=False)
        return cls({g.spec: g for g in zoo.generators}, {e.spec: e for e in zoo.encoders}, InputImages(settings),
                   tolerance, f"profile {settings.profile} ({settings.mode})")

    def rescore(self, record: Any) -> RescoreResult:
        """One record's outcome; never raises for a bad record (the run goes on)."""
        upload_id = record.get("upload_id") if isinstance(record, dict) else None
        result = RescoreResult(str(upload_id) if upload_id is not None else None, self.tolerance)
        try:
            self._rescore(record, result)
        except CannotRescore as exc:
            result.reason = str(exc)
        except Exception as exc:  # noqa: BLE001 - a model failure on one record must not end the run
            result.reason = f"the models failed on it: {type(exc).__name__}: {exc}"
        return result

    def _rescore(self, record: Any, result: RescoreResult) -> None:
        from streamdetect.detector.mirrorcheck import ensemble_score
        from streamdetect.detector.stochastic import rescore_with_regeneration
        from streamdetect.evidence import png_bytes

        verdict = self._checked(record)
        result.recorded, result.recorded_scores = _recorded_numbers(verdict)
        if verdict.get("decided_by") == "first_stage":
            self._rescore_first_stage(verdict, result)
            return
        evidence = verdict.get("evidence") if isinstance(verdict.get("evidence"), dict) else {}
        result.recorded_regeneration = (evidence.get("regenerated") or {}).get("sha256")
        generator, encoders = self._models_for(verdict)
        image, result.image_from = self.images.get(verdict)
        scores, regenerated = rescore_with_regeneration(verdict, image, generator, encoders)
        result.recomputed_scores = scores
        result.recomputed = ensemble_score(scores)
        result.recomputed_regeneration = hashlib.sha256(png_bytes(regenerated)).hexdigest()

    def _rescore_first_stage(self, verdict: Mapping[str, Any], result: RescoreResult) -> None:
        """A verdict the cascade's first stage decided: its caption agreement (or its margin over the
        rivals the verdict recorded), recomputed."""
        from streamdetect.detector import agreement, agreement_scores, margin_scores

        missing = [s for s in verdict["models"]["encoders"] if s not in self.encoders]
        if missing:
            raise CannotRescore(f"made with {', '.join(missing)}, not loaded by {self.zoo_name}")
        image, result.image_from = self.images.get(verdict)
        encoders = [self.encoders[s] for s in verdict["models"]["encoders"]]
        block = verdict.get("cascade") or {}
        if block.get("first_stage") in ("margin", "swap"):
            rivals = block.get("rivals")
            if not isinstance(rivals, list) or not all(isinstance(r, str) for r in rivals):
                raise CannotRescore(f"a {block['first_stage']} first-stage verdict without its rivals")
            result.recomputed_scores = margin_scores(encoders, [image], [verdict["caption"]], [rivals])[0]
        else:
            result.recomputed_scores = agreement_scores(encoders, [image], [verdict["caption"]])[0]
        result.recomputed = agreement(result.recomputed_scores)

    @staticmethod
    def _checked(record: Any) -> dict[str, Any]:
        """The record, if it has what re-scoring reads; CannotRescore otherwise."""
        if isinstance(record, NotJson):
            raise CannotRescore(f"line {record.line} is not JSON ({record.error})")
        if not isinstance(record, dict) or "upload_id" not in record:
            raise CannotRescore("not a verdict (no upload_id)")
        models = record.get("models")
        missing = [k for k in ("score", "caption", "seed") if k not in record]
        first_stage = record.get("decided_by") == "first_stage"  # no regeneration: no generator
        if missing or not isinstance(models, dict) or not (models.get("generator") or first_stage) or \
                not isinstance(models.get("encoders"), list) or not models["encoders"]:
            raise CannotRescore(f"not a complete verdict (missing {', '.join(missing) or 'models'})")
        if not isinstance(record["caption"], str) or not isinstance(record["seed"], int):
            raise CannotRescore("not a complete verdict (caption is not text or seed not an integer)")
        return record

    def _models_for(self, verdict: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
        """The recorded generator and encoders among the loaded ones; CannotRescore naming the missing."""
        models = verdict["models"]
        missing = [s for s in [models["generator"]] if s not in self.generators]
        missing += [s for s in models["encoders"] if s not in self.encoders]
        if missing:
            raise CannotRescore(f"made with {', '.join(missing)}, not loaded by {self.zoo_name}; rerun with the "
                                "profile (or --generator-zoo/--encoder-zoo) that made it")
        return self.generators[models["generator"]], {s: self.encoders[s] for s in models["encoders"]}


def _recorded_numbers(verdict: Mapping[str, Any]) -> tuple[float, dict[str, float]]:
    """The recorded ensemble score and per-encoder scores, or CannotRescore when they are not numbers."""
    try:
        scores = {str(k): float(v) for k, v in (verdict.get("scores") or {}).items()}
        return float(verdict["score"]), scores
    except (AttributeError, TypeError, ValueError) as exc:
        raise CannotRescore(f"its recorded scores are not numbers ({exc})") from exc


@dataclass
class Summary:
    results: list[RescoreResult] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        """Any record that did not come back to its number, or could not be re-scored."""
        return any(not (r.rescored and r.matches) for r in self.results)

    def line(self) -> str:
        rescored = [r for r in self.results if r.rescored]
        mismatched = [r.upload_id or "?" for r in rescored if not r.matches]
        cannot = [r.upload_id or "?" for r in self.results if not r.rescored]
        regen = [r.upload_id or "?" for r in rescored if r.regeneration_matches is False]
        parts = [f"rescored {len(rescored)} of {len(self.results)} records: {len(rescored) - len(mismatched)} match",
                 f"{len(mismatched)} mismatch{_ids(mismatched)}", f"{len(cannot)} cannot be rescored{_ids(cannot)}"]
        if regen:
            parts.append(f"{len(regen)} regenerated differently{_ids(regen)}")
        return ", ".join(parts)


def _ids(ids: list[str], most: int = 10) -> str:
    if not ids:
        return ""
    more = f", and {len(ids) - most} more" if len(ids) > most else ""
    return f" ({', '.join(ids[:most])}{more})"
