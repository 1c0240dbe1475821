"""The threshold file: what `streamdetect calibrate` writes and the worker reads at start.

A record holds the fitted threshold, the fit's statistics (detector/thresholds.py), the
fingerprint of the configuration it was fitted for (mode, models, k, noise scale) and where its
clean scores came from. A worker refuses a file fitted for another configuration.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from streamdetect.detector.thresholds import fit_target_fpr

FORMAT_VERSION = 1


class ThresholdFileError(ValueError):
    """The threshold file is missing, unreadable, or fitted for another configuration."""


def fit_record(scores: list[float], target_fpr: float, confidence: float, fingerprint: dict[str, Any],
               source: str) -> dict[str, Any]:
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
        raise ThresholdFileError(f"setting threshold_file={str(path)!r}: no such file; run `streamdetect calibrate` "
                          f"to write it, or unset threshold_file to use threshold") from exc
    except (OSError, ValueError) as exc:
        raise ThresholdFileError(f"setting threshold_file={str(path)!r}: not a readable calibration: {exc}") from exc
    threshold = record.get("threshold") if isinstance(record, dict) else None
    if record.get("format") != FORMAT_VERSION or not isinstance(threshold, (int, float)) \
            or not -1 <= threshold <= 1:
        raise ThresholdFileError(f"setting threshold_file={str(path)!r}: not a calibration written by "
                          f"`streamdetect calibrate` (format {FORMAT_VERSION}, threshold in [-1, 1])")
    fitted_for = record.get("fingerprint")
    if fitted_for != fingerprint:
        differ = sorted(k for k in fingerprint if (fitted_for or {}).get(k) != fingerprint[k])
        raise ThresholdFileError(f"setting threshold_file={str(path)!r} was fitted for another configuration "
                          f"(differs in {differ}); re-run `streamdetect calibrate` with the settings in use")
    return float(threshold)


def cascade_record(agreements: list[float], exit_share: float, mode: str = "agreement",
                   vocabulary: str | None = None) -> dict[str, Any]:
    """The cascade section of a threshold file: the exit threshold fitted on clean first-stage
    scores (caption agreements or margins, as ``mode`` says; for swap, of the captions it could
    check, under the vocabulary with this fingerprint)."""
    from streamdetect.detector.cascade import fit_exit

    threshold = fit_exit(agreements, exit_share)
    exited = sum(a >= threshold for a in agreements)
    record = {"mode": mode, "exit_threshold": threshold, "exit_share": exit_share, "n": len(agreements),
              "exited_on_fit": exited / len(agreements)}
    return record if vocabulary is None else record | {"vocabulary": vocabulary}


def read_cascade(path: str | Path, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
    """The cascade section of a calibration file fitted for ``fingerprint`` (None when it has none)."""
    read_threshold(path, fingerprint)  # the same checks: present, readable, this configuration
    section = json.loads(Path(path).read_text()).get("cascade")
    if section is None:
        return None
    value = section.get("exit_threshold") if isinstance(section, dict) else None
    if not isinstance(value, (int, float)) or not -1 <= value <= 1:
        raise ThresholdFileError(f"setting threshold_file={str(path)!r}: its cascade section has no exit_threshold "
                                 f"in [-1, 1]")
    return section


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
    cascade = record.get("cascade")
    if cascade:
        lines.append(f"  cascade: exit clean at caption agreement >= {cascade['exit_threshold']:.6f}, which "
                     f"{pct(cascade['exited_on_fit'])} of {cascade['n']} clean samples reach "
                     f"(budget {pct(cascade['exit_share'])})")
    if not record["enough_samples"]:
        need = math.ceil(1 / record["target_fpr"]) - 1
        lines.append(f"  WARNING: {record['n']} samples cannot resolve a {pct(record['target_fpr'])} FPR; "
                     f"collect at least {need} (ten times that for a tight interval)")
    return "\n".join(lines)
