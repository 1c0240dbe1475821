"""One row of the mini table: how a detector scored clean images against attacked ones.

Positives for AUROC and TPR are the attacked images whose caption the attack moved (an attack
that left the caption alone did the VLM no harm). The undetected-success rate counts, over all
attacked images, those that reached the attacker's goal and scored on the clean side of the
threshold for the target FPR fitted on clean *validation* scenes, never on the test set: the
share of attacks a deployed detector would have let through.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

from streamdetect.detector.metrics import auroc, confusion, tpr_at_fpr
from streamdetect.detector.thresholds import fit_labelled


@dataclass(frozen=True)
class Outcome:
    """What an attack did to each image: moved the caption, reached its goal, and how."""

    moved: list[bool]
    hit: list[bool]
    changes: list[str]  # per image, the attributes its attacked caption changes ("shape+size")


def auroc_se(a: float, n_pos: int, n_neg: int) -> float:
    """Hanley & McNeil (1982) standard error of an AUROC: the noise the floor test allows."""
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a)) / (n_pos * n_neg)
    return math.sqrt(max(var, 0.0))


def detection_row(method: str, attack: str, eps: float, clean: list[float], attacked: list[float],
                  outcome: Outcome, threshold: float | None = None, **labels: object) -> dict:
    moved, hit = outcome.moved, outcome.hit
    positives = [s for s, m in zip(attacked, moved) if m]
    row = {"method": method, "attack": attack, "eps": eps, **labels, "auroc": None, "auroc_se": None,
           "accuracy": None, "tpr_at_1pct_fpr": None, "attack_success_rate": float(np.mean(hit)),
           "caption_changed_rate": float(np.mean(moved)), "n": len(clean) + len(positives),
           "n_clean": len(clean), "n_attacked": len(positives),
           "score_clean_mean": float(np.mean(clean)),
           "score_attacked_mean": float(np.mean(positives)) if positives else None}
    if threshold is not None:
        row.update(undetected_rows(attacked, outcome, clean, threshold))
    if not positives:
        return row  # the attack never moved a caption: nothing to detect
    scores, labels_ = [*clean, *positives], [0] * len(clean) + [1] * len(positives)
    a = auroc(scores, labels_)
    row.update(auroc=a, auroc_se=auroc_se(a, len(positives), len(clean)),
               accuracy=confusion(scores, labels_, fit_labelled(scores, labels_, "equal_tpr_tnr"))["accuracy"],
               tpr_at_1pct_fpr=tpr_at_fpr(scores, labels_, 0.01))
    return row


def undetected_rows(attacked: list[float], outcome: Outcome, clean_test: list[float], threshold: float) -> dict:
    """Flagged means score < threshold (the detector's rule)."""
    undetected = [h and s >= threshold for s, h in zip(attacked, outcome.hit)]
    missed = Counter(c for c, u in zip(outcome.changes, undetected) if u)
    return {"threshold": threshold,
            "undetected_success_rate": float(np.mean(undetected)),
            "clean_fpr_test": float(np.mean([s < threshold for s in clean_test])),
            "undetected_by_change": dict(sorted(missed.items()))}
