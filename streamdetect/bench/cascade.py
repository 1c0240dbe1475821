"""What the cascade saves on a realistic stream: mostly clean mini scenes with a few PGD-attacked
ones, judged by the engine always regenerating and by the cascade, on the same models, in one
run. Reports throughput (and its ratio), the share of uploads that skipped regeneration, and
detection on that stream (attacks flagged, clean flagged), for each exit budget.

Thresholds are fitted as an operator would: on clean validation scenes, MirrorCheck's for the
target FPR (on the cascade's own scores for the cascade, so both are held to the same FPR) and
the cascade's exit for its budget.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from streamdetect.settings import Settings


@dataclass(frozen=True)
class CascadeBench:
    n: int = 300  # uploads in the stream
    attacked_share: float = 0.01
    budgets: tuple[float, ...] = (0.8, 0.9, 0.95)  # exit shares of clean validation traffic
    first_stages: tuple[str, ...] = ("agreement", "margin", "swap")
    n_val: int = 100  # clean validation scenes the thresholds are fitted on
    target_fpr: float = 0.02
    eps: float = 8.0
    seed: int = 0


def stream(models: Any, config: CascadeBench) -> tuple[list[Image.Image], list[bool]]:
    """The uploads in arrival order and which are attacked (PGD toward a wrong caption)."""
    from streamdetect.mini.attacks import PGDSettings, WhiteBoxCaptioner, pgd_attack
    from streamdetect.mini.domain import make_split, to_images, to_tensor, wrong_caption

    images, scenes = make_split(config.seed, "test", config.n)
    n_attacked = max(1, round(config.n * config.attacked_share))
    rng = np.random.default_rng([config.seed, 14])
    chosen = sorted(rng.choice(config.n, n_attacked, replace=False).tolist())
    targets = [wrong_caption(scenes[i], rng) for i in chosen]
    attacked = to_images(pgd_attack(WhiteBoxCaptioner(models.captioner), to_tensor([images[i] for i in chosen]),
                                    targets, PGDSettings(config.eps)))
    is_attacked = [False] * config.n
    for i, image in zip(chosen, attacked):
        images[i], is_attacked[i] = image, True
    return images, is_attacked


def fit(models: Any, config: CascadeBench) -> dict[str, Any]:
    """Clean validation scores of both signals, and the thresholds of each detector."""
    from streamdetect.detector import (RIVALS, agreement, agreement_scores, fit_exit, load_swaps, margin_scores,
                                       score_pairs)
    from streamdetect.detector.cascade import can_exit, cascade_score
    from streamdetect.detector.mirrorcheck import ensemble_score
    from streamdetect.detector.thresholds import fit_target_fpr
    from streamdetect.mini.domain import make_split

    images = make_split(config.seed, "val", config.n_val)[0]
    captions = models.captioner.caption(images)
    regenerated = models.generator.generate(captions, list(range(len(images))))
    mirror = [ensemble_score(s) for s in score_pairs(models.encoders, images, regenerated)]
    swaps = load_swaps("mini")
    first = {"agreement": lambda: agreement_scores(models.encoders, images, captions),
             "margin": lambda: margin_scores(models.encoders, images, captions,
                                             models.captioner.rivals(images, captions, RIVALS)),
             "swap": lambda: margin_scores(models.encoders, images, captions, [swaps.rivals(c) for c in captions])}
    out: dict[str, Any] = {"always": {"threshold": fit_target_fpr(mirror, config.target_fpr).threshold}}
    for kind in config.first_stages:
        unchecked = [swaps.unchecked(c) if kind == "swap" else None for c in captions]
        agreed = [a if can_exit(kind, a, u) else -float("inf")  # never exits: no sample of the fit
                  for a, u in zip((agreement(s) for s in first[kind]()), unchecked)]
        for budget in config.budgets:
            exit_at = fit_exit([a for a in agreed if a > -float("inf")], budget)
            mixed = [cascade_score(a, m, exit_at) for a, m in zip(agreed, mirror)]
            out[f"{kind}_{budget:g}"] = {"threshold": fit_target_fpr(mixed, config.target_fpr).threshold,
                                         "exit_threshold": exit_at, "exit_share": budget, "first_stage": kind}
    return out


async def judge(models: Any, images: list[Image.Image], fitted: dict[str, Any], settings: Settings) -> dict:
    """One detector over the whole stream, submitted at once: wall time and each verdict."""
    from streamdetect.app.wiring import stage_settings
    from streamdetect.detector import CascadeSettings, load_swaps
    from streamdetect.pipeline.engine import Pipeline, Request

    swaps = load_swaps("mini") if fitted.get("first_stage") == "swap" else None
    cascade = CascadeSettings(fitted["exit_threshold"], fitted["exit_share"], fitted["first_stage"], swaps) \
        if "exit_threshold" in fitted else None
    pipeline = Pipeline(models.captioner, models.generator, models.encoders, threshold=fitted["threshold"],
                        batching=stage_settings(settings), cascade=cascade)
    try:
        await asyncio.gather(*(pipeline.submit(Request(upload_id=f"warm-{i}", image=im, seed=i))
                               for i, im in enumerate(images[:8])))
        start = time.perf_counter()
        verdicts = await asyncio.gather(*(pipeline.submit(Request(upload_id=f"u{i}", image=im, seed=i))
                                          for i, im in enumerate(images)))
        return {"seconds": time.perf_counter() - start, "verdicts": verdicts}
    finally:
        await pipeline.close()


def summarise(name: str, judged: dict, attacked: list[bool], baseline_s: float | None) -> dict[str, Any]:
    verdicts, flags = judged["verdicts"], np.array(attacked)
    flagged = np.array([v.flagged for v in verdicts])
    skipped = np.array([v.decided_by == "first_stage" for v in verdicts])
    return {"detector": name, "uploads": len(verdicts), "images_per_s": len(verdicts) / judged["seconds"],
            "speedup": None if baseline_s is None else baseline_s / judged["seconds"],
            "skipped_regeneration": float(skipped.mean()),
            "attacks": int(flags.sum()), "attacks_flagged": int((flagged & flags).sum()),
            "attacks_skipped": int((skipped & flags).sum()),
            "clean_flagged_rate": float(flagged[~flags].mean())}


def run_cascade_bench(settings: Settings, config: CascadeBench = CascadeBench()) -> dict[str, Any]:
    """Always-regenerate first, then the cascade at each budget, on one stream and one set of models."""
    from streamdetect.app.wiring import load_profile_models

    models = load_profile_models(settings)
    images, attacked = stream(models, config)
    fitted = fit(models, config)
    rows, baseline = [], None
    for name, thresholds in fitted.items():
        judged = asyncio.run(judge(models, images, thresholds, settings))
        baseline = baseline or judged["seconds"]
        rows.append({**summarise(name, judged, attacked, baseline), **thresholds})
    return {"profile": settings.profile, "config": config.__dict__, "rows": rows}


def format_cascade(result: dict[str, Any]) -> str:
    lines = [f"cascade bench: profile {result['profile']}, {result['config']['n']} uploads, "
             f"{result['config']['attacked_share']:.0%} attacked (eps {result['config']['eps']:g} PGD)",
             f"{'detector':16} {'images/s':>9} {'speedup':>8} {'skipped':>8} {'attacks flagged':>16} {'clean FPR':>10}"]
    for r in result["rows"]:
        lines.append(f"{r['detector']:16} {r['images_per_s']:9.2f} {r['speedup']:8.2f} {r['skipped_regeneration']:8.1%}"
                     f" {r['attacks_flagged']:>8}/{r['attacks']:<7} {r['clean_flagged_rate']:10.1%}")
    return "\n".join(lines)
