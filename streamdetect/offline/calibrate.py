"""Fit the worker's threshold to a target false-positive rate on clean traffic only.

Scores come from the audit log (JSON lines as `streamdetect replay` prints them; production
traffic is overwhelmingly clean, and any attack in it only makes the fit more cautious) or from
a folder of clean images run through the configured detector. Only verdicts made with the
configuration in use count (same mode, models, k and noise scale); replays of one upload count
once. The fit and its confidence (see detector/thresholds.py) go to the threshold file
(detector/threshold_file.py), which the worker reads at start when ``threshold_file`` is set.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from streamdetect.settings import Settings


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


def audit_file_scores(path: str, fp: dict[str, Any]) -> tuple[list[float], str]:
    """Clean scores from an audit log file (``-`` for stdin), and a line saying what was used."""
    if path == "-":
        found = audit_scores(sys.stdin, fp)
    else:
        with open(path) as f:
            found = audit_scores(f, fp)
    source = (f"audit {path}: {found.lines} records, {len(found.scores)} used, {found.other_config} from "
              f"another configuration, {found.duplicates} replays, {found.unreadable} unreadable")
    return found.scores, source


def clean_folder_scores(settings: Settings, folder: Path, recursive: bool, max_samples: int | None,
                        progress: Callable[[int], None] = lambda n: None) -> tuple[list[float], str]:
    """Clean scores from a folder of images run through the configured detector."""
    from streamdetect.app.detector_config import load_detector_models, stochastic_settings
    from streamdetect.offline.items import EvalItem, image_files
    from streamdetect.offline.scoring import RunOptions, score_items

    files = image_files(folder, recursive)[:max_samples]
    items = [EvalItem(f"clean/{f.relative_to(folder).as_posix()}", f, 0) for f in files]
    if not items:
        raise ValueError(f"no images in {folder}")
    models = load_detector_models(settings)
    scored = score_items(items, models, stochastic_settings(settings), RunOptions(seed=settings.seed,
                         batch=settings.max_batch), progress)
    return [s.score for s in scored], f"folder {folder}: {len(scored)} images"
