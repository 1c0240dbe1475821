"""Fit the worker's threshold to a target false-positive rate on clean traffic only.

Scores come from the audit log (JSON lines as `streamdetect replay` prints them; production
traffic is overwhelmingly clean, and any attack in it only makes the fit more cautious) or from
a folder of clean images run through the configured detector. Only verdicts made with the
configuration in use count (same mode, models, k and noise scale); replays of one upload count
once. The fit and its confidence (see detector/thresholds.py) go to the threshold file, which
the worker reads at start when ``threshold_file`` is set.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from streamdetect.settings import ConfigError

FORMAT_VERSION = 1


@dataclass
class AuditScores:
    scores: list[float] = field(default_factory=list)
    lines: int = 0
    other_config: int = 0  # verdicts made with other models or settings
    duplicates: int = 0  # replays of an upload already counted
    unreadable: int = 0  # lines that are not verdicts


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
        if not matches(verdict, fingerprint):
            out.other_config += 1
            continue
        if upload_id in by_upload:
            out.duplicates += 1
        by_upload[upload_id] = score  # the latest judgement of a replayed upload
    out.scores = list(by_upload.values())
    return out


def matches(verdict: dict[str, Any], fp: dict[str, Any]) -> bool:
    """Was this verdict made by the configuration ``fp`` (detector_settings.fingerprint)?"""
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


def fit_record(scores: list[float], target_fpr: float, confidence: float, fingerprint: dict[str, Any],
               source: str) -> dict[str, Any]:
    from streamdetect.detector.thresholds import fit_target_fpr

    fit = fit_target_fpr(scores, target_fpr, confidence)
    return {"format": FORMAT_VERSION, **fit.as_dict(), "fingerprint": fingerprint, "source": source,
            "fitted_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def write_record(path: Path, record: dict[str, Any]) -> None:
    """Write atomically: a worker starting meanwhile reads the old file or the new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(record, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def read_threshold(path: str | Path, fingerprint: dict[str, Any]) -> float:
    """The threshold in a calibration file, if it was fitted for ``fingerprint``; else ConfigError."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"setting threshold_file={str(path)!r}: no such file; run `streamdetect calibrate` "
                          f"to write it, or unset threshold_file to use threshold") from exc
    except (OSError, ValueError) as exc:
        raise ConfigError(f"setting threshold_file={str(path)!r}: not a readable calibration: {exc}") from exc
    threshold = record.get("threshold") if isinstance(record, dict) else None
    if record.get("format") != FORMAT_VERSION or not isinstance(threshold, (int, float)) \
            or not -1 <= threshold <= 1:
        raise ConfigError(f"setting threshold_file={str(path)!r}: not a calibration written by "
                          f"`streamdetect calibrate` (format {FORMAT_VERSION}, threshold in [-1, 1])")
    fitted_for = record.get("fingerprint")
    if fitted_for != fingerprint:
        differ = sorted(k for k in fingerprint if (fitted_for or {}).get(k) != fingerprint[k])
        raise ConfigError(f"setting threshold_file={str(path)!r} was fitted for another configuration "
                          f"(differs in {differ}); re-run `streamdetect calibrate` with the settings in use")
    return float(threshold)


def describe(record: dict[str, Any]) -> str:
    """The fit in a few lines for the operator."""
    pct = lambda x: f"{100 * x:.2f}%"  # noqa: E731
    lines = [
        f"threshold {record['threshold']:.6f} for target FPR {pct(record['target_fpr'])}, "
        f"from {record['n']} clean samples ({record['source']})",
        f"  flags {record['n_flagged']} of them ({pct(record['empirical_fpr'])}); on new clean traffic "
        f"FPR {pct(record['expected_fpr'])} expected, {round(100 * record['confidence'])}% interval "
        f"[{pct(record['fpr_low'])}, {pct(record['fpr_high'])}], P(FPR > target) = {record['p_above_target']:.2f}",
    ]
    if not record["enough_samples"]:
        need = math.ceil(1 / record["target_fpr"]) - 1
        lines.append(f"  WARNING: {record['n']} samples cannot resolve a {pct(record['target_fpr'])} FPR; "
                     f"collect at least {need} (ten times that for a tight interval)")
    return "\n".join(lines)
