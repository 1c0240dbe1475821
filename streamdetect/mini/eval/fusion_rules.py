"""`streamdetect mini fusions`: other rules for fusing robust MirrorCheck and the caption margin,
scored from a `mini eval` JSON's per-image scores without rerunning the attacks.

Each rule is fitted on the run's clean validation scores only (z-scores, then the threshold for
the run's FPR) and applied to its clean test scores and to the attacked images of every row
aimed at the robust detectors. The attacks were aimed at the signals, not at these rules, so a
rule scored here has not met an attacker that optimised against it exactly.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from streamdetect.detector.metrics import auroc
from streamdetect.detector.thresholds import fit_target_fpr

SIGNALS = ("robust", "robust_margin")
Rule = Callable[[np.ndarray, np.ndarray], np.ndarray]
RULES: dict[str, Rule] = {
    "min": np.minimum,
    "mean": lambda a, b: (a + b) / 2,
    "robust only": lambda a, b: a,
    "margin only": lambda a, b: b,
}


def fusion_rules(result: dict) -> list[dict]:
    validation, test = result["validation"]["scores"], result["validation"]["test_clean_scores"]
    if any(k not in validation for k in SIGNALS):
        raise ValueError(f"the eval JSON has no validation scores for {SIGNALS}: run mini eval with those methods")
    stats = {k: (np.mean(validation[k]), np.std(validation[k], ddof=1)) for k in SIGNALS}

    def z(scores: dict) -> tuple[np.ndarray, np.ndarray]:
        a, b = ((np.asarray(scores[k]) - stats[k][0]) / stats[k][1] for k in SIGNALS)
        return a, b

    out = []
    groups: dict[tuple, dict] = {}
    for r in result["rows"]:
        if r["method"] in SIGNALS and r.get("per_image") and (r.get("aimed_at") in (None, "robust")):
            groups.setdefault((r["attack"], r["eps"], r.get("targets"), r.get("aimed_at")), {})[r["method"]] = r
    for (attack, eps, targets, aimed), rows in sorted(groups.items(), key=str):
        if set(rows) != set(SIGNALS):
            continue
        hit = np.asarray(rows["robust"]["per_image"]["hit"])
        moved = np.asarray(rows["robust"]["per_image"]["moved"])
        attacked = {k: rows[k]["per_image"]["score"] for k in SIGNALS}
        for name, rule in RULES.items():
            threshold = fit_target_fpr(rule(*z(validation)), result["validation"]["fpr"]).threshold
            clean, adv = rule(*z(test)), rule(*z(attacked))
            positives = adv[moved]
            out.append({"attack": attack, "eps": eps, "targets": targets, "aimed_at": aimed, "rule": name,
                        "auroc": auroc([*clean, *positives], [0] * len(clean) + [1] * len(positives))
                        if len(positives) else None,
                        "undetected_success_rate": float(np.mean(hit & (adv >= threshold))),
                        "clean_fpr_test": float(np.mean(clean < threshold))})
    return out
