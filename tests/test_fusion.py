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
