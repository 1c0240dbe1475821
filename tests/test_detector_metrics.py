"""Detection metrics and thresholds: hand-computed cases, scikit-learn on random data, and the
target-FPR fit's statistics checked by simulation."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as sk

from streamdetect.detector.metrics import auroc, confusion, roc, summarize, tpr_at_fpr
from streamdetect.detector.thresholds import fit_labelled, fit_target_fpr

# label 1 = adversarial; flagged when score < threshold
HAND_SCORES = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
HAND_LABELS = [1, 1, 0, 1, 0, 0]


def test_confusion_by_hand() -> None:
    m = confusion(HAND_SCORES, HAND_LABELS, 0.35)  # flags 0.1, 0.2 (adversarial) and 0.3 (clean)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (2, 1, 2, 1)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["tpr"] == pytest.approx(2 / 3) and m["fpr"] == pytest.approx(1 / 3)
    assert m["precision"] == pytest.approx(2 / 3)
    nothing = confusion(HAND_SCORES, HAND_LABELS, 0.1)  # strictly below: flags nothing
    assert (nothing["tp"], nothing["fp"], nothing["precision"]) == (0, 0, 0.0)


def test_auroc_by_hand() -> None:
    # clean 0.3, 0.5, 0.6 vs adversarial 0.1, 0.2, 0.4: clean is higher in 8 of 9 pairs.
    assert auroc(HAND_SCORES, HAND_LABELS) == pytest.approx(8 / 9)
    assert auroc([0.5, 0.5], [0, 1]) == 0.5  # a tie counts half
    assert auroc([0.9, 0.1], [0, 1]) == 1.0


def test_thresholds_by_hand() -> None:
    # Only threshold 0.4 (flag 0.1, 0.2, 0.3) gives TPR 2/3 = TNR 2/3.
    assert fit_labelled(HAND_SCORES, HAND_LABELS, "equal_tpr_tnr") == 0.4
    # Youden J = TPR - FPR is 2/3 at 0.3 (flag 0.1, 0.2) and at 0.5 (flag 0.1..0.4); lowest wins.
    assert fit_labelled(HAND_SCORES, HAND_LABELS, "youden") == 0.3
    fit = fit_target_fpr([i / 100 for i in range(1, 100)], 0.05)  # n = 99
    # m = floor(0.05 * 100) - 1 = 4: threshold s(5) = 0.05 flags 0.01 .. 0.04.
    assert (fit.threshold, fit.n, fit.n_flagged, fit.expected_fpr) == (0.05, 99, 4, 0.05)
    assert fit.fpr_low < 0.05 < fit.fpr_high and fit.enough_samples


def _random(seed: int, n: int = 400, ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    scores = rng.normal(0.7, 0.1, n) - 0.15 * labels
    return (np.round(scores, 2) if ties else scores), labels


@pytest.mark.parametrize("seed, ties", [(0, False), (1, False), (2, True), (3, True)])
def test_metrics_match_scikit_learn(seed: int, ties: bool) -> None:
    scores, labels = _random(seed, ties=ties)
    # sklearn scores "higher = positive"; our positive (adversarial) has the lower similarity.
    assert auroc(scores, labels) == pytest.approx(sk.roc_auc_score(labels, -scores), abs=1e-12)
    fpr, tpr, _ = sk.roc_curve(labels, -scores, drop_intermediate=False)
    assert tpr_at_fpr(scores, labels, 0.01) == pytest.approx(np.max(tpr[fpr <= 0.01]))
    assert tpr_at_fpr(scores, labels, 0.1) == pytest.approx(np.max(tpr[fpr <= 0.1]))
    ours_fpr, ours_tpr, _ = roc(scores, labels)
    assert set(zip(np.round(ours_fpr, 12), np.round(ours_tpr, 12))) == set(zip(np.round(fpr, 12), np.round(tpr, 12)))
    for threshold in np.quantile(scores, [0.1, 0.5, 0.9]):
        pred = (scores < threshold).astype(int)
        m = confusion(scores, labels, threshold)
        tn, fp, fn, tp = sk.confusion_matrix(labels, pred, labels=[0, 1]).ravel()
        assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (tp, fp, tn, fn)
        assert m["accuracy"] == pytest.approx(sk.accuracy_score(labels, pred))
        assert m["tpr"] == pytest.approx(sk.recall_score(labels, pred))
        assert m["precision"] == pytest.approx(sk.precision_score(labels, pred, zero_division=0))


@pytest.mark.parametrize("seed, ties", [(4, False), (5, True), (6, False)])
def test_equal_tpr_tnr_matches_the_reference_rule(seed: int, ties: bool) -> None:
    """The reference: ROC with clean as positive and similarity as score, the point where
    clean TPR is closest to 1 - clean FPR, first along sklearn's (descending) thresholds."""
    scores, labels = _random(seed, n=300, ties=ties)
    fpr_c, tpr_c, thr = sk.roc_curve(labels == 0, scores, drop_intermediate=False)
    expected = thr[int(np.argmin(np.abs(tpr_c - (1.0 - fpr_c))))]
    assert fit_labelled(scores, labels, "equal_tpr_tnr") == pytest.approx(expected)


@pytest.mark.parametrize("seed", [7, 8])
def test_youden_matches_brute_force(seed: int) -> None:
    scores, labels = _random(seed, n=200, ties=True)
    candidates = np.concatenate(([scores.min() - 1e-6], np.unique(scores), [scores.max() + 1e-6]))
    n_adv, n_clean = int(labels.sum()), int((1 - labels).sum())
    # Youden J = TP/P - FP/N, compared exactly as TP*N - FP*P (floats would break ties at random).
    j = [confusion(scores, labels, t)["tp"] * n_clean - confusion(scores, labels, t)["fp"] * n_adv
         for t in candidates]
    best = candidates[int(np.argmax(j))]
    ours = fit_labelled(scores, labels, "youden")
    assert confusion(scores, labels, ours) == {**confusion(scores, labels, best), "threshold": ours}


def test_target_fpr_is_met_on_new_traffic_with_the_stated_confidence() -> None:
    """Uniform clean scores: the true FPR of threshold t is t itself. Over 2000 calibrations of
    199 samples, the mean true FPR is the target and the 90% interval covers it ~90% of the time."""
    rng = np.random.default_rng(0)
    true_fpr, covered = [], 0
    for _ in range(2000):
        fit = fit_target_fpr(rng.uniform(size=199), 0.05, confidence=0.9)
        true_fpr.append(fit.threshold)
        covered += fit.fpr_low <= fit.threshold <= fit.fpr_high
    assert np.mean(true_fpr) == pytest.approx(0.05, abs=0.002)
    assert 0.87 <= covered / 2000 <= 0.93


def test_target_fpr_with_too_few_samples_says_so() -> None:
    fit = fit_target_fpr([0.9, 0.5, 0.7], 0.01)
    assert fit.threshold == 0.5 and fit.n_flagged == 0 and not fit.enough_samples
    assert fit.expected_fpr == pytest.approx(0.25)


def test_summary_and_bad_input() -> None:
    s = summarize(HAND_SCORES, HAND_LABELS, 0.35)
    assert (s["n_clean"], s["n_adversarial"], s["auroc"]) == (3, 3, pytest.approx(8 / 9))
    assert summarize([0.5, 0.6], [0, 0], 0.55)["auroc"] is None  # one class: no AUROC
    with pytest.raises(ValueError, match=r"labels must be 0 \(clean\) or 1 \(adversarial\), got \[2\]"):
        confusion([0.1, 0.2], [0, 2], 0.5)
    with pytest.raises(ValueError, match="2 scores but 3 labels"):
        auroc([0.1, 0.2], [0, 1, 1])
    with pytest.raises(ValueError, match="unknown threshold mode 'median'"):
        fit_labelled(HAND_SCORES, HAND_LABELS, "median")
    with pytest.raises(ValueError, match="target_fpr must be in"):
        fit_target_fpr([0.5], 0.0)
