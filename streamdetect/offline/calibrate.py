"""Fit the worker's threshold to a target false-positive rate on clean traffic only.

Scores come from the audit log (JSON lines as `streamdetect replay` prints them; production
traffic is overwhelmingly clean, and any attack in it only makes the fit more cautious) or from
a folder of clean images run through the configured detector. Only verdicts made with the
configuration in use count (same mode, models, k and noise scale); replays of one upload count
once. The fit and its confidence (see detector/thresholds.py) go to the threshold file
(detector/threshold_file.py), which the worker reads at start when ``threshold_file`` is set.

Moderators' labels (the labels topic, label.schema.json) sharpen the clean set: an upload they
confirmed as an attack is taken out of it, one they dismissed as a false positive is clean for
sure, and is added from the label's own verdict snapshot when the audit does not have it. The
latest label of an upload is the one in force.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

from streamdetect.settings import Settings


@dataclass
class AuditScores:
    scores: list[float] = field(default_factory=list)
    by_upload: dict[str, float] = field(default_factory=dict)  # the latest judgement of each upload
    lines: int = 0
    other_config: int = 0  # verdicts made with other models or settings
    duplicates: int = 0  # replays of an upload already counted
    unreadable: int = 0  # lines that are not verdicts
    # The cascade's caption agreement of each upload whose verdict recorded one (cascade on), and
    # how many were decided by the first stage (their score is the agreement, not MirrorCheck's).
    agreements: dict[str, float] = field(default_factory=dict)
    first_stage: int = 0
    # Which first stages recorded them: agreement, margin, or swap:FINGERPRINT (of its vocabulary).
    first_stage_kinds: set[str] = field(default_factory=set)


def _first_stage_score(verdict: dict[str, Any], kinds: set[str]) -> Any:
    """The cascade's first-stage score a verdict recorded (its caption agreement, or its margin
    over the captioner's rivals), noting which kind it was; None without a cascade block."""
    from streamdetect.detector.cascade import can_exit

    block = verdict.get("cascade")
    if not isinstance(block, dict):
        return None
    kind = block.get("first_stage", "agreement")
    kinds.add(str(kind) if kind != "swap" else f"swap:{block.get('vocabulary')}")
    score = block.get("margin") if kind in ("margin", "swap") else block.get("agreement")
    if not isinstance(score, (int, float)) or not can_exit(str(kind), float(score), block.get("unchecked")):
        return None  # it could never exit, so it is no sample of the exit's fit
    return score


def audit_scores(lines: Iterable[str], fingerprint: dict[str, Any]) -> AuditScores:
    """Scores of the verdicts in an audit log made with the configuration ``fingerprint``."""
    out = AuditScores()
    by_upload: dict[str, float] = {}
    for line in lines:
        if not line.strip():
            continue
        out.lines += 1
        try:
            verdict = json.loads(line)
            score, upload_id = float(verdict["score"]), str(verdict["upload_id"])
        except (ValueError, KeyError, TypeError):
            out.unreadable += 1
            continue
        agreed = _first_stage_score(verdict, out.first_stage_kinds)
        if verdict.get("decided_by") == "first_stage":
            if _same_encoders(verdict, fingerprint) and isinstance(agreed, (int, float)):
                out.first_stage += 1
                out.agreements[upload_id] = float(agreed)
            else:
                out.other_config += 1
            continue
        if not matches(verdict, fingerprint):
            out.other_config += 1
            continue
        if isinstance(agreed, (int, float)):
            out.agreements[upload_id] = float(agreed)
        if upload_id in by_upload:
            out.duplicates += 1
        by_upload[upload_id] = score  # the latest judgement of a replayed upload
    out.scores, out.by_upload = list(by_upload.values()), by_upload
    return out


def matches(verdict: dict[str, Any], fp: dict[str, Any]) -> bool:
    """Was this verdict made by the configuration ``fp`` (app/detector_config.fingerprint)?"""
    models = verdict.get("models") or {}
    if models.get("captioner") not in (None, fp["captioner"]):
        return False
    drawn = verdict.get("stochastic")
    if fp["mode"] == "vanilla":
        return drawn is None and models.get("generator") == fp["generators"][0] \
            and list(models.get("encoders") or []) == fp["encoders"]
    if not isinstance(drawn, dict) or drawn.get("noise_scale") != fp["noise_scale"]:
        return False
    encoders = list(models.get("encoders") or [])
    return models.get("generator") in fp["generators"] and len(encoders) == fp["encoders_per_request"] \
        and set(encoders) <= set(fp["encoders"])


def _same_encoders(verdict: dict[str, Any], fp: dict[str, Any]) -> bool:
    """A first-stage verdict names no generator: it matches by captioner and encoders alone."""
    models = verdict.get("models") or {}
    return fp["mode"] == "vanilla" and models.get("captioner") in (None, fp["captioner"]) \
        and list(models.get("encoders") or []) == fp["encoders"]


def audit_file_scores(path: str, fp: dict[str, Any]) -> tuple[list[float], str]:
    """Clean scores from an audit log file (``-`` for stdin), and a line saying what was used."""
    found = read_audit_file(path, fp)
    return found.scores, audit_source(path, found)


def read_audit_file(path: str, fp: dict[str, Any]) -> AuditScores:
    """``audit_scores`` of a file, or of stdin for ``-``."""
    if path == "-":
        return audit_scores(sys.stdin, fp)
    with open(path) as f:
        return audit_scores(f, fp)


def audit_source(path: str, found: AuditScores) -> str:
    first = f", {found.first_stage} decided by the cascade's first stage" if found.first_stage else ""
    return (f"audit {path}: {found.lines} records, {len(found.scores)} used, {found.other_config} from "
            f"another configuration, {found.duplicates} replays, {found.unreadable} unreadable{first}")


@dataclass
class Labels:
    """The label in force for each upload (its latest), and how many were read."""

    latest: dict[str, dict[str, Any]] = field(default_factory=dict)
    read: int = 0
    unreadable: int = 0  # not JSON, or not a label by its schema


def latest_labels(items: Iterable[str | dict[str, Any]]) -> Labels:
    """The latest label per upload, by decided_at and, at a tie, by log order. ``items`` are JSON
    lines (as `streamdetect replay --topic labels` prints them) or decoded events (the topic)."""
    from streamdetect import events

    out, when = Labels(), dict[str, datetime]()  # upload id -> decided_at of the label in force
    for item in items:
        if isinstance(item, str) and not item.strip():
            continue
        out.read += 1
        try:
            label = json.loads(item) if isinstance(item, str) else item
            events.validate("label", label)
            decided = _moment(label["decided_at"])
        except (ValueError, TypeError):  # SchemaError is a ValueError
            out.unreadable += 1
            continue
        upload_id = label["upload_id"]
        if upload_id not in when or decided >= when[upload_id]:  # a later line wins a tie
            out.latest[upload_id], when[upload_id] = label, decided
    return out


def _moment(text: str) -> datetime:
    # fromisoformat refuses the lower-case t and z that RFC 3339 allows (docs/architecture.md#hostile-json);
    # a time without a zone is read as UTC, so every moment compares with every other.
    moment = datetime.fromisoformat(text.upper())
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


@dataclass
class LabelUse:
    """What the labels did to the clean set, for the calibration's source line."""

    read: int = 0
    uploads: int = 0
    unreadable: int = 0
    dismissed_in_audit: int = 0  # already among the clean scores: they stay
    dismissed_added: int = 0  # added from the label's verdict snapshot
    confirmed: int = 0
    confirmed_in_audit: int = 0  # removed from the clean scores
    other_config: int = 0  # dismissed, not in the audit, and judged with another configuration

    def line(self, source: str, with_audit: bool) -> str:
        used = self.dismissed_in_audit + self.dismissed_added
        dismissed = (f"{used} dismissed used as clean ({self.dismissed_in_audit} in the audit, "
                     f"{self.dismissed_added} added from labels)" if with_audit else f"{used} dismissed used as clean")
        found = f" ({self.confirmed_in_audit} found in the audit)" if with_audit else ""
        return (f"labels {source}: {self.read} read for {self.uploads} uploads, {dismissed}, {self.confirmed} "
                f"confirmed excluded{found}, {self.other_config} from another configuration, "
                f"{self.unreadable} unreadable")


def apply_labels(clean: dict[str, float], labels: Labels, fp: dict[str, Any]) -> LabelUse:
    """Take confirmed uploads out of ``clean`` (upload id -> score, changed in place) and put
    dismissed ones in: a dismissed upload the audit lacks comes in with its label's verdict
    score, if that verdict was made with the configuration ``fp``."""
    use = LabelUse(labels.read, len(labels.latest), labels.unreadable)
    for upload_id, label in labels.latest.items():
        if label["decision"] == "confirmed":
            use.confirmed += 1
            if clean.pop(upload_id, None) is not None:
                use.confirmed_in_audit += 1
        elif upload_id in clean:
            use.dismissed_in_audit += 1
        elif matches(label["verdict"], fp):
            clean[upload_id] = float(label["verdict"]["score"])
            use.dismissed_added += 1
        else:
            use.other_config += 1
    return use


def labelled_scores(audit_path: str | None, labels: Iterable[str | dict[str, Any]], labels_source: str,
                    fp: dict[str, Any]) -> tuple[list[float], str]:
    """Clean scores from the audit log corrected by the labels, or (no audit) the dismissed
    labels' own verdict scores; and a line saying what was used."""
    found = read_audit_file(audit_path, fp) if audit_path is not None else None
    clean = dict(found.by_upload) if found is not None else {}
    use = apply_labels(clean, latest_labels(labels), fp)
    line = use.line(labels_source, with_audit=found is not None)
    if found is None or audit_path is None:
        return list(clean.values()), line
    return list(clean.values()), f"{audit_source(audit_path, found)}; {line}"


def clean_folder_scores(settings: Settings, folder: Path, recursive: bool, max_samples: int | None,
                        progress: Callable[[int], None] = lambda n: None,
                        agreements: list[float | None] | None = None) -> tuple[list[float], str]:
    """Clean scores from a folder of images run through the configured detector; with
    ``agreements``, each image's caption agreement is appended to it too (the cascade's fit)."""
    from streamdetect.app.detector_config import cascade_swaps, load_detector_models, stochastic_settings
    from streamdetect.offline.items import EvalItem, image_files
    from streamdetect.offline.scoring import RunOptions, score_items

    files = image_files(folder, recursive)[:max_samples]
    items = [EvalItem(f"clean/{f.relative_to(folder).as_posix()}", f, 0) for f in files]
    if not items:
        raise ValueError(f"no images in {folder}")
    models = load_detector_models(settings)
    options = RunOptions(seed=settings.seed, batch=settings.max_batch, agreement=agreements is not None,
                         first_stage=settings.cascade if settings.cascade != "off" else "agreement",
                         swaps=cascade_swaps(settings))
    scored = score_items(items, models, stochastic_settings(settings), options, progress)
    if agreements is not None:  # one per image; None where the swap first stage cannot check the caption
        agreements += [s.agreement for s in scored]
    return [s.score for s in scored], f"folder {folder}: {len(scored)} images"


def cascade_scores(mirrorcheck: dict[str, float], agreements: dict[str, float],
                   exit_threshold: float) -> tuple[list[float], int]:
    """The cascade's score of each clean sample, to fit its MirrorCheck threshold for the target
    FPR of the whole cascade: 1.0 (decided clean, the top of the scale) when the sample's caption
    agreement clears the exit threshold, else its MirrorCheck score. A sample the old exit let
    through unregenerated that the new one would not has no MirrorCheck score: left out, counted."""
    out, missing = [], 0
    for upload_id in sorted(set(mirrorcheck) | set(agreements)):
        agreed = agreements.get(upload_id)
        if agreed is not None and agreed >= exit_threshold:
            out.append(1.0)
        elif upload_id in mirrorcheck:
            out.append(mirrorcheck[upload_id])
        else:
            missing += 1
    return out, missing
