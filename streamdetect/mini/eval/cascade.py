"""Is the cascade as hard to evade as always regenerating? For every attack run that judged a
cascade and its always-regenerate detector on the same attacked images, the paired difference in
TPR at 1% FPR (on the test clean scores) and in the undetected-success rate (at each detector's
own threshold fitted on clean validation), each with its paired standard error, and how many
attacked images the first stage let through.

A difference is "within noise" when it is no worse than two standard errors; the cascade flags a
subset of what always-regenerate flags only at the same threshold, and each is fitted for its
own FPR here, so it can also come out ahead.
"""

from __future__ import annotations

import math

import numpy as np

from streamdetect.mini.eval.bench import CASCADES

KEY = ("attack", "eps", "targets", "aimed_at")


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
    c, a = cascade["per_image"], always["per_image"]
    hit, moved = np.array(c["hit"], bool), np.array(c["moved"], bool)
    undetected = {name: hit & (np.array(p["score"]) >= row["threshold"])
                  for name, p, row in (("cascade", c, cascade), ("always", a, always))}
    detected = {name: moved & (np.array(p["score"]) < _one_pct(clean_scores[row["method"]]))
                for name, p, row in (("cascade", c, cascade), ("always", a, always))}
    und_diff, und_se = _paired(undetected["cascade"], undetected["always"], np.ones_like(hit))
    tpr_diff, tpr_se = _paired(detected["cascade"], detected["always"], moved)
    exited = np.array(c.get("exited") or [False] * len(hit), bool)
    return {"cascade": method, "always": always["method"], **{k: cascade.get(k) for k in KEY},
            "n": int(hit.size), "n_moved": int(moved.sum()),
            "tpr_at_1pct_fpr": {"cascade": _rate(detected["cascade"], moved), "always": _rate(detected["always"], moved),
                                "difference": tpr_diff, "se": tpr_se},
            "undetected_success_rate": {"cascade": float(undetected["cascade"].mean()),
                                        "always": float(undetected["always"].mean()),
                                        "difference": und_diff, "se": und_se},
            "attacked_exit_rate": float(exited.mean()), "successes_exited": int((exited & hit).sum()),
            "within_noise": und_diff <= 2 * und_se and -tpr_diff <= 2 * tpr_se}


def _one_pct(clean: list[float]) -> float:
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


def _worst(pairs: list[dict]) -> dict:
    """The strongest attack against each side, and the largest loss of the cascade on one attack."""
    def worst(side: str) -> dict:
        p = max(pairs, key=lambda q: q["undetected_success_rate"][side])
        return {k: p.get(k) for k in KEY} | {"undetected_success_rate": p["undetected_success_rate"][side]}
    loss = max(pairs, key=lambda q: q["undetected_success_rate"]["difference"])
    return {"cascade": worst("cascade"), "always": worst("always"),
            "largest_loss": {k: loss.get(k) for k in KEY} | loss["undetected_success_rate"],
            "all_within_noise": all(p["within_noise"] for p in pairs)}
