"""Detection metrics. Convention throughout: label 1 = adversarial (the positive class), 0 = clean;
the score is a similarity; an item is flagged (predicted adversarial) when score < threshold.
Rates with an empty denominator are 0.0, as in the reference evaluation script."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray


def as_arrays(scores: ArrayLike, labels: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Validated float scores and 0/1 labels of equal length."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel()
    if s.shape != y.shape:
        raise ValueError(f"{s.size} scores but {y.size} labels")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite numbers")
    bad = set(np.unique(y).tolist()) - {0, 1}
    if bad:
        raise ValueError(f"labels must be 0 (clean) or 1 (adversarial), got {sorted(bad)}")
    return s, y.astype(np.int64)


def confusion(scores: ArrayLike, labels: ArrayLike, threshold: float) -> dict[str, Any]:
    """Counts and rates at one threshold: accuracy, tpr, fpr, precision, tp, fp, tn, fn."""
    s, y = as_arrays(scores, labels)
    flagged, adversarial = s < threshold, y == 1
    tp = int(np.sum(flagged & adversarial))
    fp = int(np.sum(flagged & ~adversarial))
    tn = int(np.sum(~flagged & ~adversarial))
    fn = int(np.sum(~flagged & adversarial))
    return {
        "threshold": float(threshold),
        "accuracy": _ratio(tp + tn, s.size),
        "tpr": _ratio(tp, tp + fn),
        "fpr": _ratio(fp, fp + tn),
        "precision": _ratio(tp, tp + fp),
        "tp": tp, "fp": fp, "tn": tn, "fn": fn,
    }


def roc(scores: ArrayLike, labels: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """(fpr, tpr, thresholds) for every distinct operating point, from flagging nothing to
    flagging everything; thresholds[i] flags the items with score < thresholds[i]."""
    tp, fp, n_adv, n_clean, thresholds = roc_counts(scores, labels)
    return fp / max(n_clean, 1), tp / max(n_adv, 1), thresholds


def roc_counts(scores: ArrayLike, labels: ArrayLike) -> tuple[NDArray[np.int64], NDArray[np.int64], int, int,
                                                              NDArray[np.float64]]:
    """(tp, fp, n_adversarial, n_clean, thresholds): exact counts, for ties decided without rounding."""
    s, y = as_arrays(scores, labels)
    thresholds = candidate_thresholds(s)
    # searchsorted(left) counts the scores strictly below each threshold.
    tp = np.searchsorted(np.sort(s[y == 1]), thresholds, side="left")
    fp = np.searchsorted(np.sort(s[y == 0]), thresholds, side="left")
    return tp, fp, int(np.sum(y == 1)), int(np.sum(y == 0)), thresholds


def candidate_thresholds(scores: NDArray[np.float64]) -> NDArray[np.float64]:
    """Every distinct decision: each score value (flags what lies strictly below it), ascending,
    then the next float above the maximum (flags everything)."""
    if scores.size == 0:
        raise ValueError("no scores")
    distinct = np.unique(scores)
    return np.append(distinct, np.nextafter(distinct[-1], np.inf))


def auroc(scores: ArrayLike, labels: ArrayLike) -> float:
    """Probability that a random clean item scores above a random adversarial one (ties count
    half): the area under the ROC curve of flagging low scores."""
    s, y = as_arrays(scores, labels)
    clean, adv = s[y == 0], s[y == 1]
    if clean.size == 0 or adv.size == 0:
        raise ValueError(f"AUROC needs both classes; got {clean.size} clean and {adv.size} adversarial")
    ranks = _average_ranks(s)
    clean_rank_sum = float(np.sum(ranks[y == 0]))
    u = clean_rank_sum - clean.size * (clean.size + 1) / 2  # Mann-Whitney U of clean > adversarial
    return u / (clean.size * adv.size)


def tpr_at_fpr(scores: ArrayLike, labels: ArrayLike, max_fpr: float = 0.01) -> float:
    """The best TPR among thresholds whose FPR does not exceed max_fpr."""
    if not 0 <= max_fpr <= 1:
        raise ValueError(f"max_fpr must be in [0, 1], got {max_fpr}")
    fpr, tpr, _ = roc(scores, labels)
    return float(np.max(tpr[fpr <= max_fpr]))


def summarize(scores: ArrayLike, labels: ArrayLike, threshold: float) -> dict[str, Any]:
    """Everything `streamdetect eval` reports for one threshold."""
    s, y = as_arrays(scores, labels)
    both = bool(np.any(y == 0) and np.any(y == 1))
    return {
        **confusion(s, y, threshold),
        "auroc": auroc(s, y) if both else None,
        "tpr_at_1pct_fpr": tpr_at_fpr(s, y, 0.01) if both else None,
        "n": int(s.size),
        "n_clean": int(np.sum(y == 0)),
        "n_adversarial": int(np.sum(y == 1)),
        "score_clean_mean": float(np.mean(s[y == 0])) if np.any(y == 0) else None,
        "score_adv_mean": float(np.mean(s[y == 1])) if np.any(y == 1) else None,
    }


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


def _average_ranks(values: NDArray[np.float64]) -> NDArray[np.float64]:
    """1-based ranks, ties sharing their average rank."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)  # rank of the last member of each group of equal values
    return (last - (counts - 1) / 2)[inverse]
