"""Is the cascade as hard to evade as always regenerating? For every attack run that judged a
cascade and its always-regenerate detector on the same attacked images, the paired difference in
TPR at 1% FPR (on the test clean scores) and in the undetected-success rate (at each detector's
own threshold fitted on clean validation), each with its paired standard error (paired.py), and
how many attacked images the first stage let through.

A difference is "within noise" when it is no worse than two standard errors; the cascade flags a
subset of what always-regenerate flags only at the same threshold, and each is fitted for its
own FPR here, so it can also come out ahead.
"""

from __future__ import annotations

import numpy as np

from streamdetect.mini.eval.bench import CASCADES
from streamdetect.mini.eval.paired import KEY, paired_difference


def compare_cascades(rows: list[dict], clean_scores: dict[str, list[float]], clean_exits: dict[str, list[bool]],
                     exits: dict[str, float]) -> dict:
    """Pairs of rows (cascade, always-regenerate) on the same attack, and the worst cases."""
    by_key = {(tuple(r.get(k) for k in KEY), r["method"]): r for r in rows}
    pairs = []
    for (key, method), row in by_key.items():
        if method not in CASCADES or (key, CASCADES[method][1]) not in by_key:
            continue
        always = by_key[(key, CASCADES[method][1])]
        pairs.append(_pair(method, row, always, clean_scores))
    return {"exit_thresholds": exits,
            "clean_exit_rate": {m: float(np.mean(e)) for m, e in clean_exits.items()},
            "pairs": pairs, "worst": {m: _worst([p for p in pairs if p["cascade"] == m]) for m in CASCADES
                                      if any(p["cascade"] == m for p in pairs)}}


def _pair(method: str, cascade: dict, always: dict, clean_scores: dict[str, list[float]]) -> dict:
    paired = paired_difference(cascade, clean_scores[cascade["method"]], always, clean_scores[always["method"]])
    for metric in ("tpr_at_1pct_fpr", "undetected_success_rate"):
        sides = paired[metric]
        paired[metric] = {"cascade": sides["candidate"], "always": sides["baseline"],
                          "difference": sides["difference"], "se": sides["se"]}
    hit = np.array(cascade["per_image"]["hit"], bool)
    exited = np.array(cascade["per_image"].get("exited") or [False] * len(hit), bool)
    return {"cascade": method, "always": always["method"], **{k: cascade.get(k) for k in KEY}, **paired,
            "attacked_exit_rate": float(exited.mean()), "successes_exited": int((exited & hit).sum())}


def _worst(pairs: list[dict]) -> dict:
    """The strongest attack against each side, and the largest loss of the cascade on one attack."""
    def worst(side: str) -> dict:
        p = max(pairs, key=lambda q: q["undetected_success_rate"][side])
        return {k: p.get(k) for k in KEY} | {"undetected_success_rate": p["undetected_success_rate"][side]}
    loss = max(pairs, key=lambda q: q["undetected_success_rate"]["difference"])
    return {"cascade": worst("cascade"), "always": worst("always"),
            "largest_loss": {k: loss.get(k) for k in KEY} | loss["undetected_success_rate"],
            "all_within_noise": all(p["within_noise"] for p in pairs)}
