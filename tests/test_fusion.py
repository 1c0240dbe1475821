"""Signals fused by a rule fitted on clean samples only: the FPR asked for is the FPR got."""

from __future__ import annotations

import math

import numpy as np
import pytest

from streamdetect.detector.fusion import MinZFusion
from streamdetect.detector.thresholds import fit_target_fpr


def test_fused_score_is_the_worst_standardised_signal() -> None:
    fusion = MinZFusion.fit({"a": [0.9, 1.1], "b": [10.0, 30.0]})
    # a: mean 1.0, std 0.1414; b: mean 20, std 14.14
    assert fusion.score({"a": 1.0, "b": 20.0 - 2 * 14.142135}) == pytest.approx(-2.0, abs=1e-4)
    assert fusion.score({"a": 1.0 - 0.1414214, "b": 40.0}) == pytest.approx(-1.0, abs=1e-4)


def test_a_threshold_fitted_on_clean_fused_scores_keeps_its_fpr_on_new_clean_samples() -> None:
    rng = np.random.default_rng(0)
    clean = {"mirror": rng.normal(0.9, 0.03, 2000), "margin": rng.normal(0.05, 0.2, 2000)}
    fusion = MinZFusion.fit({k: v[:1000].tolist() for k, v in clean.items()})
    calibration = fusion.scores({k: v[:1000].tolist() for k, v in clean.items()})
    threshold = fit_target_fpr(calibration, 0.05).threshold
    new = fusion.scores({k: v[1000:].tolist() for k, v in clean.items()})
    fpr = float(np.mean(np.array(new) < threshold))
    assert abs(fpr - 0.05) < 3 * math.sqrt(0.05 * 0.95 / 1000), fpr


def test_fusion_refuses_what_it_cannot_judge() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        MinZFusion.fit({"a": [1.0]})
    with pytest.raises(ValueError, match="finite"):
        MinZFusion.fit({"a": [1.0, float("nan")]})
    fusion = MinZFusion.fit({"a": [0.0, 1.0], "b": [0.0, 1.0]})
    with pytest.raises(ValueError, match=r"\['b'\]"):
        fusion.score({"a": 0.5})
    with pytest.raises(ValueError, match="non-finite"):
        fusion.score({"a": 0.5, "b": float("nan")})  # a NaN is never a clean verdict
    assert MinZFusion.fit({"a": [2.0, 2.0]}).score({"a": 1.0}) < -1e5  # constant on clean: any drop is far


def test_fusion_rules_are_fitted_on_validation_and_scored_on_the_attacked_rows() -> None:
    from streamdetect.mini.eval.fusion_rules import fusion_rules

    rng = np.random.default_rng(2)
    clean = lambda: {"robust": rng.normal(0.95, 0.01, 200).tolist(), "robust_margin": rng.normal(0.1, 0.05, 200).tolist()}  # noqa: E731
    validation, test = clean(), clean()
    # attacked: the margin sees every attack, robust MirrorCheck none of them
    per_image = {"robust": rng.normal(0.95, 0.01, 50).tolist(), "robust_margin": rng.normal(-0.5, 0.05, 50).tolist()}
    rows = [{"method": m, "attack": "easiest", "eps": 8.0, "targets": "easiest", "aimed_at": "robust",
             "per_image": {"score": per_image[m], "hit": [True] * 50, "moved": [True] * 50}} for m in per_image]
    result = {"validation": {"scores": validation, "test_clean_scores": test, "fpr": 0.05}, "rows": rows}
    by_rule = {r["rule"]: r for r in fusion_rules(result)}
    assert by_rule["margin only"]["undetected_success_rate"] == 0.0 and by_rule["margin only"]["auroc"] == 1.0
    assert by_rule["robust only"]["undetected_success_rate"] > 0.8  # blind to these attacks
    assert by_rule["min"]["undetected_success_rate"] == 0.0
    assert all(abs(r["clean_fpr_test"] - 0.05) < 0.05 for r in by_rule.values())
