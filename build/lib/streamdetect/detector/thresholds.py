"""Choosing the decision threshold (flag when score < threshold).

- fixed: a number the operator gives.
- equal_tpr_tnr, youden: fitted on labelled clean and adversarial scores, as the reference
  evaluation script does (its default is equal TPR/TNR).
- target FPR: fitted on clean scores only, for production where no attacks are at hand. The
  threshold is an order statistic of the clean scores, so the false-positive rate it will have
  on new clean traffic is Beta-distributed whatever the score distribution (for i.i.d. traffic
  with continuous scores): that gives an exact confidence interval, reported with it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from streamdetect.detector.metrics import as_arrays, roc_counts

LABELLED_MODES = ("equal_tpr_tnr", "youden")


def fit_labelled(scores: ArrayLike, labels: ArrayLike, mode: str) -> float:
    """Threshold from labelled scores: 'equal_tpr_tnr' (TPR closest to TNR) or 'youden' (max TPR-FPR)."""
    s, y = as_arrays(scores, labels)
    if not (np.any(y == 0) and np.any(y == 1)):
        raise ValueError(f"mode {mode!r} needs clean and adversarial scores; got {np.sum(y == 0)} clean, "
                         f"{np.sum(y == 1)} adversarial")
    tp, fp, n_adv, n_clean, thresholds = roc_counts(s, y)
    # Compare rates exactly, in integers scaled by n_adv * n_clean: float rounding would
    # otherwise break ties between equally good thresholds at random.
    if mode == "equal_tpr_tnr":
        gap = np.abs(tp * n_clean - (n_clean - fp) * n_adv)  # |TPR - TNR|
        # The reference walks sklearn's thresholds from high to low and keeps the first minimum;
        # ours run low to high, so keep the last.
        return float(thresholds[len(gap) - 1 - int(np.argmin(gap[::-1]))])
    if mode == "youden":
        return float(thresholds[int(np.argmax(tp * n_clean - fp * n_adv))])  # first maximum: lowest threshold
    raise ValueError(f"unknown threshold mode {mode!r}; known: {', '.join(LABELLED_MODES)}")


@dataclass(frozen=True)
class FprFit:
    threshold: float
    target_fpr: float
    n: int  # clean samples used
    n_flagged: int  # of those, flagged at the threshold
    empirical_fpr: float  # n_flagged / n
    expected_fpr: float  # mean of the FPR on new clean traffic
    confidence: float
    fpr_low: float  # two-sided confidence interval of the FPR on new clean traffic
    fpr_high: float
    p_above_target: float  # probability that the FPR on new traffic exceeds the target
    enough_samples: bool  # False: too few samples to reach the target even in expectation

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def fit_target_fpr(clean_scores: ArrayLike, target_fpr: float, confidence: float = 0.95) -> FprFit:
    """The threshold whose expected false-positive rate on new clean traffic is at most the target.

    With clean scores sorted s(1) <= ... <= s(n), threshold s(m+1) flags m of them and its FPR on
    new traffic is F(s(m+1)) ~ Beta(m+1, n-m), mean (m+1)/(n+1). The largest m with that mean
    <= target is floor(target * (n+1)) - 1; below n = 1/target - 1 samples no m qualifies and the
    lowest score is used (enough_samples False).
    """
    if not 0 < target_fpr < 1:
        raise ValueError(f"target_fpr must be in (0, 1), got {target_fpr}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    s = np.sort(np.asarray(clean_scores, dtype=np.float64).ravel())
    if s.size == 0:
        raise ValueError("no clean scores to fit a threshold on")
    if not np.all(np.isfinite(s)):
        raise ValueError("clean scores must be finite numbers")
    n = int(s.size)
    m_wanted = math.floor(target_fpr * (n + 1)) - 1
    m = max(m_wanted, 0)
    threshold = float(s[m])
    flagged = int(np.searchsorted(s, threshold, side="left"))  # ties at s(m+1) are not flagged
    from scipy.stats import beta  # scipy comes with scikit-learn; imported late, it is slow

    a, b = m + 1, n - m
    alpha = 1 - confidence
    return FprFit(
        threshold=threshold, target_fpr=target_fpr, n=n, n_flagged=flagged, empirical_fpr=flagged / n,
        expected_fpr=a / (n + 1), confidence=confidence,
        fpr_low=float(beta.ppf(alpha / 2, a, b)), fpr_high=float(beta.ppf(1 - alpha / 2, a, b)),
        p_above_target=float(beta.sf(target_fpr, a, b)), enough_samples=m_wanted >= 0,
    )
