"""`streamdetect mini eval`: the paper's detection table in miniature, on the mini models, with
the attacks that break MirrorCheck and the defences measured against them (README, "Defences
against adaptive attacks").

For every attack, target set and eps, attacked copies of n clean test images are judged by every
detector (bench.METHODS); adaptive attacks are aimed at one group of detectors at a time and
judged only by it. Each row gives AUROC, accuracy at the equal TPR/TNR threshold, TPR at 1% FPR
and the undetected-success rate at the threshold for `fpr` (5%) fitted on clean validation
scenes (rows.py), with the clean FPR that threshold gives on the test scenes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from streamdetect.detector.mirrorcheck import ensemble_score, score_pairs
from streamdetect.detector.stochastic import perturbed
from streamdetect.detector.thresholds import fit_target_fpr
from streamdetect.mini import DEFAULT_METHODS
from streamdetect.mini.attacks import ATTACKS, PGDSettings
from streamdetect.mini.domain import TARGET_SETS, Scene, changed_attributes, make_split, to_images, \
    to_tensor, wrong_caption
from streamdetect.mini.eval.bench import (AIMED, CASCADES, COMPARED, METHODS, BenchSettings, Judged, MiniBench,
                                         easiest_targets)
from streamdetect.mini.eval.cascade import compare_cascades
from streamdetect.mini.eval.rows import Outcome, detection_row
from streamdetect.mini.eval.zero_shot import zero_shot
from streamdetect.mini.train.robust import ROBUST
from streamdetect.models.generator import Generator
from streamdetect.models.profiles import MINI_ENCODERS, MINI_WEIGHTS

__all__ = ["EvalSettings", "MiniBench", "run_eval", "steps_sweep"]
TARGETED = ("pgd", "transfer", "adaptive")
ADAPTIVE = ("adaptive", "easiest", "weakest")
VALIDATION_DRAWS = 500_000  # stochastic draw seeds of validation scenes: apart from the test ones
Log = Callable[[str], None]


@dataclass(frozen=True)
class EvalSettings:
    n: int = 100
    n_val: int = 0  # clean validation scenes for the thresholds and the fusion; 0: as many as n
    seed: int = 0
    eps: tuple[float, ...] = (4.0, 8.0, 16.0)
    attacks: tuple[str, ...] = ATTACKS
    methods: tuple[str, ...] = DEFAULT_METHODS
    targets: tuple[str, ...] = ("one",)
    fpr: float = 0.05
    attack_steps: int = 60
    adaptive_weight: float = 2.0
    stochastic_k: int = 2
    noise_scale: float = 1e-3
    eot_samples: int = 2
    mutations: int = 6
    target_generations: int = 4
    cascade_exit_share: float = 0.8
    euler_steps: int = 0  # 0: the profile's own step count
    steps_sweep: tuple[int, ...] = (1, 2, 5, 10, 20)

    def __post_init__(self) -> None:
        if self.n < 2:
            raise ValueError(f"n={self.n}: need at least 2 images")
        for name, values, known in (("attacks", self.attacks, ATTACKS), ("methods", self.methods, METHODS),
                                    ("targets", self.targets, tuple(TARGET_SETS))):
            unknown = sorted(set(values) - set(known))
            if unknown:
                raise ValueError(f"unknown {name} {unknown}; expected some of {', '.join(known)}")
        for eps in self.eps:
            PGDSettings(eps)  # validates
        if self.euler_steps < 0:
            raise ValueError(f"euler_steps={self.euler_steps}: expected >= 1, or 0 for the profile's own")
        if any(s < 1 for s in self.steps_sweep):
            raise ValueError(f"steps_sweep {self.steps_sweep}: every entry must be >= 1")
        if not 0 < self.fpr < 0.5:
            raise ValueError(f"fpr={self.fpr}: expected in (0, 0.5)")
        if self.validation_size * self.fpr < 1:
            raise ValueError(f"{self.validation_size} validation scenes cannot fit a threshold for FPR {self.fpr}")

    @property
    def validation_size(self) -> int:
        return self.n_val or self.n

    def bench(self) -> BenchSettings:
        names = {f.name for f in fields(BenchSettings)}
        return BenchSettings(**{k: v for k, v in asdict(self).items() if k in names})


@dataclass
class Clean:
    """The clean test images as every detector judged them, and the validation thresholds."""

    x: torch.Tensor
    scenes: list[Scene]
    judged: Judged
    thresholds: dict[str, float]


def run_eval(settings: EvalSettings, log: Log, weights: Path = MINI_WEIGHTS,
             private_weights: Path | None = None) -> dict:
    if {"private", "private_margin"} & set(settings.methods) and private_weights is None:
        raise ValueError("methods private and private_margin need --private-weights: robust encoders trained "
                         "from a private seed")
    bench = MiniBench(settings.bench(), weights, private_weights)
    clean, validation = _clean(bench, settings, log)
    quality = model_quality(bench, clean)
    log(f"captioner accuracy {quality['captioner_accuracy']:.3f}, "
        f"generator accuracy {quality['generator_accuracy']:.3f}")
    rows: list[dict] = []
    untargeted: dict[float, list[str]] = {}
    pgd_sets: dict[float, tuple[torch.Tensor, Judged, Outcome]] = {}
    for eps in settings.eps:
        for attack in settings.attacks:
            rows += _attack_rows(bench, settings, attack, eps, clean, untargeted, pgd_sets, log)
    result = {"rows": rows, "models": quality, "settings": asdict(settings), "validation": validation}
    if set(settings.methods) & set(CASCADES):
        result["cascade"] = compare_cascades(rows, clean.judged.scores, clean.judged.exits, bench.exits)
    if 8.0 in pgd_sets and "mirrorcheck" in settings.methods and settings.steps_sweep:
        result["steps"] = steps_sweep(bench, clean, pgd_sets[8.0], settings.steps_sweep, log)
    return result


def _clean(bench: MiniBench, settings: EvalSettings, log: Log) -> tuple[Clean, dict]:
    methods = settings.methods
    log(f"judging {settings.validation_size} clean validation scenes")
    val_x = to_tensor(make_split(settings.seed, "val", settings.validation_size)[0])
    val = bench.judge(val_x, methods, draw_offset=VALIDATION_DRAWS)
    if "fused" in methods:
        bench.fit_fusion(val)
    bench.fit_exits(val)
    fits = {m: fit_target_fpr(val.scores[m], settings.fpr) for m in methods}
    log(f"judging {settings.n} clean test images")
    images, scenes = make_split(settings.seed, "test", settings.n)
    x = to_tensor(images)
    judged = bench.judge(x, methods)
    validation = {"n": settings.validation_size, "fpr": settings.fpr, "cascade_exits": dict(bench.exits),
                  "thresholds": {m: f.threshold for m, f in fits.items()}, "scores": val.scores,
                  "test_clean_scores": judged.scores,
                  "fusion": ({k: asdict(v) for k, v in bench.fusion.signals.items()} if bench.fusion else None)}
    return Clean(x, scenes, judged, {m: f.threshold for m, f in fits.items()}), validation


def _targets(settings: EvalSettings, scenes: list[Scene], target_set: str) -> list[str]:
    # "one" keeps the seed stream the suite has always used; other sets get their own.
    key = [settings.seed, 7] if target_set == "one" else [settings.seed, 7, list(TARGET_SETS).index(target_set)]
    rng = np.random.default_rng(key)
    return [wrong_caption(s, rng, target_set) for s in scenes]


def _runs(settings: EvalSettings, attack: str) -> list[tuple[str, str | None]]:
    """(target set, aim) pairs an attack is run with."""
    target_sets = settings.targets if attack in TARGETED else (attack if attack in ADAPTIVE else "none",)
    aims = [a for a, judged in AIMED.items() if (set(COMPARED[a]) & set(settings.methods) if a in COMPARED
                                                 else set(judged) & set(settings.methods))] \
        if attack in ADAPTIVE else [None]
    return [(t, a) for t in target_sets for a in aims]


def _attack_rows(bench: MiniBench, settings: EvalSettings, attack: str, eps: float, clean: Clean, untargeted: dict,
                 pgd_sets: dict, log: Log) -> list[dict]:
    rows = []
    for target_set, aim in _runs(settings, attack):
        start = time.monotonic()
        targets, extra = _goal(bench, settings, attack, eps, clean, target_set, untargeted, log, aim)
        adv = bench.attack(attack, clean.x, targets, eps, aim or "public", clean_captions=clean.judged.captions)
        methods = tuple(m for m in settings.methods if aim is None or m in AIMED[aim])
        judged = bench.judge(adv, methods)
        outcome = _outcome(judged.captions, clean, targets if attack != "untargeted" else None)
        if attack == "untargeted":
            untargeted[eps] = judged.captions
        if attack == "pgd" and target_set == "one":
            pgd_sets[eps] = (adv, judged, outcome)
        log(f"{attack} [{target_set}{', aimed at ' + aim if aim else ''}] eps {eps:g}/255: success "
            f"{np.mean(outcome.hit):.2f}, caption changed {np.mean(outcome.moved):.2f} "
            f"({time.monotonic() - start:.0f}s)")
        for method in methods:
            row = detection_row(method, attack, eps, clean.judged.scores[method], judged.scores[method],
                                outcome, clean.thresholds[method], targets=target_set, aimed_at=aim, **extra)
            # Per image, so fusion rules and thresholds can be studied without rerunning attacks.
            row["per_image"] = {"score": judged.scores[method], "hit": outcome.hit, "moved": outcome.moved,
                                                "caption": judged.captions, "target": targets or None,
                                **({"exited": judged.exits[method]} if method in judged.exits else {})}
            if method in judged.exits:
                row["first_stage_exit_rate"] = float(np.mean(judged.exits[method]))
            rows.append(row)
    return rows


def _goal(bench: MiniBench, settings: EvalSettings, attack: str, eps: float, clean: Clean, target_set: str,
          untargeted: dict, log: Log, aim: str | None = None) -> tuple[list[str], dict]:
    if attack == "untargeted":
        return [], {}
    if attack == "weakest":
        return bench.weakest_targets(clean.x, clean.judged.captions, aim or "public"), {}
    if attack != "easiest":
        return _targets(settings, clean.scenes, target_set), {}
    if eps not in untargeted:
        log(f"easiest: running the untargeted search at eps {eps:g} first")
        adv = bench.attack("untargeted", clean.x, [], eps, clean_captions=clean.judged.captions)
        untargeted[eps] = bench.caption(adv)
    targets = easiest_targets(untargeted[eps], clean.judged.captions, _targets(settings, clean.scenes, "one"))
    return targets, {"target_from_untargeted_rate": float(np.mean([a == b for a, b in zip(targets, untargeted[eps])]))}


def _outcome(captions: list[str], clean: Clean, targets: list[str] | None) -> Outcome:
    moved = [c != k for c, k in zip(captions, clean.judged.captions)]
    hit = moved if targets is None else [c == t for c, t in zip(captions, targets)]
    changes = []
    for c, scene in zip(captions, clean.scenes):
        changed = changed_attributes(c, scene)
        changes.append("off-domain" if changed is None else "+".join(changed) or "none")
    return Outcome(moved, hit, changes)


def model_quality(bench: MiniBench, clean: Clean) -> dict:
    """Captioner exact-caption accuracy on clean test images; the generator's accuracy as the
    captioner's exact-caption accuracy on images generated from the true captions; every
    encoder's clean and robust (eps 8) zero-shot accuracy."""
    truth = [s.caption for s in clean.scenes]
    generated = bench.regenerate(bench.models.generator, truth)
    gen_captions = bench.models.captioner.caption(generated)
    encoders = {name: zero_shot(clip, clean.x, clean.scenes)
                for name, clip in zip([*MINI_ENCODERS, *ROBUST], [*bench.clips, *bench.robust_clips])}
    for enc, clip in zip(bench.private, bench.private_clips):
        encoders[f"private/{enc.name}"] = zero_shot(clip, clean.x, clean.scenes)
    return {"captioner_accuracy": float(np.mean([c == t for c, t in zip(clean.judged.captions, truth)])),
            "generator_accuracy": float(np.mean([c == t for c, t in zip(gen_captions, truth)])),
            "n": len(truth), "encoders_zero_shot": encoders,
            "stochastic_noise_cosine": noise_cosine(bench, clean.x)}


def noise_cosine(bench: MiniBench, x: torch.Tensor) -> dict[str, float]:
    """How far the stochastic variant's weight noise moves each public encoder's embeddings:
    mean cosine between perturbed and unperturbed embeddings of the clean test images."""
    scale = bench.settings.noise_scale
    out = {}
    for i, clip in enumerate(bench.clips):
        with torch.no_grad():
            plain = clip.embed(x)
            with perturbed(clip.model.visual, 1234 + i, scale):
                noisy = clip.embed(x)
        out[MINI_ENCODERS[i]] = float((plain * noisy).sum(-1).mean())
    return {"noise_scale": scale, **out}


def steps_sweep(bench: MiniBench, clean: Clean, attacked: tuple[torch.Tensor, Judged, Outcome],
                steps: tuple[int, ...], log: Log) -> list[dict]:
    """Vanilla MirrorCheck on eps 8/255 PGD with fewer or more Euler steps: detection against cost.
    Cost is generation time relative to the profile's default step count, in this same run."""
    adv, judged, outcome = attacked
    spec, default = bench.models.generator.spec.split("?")[0], bench.models.generator.steps
    out = []
    for n_steps in steps:
        generator = Generator.load(f"{spec}?steps={n_steps}&guidance={bench.models.generator.guidance:g}")
        start = time.perf_counter()
        regen_clean = bench.regenerate(generator, clean.judged.captions)
        regen_adv = bench.regenerate(generator, judged.captions)
        seconds = time.perf_counter() - start
        mc_clean = [ensemble_score(s) for s in score_pairs(bench.models.encoders, to_images(clean.x), regen_clean)]
        mc_adv = [ensemble_score(s) for s in score_pairs(bench.models.encoders, to_images(adv), regen_adv)]
        row = detection_row("mirrorcheck", "pgd", 8.0, mc_clean, mc_adv, outcome)
        back = bench.models.captioner.caption(regen_clean)
        out.append({"steps": n_steps, "auroc": row["auroc"], "accuracy": row["accuracy"],
                    "tpr_at_1pct_fpr": row["tpr_at_1pct_fpr"], "n": row["n"],
                    "generator_accuracy": float(np.mean([b == c for b, c in zip(back, clean.judged.captions)])),
                    "seconds": seconds})
        log(f"steps {n_steps}: auroc {row['auroc']}, generation {seconds:.1f}s")
    base = next((r["seconds"] for r in out if r["steps"] == default), max(r["seconds"] for r in out))
    for r in out:
        r["time_ratio"] = r.pop("seconds") / base  # only ratios: absolute CPU times vary by machine
    return out
