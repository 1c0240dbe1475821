"""Two detectors on the same attacked scenes, compared image by image: the paired difference in
TPR at 1% FPR (each on its own test clean scores) and in the undetected-success rate (each at its
own threshold fitted on clean validation), each with its paired standard error.

Used for the cascade against always-regenerate in one run (cascade.py), and for two runs of
`mini eval` on the same seed, e.g. 5 Euler steps against 10 (`streamdetect mini compare`).
A difference is "within noise" when the candidate is no worse than two standard errors.
"""

from __future__ import annotations

import math

import numpy as np

KEY = ("attack", "eps", "targets", "aimed_at")


def paired_difference(candidate: dict, candidate_clean: list[float], baseline: dict,
                      baseline_clean: list[float]) -> dict:
    """Rows of `mini eval` (with ``per_image``) for the same attack on the same scenes. Each side's
    rates are over its own attacked images (as the eval table shows them); where the two attacks
    differ (an attack that averages over the generator), the TPR difference is over the images
    both moved."""
    c, b = candidate["per_image"], baseline["per_image"]
    if len(c["hit"]) != len(b["hit"]):
        raise ValueError(f"{candidate['method']} and {baseline['method']} judged {len(c['hit'])} and "
                         f"{len(b['hit'])} attacked images: not the same scenes")
    # An image counts for each side where that side's attack hit (success) or moved the caption.
    hit = {"candidate": np.array(c["hit"], bool), "baseline": np.array(b["hit"], bool)}
    moved = {"candidate": np.array(c["moved"], bool), "baseline": np.array(b["moved"], bool)}
    undetected = {side: hit[side] & (np.array(p["score"]) >= row["threshold"])
                  for side, p, row in (("candidate", c, candidate), ("baseline", b, baseline))}
    detected = {side: moved[side] & (np.array(p["score"]) < one_pct_threshold(clean))
                for side, p, clean in (("candidate", c, candidate_clean), ("baseline", b, baseline_clean))}
    both_moved = moved["candidate"] & moved["baseline"]
    und_diff, und_se = _paired(undetected["candidate"], undetected["baseline"], np.ones_like(both_moved))
    tpr_diff, tpr_se = _paired(detected["candidate"], detected["baseline"], both_moved)
    return {"n": int(both_moved.size), "n_moved": int(both_moved.sum()),
            "tpr_at_1pct_fpr": {"candidate": _rate(detected["candidate"], moved["candidate"]),
                                "baseline": _rate(detected["baseline"], moved["baseline"]),
                                "difference": tpr_diff, "se": tpr_se},
            "undetected_success_rate": {"candidate": float(undetected["candidate"].mean()),
                                        "baseline": float(undetected["baseline"].mean()),
                                        "difference": und_diff, "se": und_se},
            "within_noise": und_diff <= 2 * und_se and -tpr_diff <= 2 * tpr_se}


def compare_runs(candidate: dict, baseline: dict) -> list[dict]:
    """Every (method, attack) row that both `mini eval` results hold, paired image by image."""
    for name, result in (("candidate", candidate), ("baseline", baseline)):
        if "test_clean_scores" not in result.get("validation", {}):
            raise ValueError(f"the {name} result has no validation.test_clean_scores: rerun `mini eval`")
    if candidate["settings"]["seed"] != baseline["settings"]["seed"] or \
            candidate["settings"]["n"] != baseline["settings"]["n"]:
        raise ValueError("the two runs judged different scenes (seed or n differ)")
    rows = {(r["method"], *[r.get(k) for k in KEY]): r for r in baseline["rows"]}
    out = []
    for row in candidate["rows"]:
        key = (row["method"], *[row.get(k) for k in KEY])
        if key not in rows:
            continue
        clean = (candidate["validation"]["test_clean_scores"][row["method"]],
                 baseline["validation"]["test_clean_scores"][row["method"]])
        out.append({"method": row["method"], **{k: row.get(k) for k in KEY},
                    **paired_difference(row, clean[0], rows[key], clean[1])})
    return out


def one_pct_threshold(clean: list[float]) -> float:
    """The threshold flagging at most 1% of these clean scores (flagged: score below it)."""
    ordered = sorted(clean)
    return ordered[min(int(math.floor(0.01 * len(ordered))), len(ordered) - 1)]


def _paired(x: np.ndarray, y: np.ndarray, over: np.ndarray) -> tuple[float, float]:
    """Mean of x - y over the images in ``over``, and its standard error (paired: same images)."""
    d = (x.astype(float) - y.astype(float))[over.astype(bool)]
    if d.size < 2:
        return float(d.mean()) if d.size else 0.0, 0.0
    return float(d.mean()), float(d.std(ddof=1) / math.sqrt(d.size))


def _rate(flags: np.ndarray, over: np.ndarray) -> float | None:
    return float(flags[over].mean()) if over.any() else None
