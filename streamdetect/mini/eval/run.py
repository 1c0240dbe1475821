"""`streamdetect mini eval`: the paper's detection table in miniature, on the mini models.

For every attack and eps, attacked copies of n clean test images are judged by MirrorCheck
(vanilla and stochastic) and by the baselines; each method's similarity scores on the clean
images (negatives) and on the attacked images whose caption the attack moved (positives: an
attack that left the caption alone did the VLM no harm) give AUROC, accuracy at the equal
TPR/TNR threshold and TPR at 1% FPR. The adaptive attack is run twice: against vanilla
MirrorCheck (its images are used for vanilla and the baselines) and, with EoT, against the
stochastic variant (its images are used for the stochastic row).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from streamdetect.detector.metrics import auroc, confusion, tpr_at_fpr
from streamdetect.detector.mirrorcheck import ensemble_score, score_pairs
from streamdetect.detector.stochastic import StochasticSettings, draw, score_with_draw
from streamdetect.detector.thresholds import fit_labelled
from streamdetect.mini.attacks import (ATTACKS, EoTSettings, PGDSettings, WhiteBoxCaptioner, adaptive_attack,
                                       pgd_attack, transfer_attack)
from streamdetect.mini.eval.baselines import captioner_fn, clip_score, feature_squeezing, mutation_divergence
from streamdetect.mini.clip import DomainClip
from streamdetect.mini.domain import make_split, to_images, to_tensor, wrong_caption
from streamdetect.mini.train.encoders import SURROGATE
from streamdetect.models.generator import Generator
from streamdetect.models.profiles import MINI_ENCODERS, MINI_WEIGHTS, ModelSet, load_models, mini_profile

METHODS = ("mirrorcheck", "stochastic", "clip_score", "feature_squeezing", "mutation_divergence")
REGEN_SEED, DRAW_SEED, TARGET_SEED = 1_000_000, 2_000_000, 3_000_000  # detector's vs attacker's seeds
Log = Callable[[str], None]


@dataclass(frozen=True)
class EvalSettings:
    n: int = 100
    seed: int = 0
    eps: tuple[float, ...] = (4.0, 8.0, 16.0)
    attacks: tuple[str, ...] = ATTACKS
    methods: tuple[str, ...] = METHODS
    attack_steps: int = 60
    adaptive_weight: float = 2.0
    stochastic_k: int = 2  # encoders per request, of the profile's 3
    noise_scale: float = 1e-3
    eot_samples: int = 2
    mutations: int = 6
    target_generations: int = 4  # attacker's generations per target caption
    steps_sweep: tuple[int, ...] = (1, 2, 5, 10, 20)

    def __post_init__(self) -> None:
        if self.n < 2:
            raise ValueError(f"n={self.n}: need at least 2 images")
        for name, values, known in (("attacks", self.attacks, ATTACKS), ("methods", self.methods, METHODS)):
            unknown = sorted(set(values) - set(known))
            if unknown:
                raise ValueError(f"unknown {name} {unknown}; expected some of {', '.join(known)}")
        for eps in self.eps:
            PGDSettings(eps)  # validates
        if any(s < 1 for s in self.steps_sweep):
            raise ValueError(f"steps_sweep {self.steps_sweep}: every entry must be >= 1")


@dataclass
class Judged:
    captions: list[str]
    scores: dict[str, list[float]] = field(default_factory=dict)  # method -> similarity per image


class MiniBench:
    """The mini models loaded once, the detectors that judge images, and the attacks."""

    def __init__(self, settings: EvalSettings, weights: Path = MINI_WEIGHTS) -> None:
        self.settings = settings
        self.weights = Path(weights)
        self.models: ModelSet = load_models(mini_profile(self.weights))
        self.whitebox = WhiteBoxCaptioner(self.models.captioner)
        self.clips = [DomainClip(self.weights / name) for name in MINI_ENCODERS]
        self.surrogate = DomainClip(self.weights / SURROGATE)
        self.caption = captioner_fn(self.models.captioner)
        self.stochastic = StochasticSettings(k=settings.stochastic_k, noise_scale=settings.noise_scale)

    # -- detectors -------------------------------------------------------------------------
    def judge(self, x: torch.Tensor, methods: tuple[str, ...]) -> Judged:
        captions = self.caption(x)
        judged = Judged(captions)
        images = to_images(x)
        if {"mirrorcheck", "stochastic"} & set(methods):
            regen = self.regenerate(self.models.generator, captions)
        if "mirrorcheck" in methods:
            pairs = score_pairs(self.models.encoders, images, regen)
            judged.scores["mirrorcheck"] = [ensemble_score(s) for s in pairs]
        if "stochastic" in methods:
            judged.scores["stochastic"] = [self._stochastic(i, im, rg) for i, (im, rg) in enumerate(zip(images, regen))]
        if "clip_score" in methods:
            judged.scores["clip_score"] = clip_score(self.clips, x, captions)
        if "feature_squeezing" in methods:
            judged.scores["feature_squeezing"] = feature_squeezing(self.caption, x, captions)
        if "mutation_divergence" in methods:
            judged.scores["mutation_divergence"] = mutation_divergence(
                self.caption, x, self.settings.mutations, self.settings.seed)
        return judged

    def regenerate(self, generator: Generator, captions: list[str]) -> list:  # type: ignore[type-arg]
        seeds = [REGEN_SEED + i for i in range(len(captions))]
        return generator.generate(captions, seeds)

    def _stochastic(self, index: int, image, regenerated) -> float:  # type: ignore[no-untyped-def]
        d = draw(DRAW_SEED + index, 1, len(self.models.encoders), self.stochastic)
        chosen = [self.models.encoders[j] for j in d.encoders]
        return ensemble_score(score_with_draw(chosen, image, regenerated, d.seed, d.noise_scale))

    # -- attacks ---------------------------------------------------------------------------
    def target_images(self, targets: list[str]) -> torch.Tensor:
        m = self.settings.target_generations
        prompts = [t for t in targets for _ in range(m)]
        seeds = [TARGET_SEED + i for i in range(len(prompts))]
        return to_tensor(self.models.generator.generate(prompts, seeds))

    def attack(self, kind: str, x: torch.Tensor, targets: list[str], target_images: torch.Tensor,
               eps: float, stochastic: bool = False) -> torch.Tensor:
        s = self.settings
        pgd = PGDSettings(eps, steps=s.attack_steps)
        if kind == "pgd":
            return pgd_attack(self.whitebox, x, targets, pgd)
        if kind == "transfer":
            return transfer_attack(self.surrogate, x, target_images, pgd)
        if kind == "adaptive":
            eot = EoTSettings(s.stochastic_k, s.noise_scale, s.eot_samples) if stochastic else None
            return adaptive_attack(self.whitebox, self.clips, x, targets, target_images, pgd,
                                   s.adaptive_weight, eot, seed=s.seed)
        raise ValueError(f"unknown attack {kind!r}; expected one of {', '.join(ATTACKS)}")


def auroc_se(a: float, n_pos: int, n_neg: int) -> float:
    """Hanley & McNeil (1982) standard error of an AUROC: the noise the floor test allows."""
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a)) / (n_pos * n_neg)
    return math.sqrt(max(var, 0.0))


def detection_row(method: str, attack: str, eps: float, clean: list[float], attacked: list[float],
                  moved: list[bool], hit: list[bool]) -> dict:
    positives = [s for s, m in zip(attacked, moved) if m]
    row = {"method": method, "attack": attack, "eps": eps, "auroc": None, "auroc_se": None,
           "accuracy": None, "tpr_at_1pct_fpr": None, "attack_success_rate": float(np.mean(hit)),
           "caption_changed_rate": float(np.mean(moved)), "n": len(clean) + len(positives),
           "n_clean": len(clean), "n_attacked": len(positives),
           "score_clean_mean": float(np.mean(clean)),
           "score_attacked_mean": float(np.mean(positives)) if positives else None}
    if not positives:
        return row  # the attack never moved a caption: nothing to detect
    scores, labels = [*clean, *positives], [0] * len(clean) + [1] * len(positives)
    a = auroc(scores, labels)
    row.update(auroc=a, auroc_se=auroc_se(a, len(positives), len(clean)),
               accuracy=confusion(scores, labels, fit_labelled(scores, labels, "equal_tpr_tnr"))["accuracy"],
               tpr_at_1pct_fpr=tpr_at_fpr(scores, labels, 0.01))
    return row


def run_eval(settings: EvalSettings, log: Log, weights: Path = MINI_WEIGHTS) -> dict:
    bench = MiniBench(settings, weights)
    images, scenes = make_split(settings.seed, "test", settings.n)
    x = to_tensor(images)
    truth = [s.caption for s in scenes]
    rng = np.random.default_rng([settings.seed, 7])
    targets = [wrong_caption(s, rng) for s in scenes]
    log(f"judging {settings.n} clean test images")
    clean = bench.judge(x, settings.methods)
    quality = model_quality(bench, truth, clean.captions)
    log(f"captioner accuracy {quality['captioner_accuracy']:.3f}, generator accuracy {quality['generator_accuracy']:.3f}")
    target_images = bench.target_images(targets) if {"transfer", "adaptive"} & set(settings.attacks) else None
    rows, attacked_sets = [], {}
    for attack in settings.attacks:
        for eps in settings.eps:
            rows += _attack_rows(bench, attack, eps, x, targets, target_images, clean, attacked_sets, log)
    result = {"rows": rows, "models": quality, "settings": asdict(settings)}
    if ("pgd", 8.0) in attacked_sets and "mirrorcheck" in settings.methods and settings.steps_sweep:
        result["steps"] = steps_sweep(bench, x, clean, attacked_sets[("pgd", 8.0)], settings.steps_sweep,
                                      targets, log)
    return result


def _attack_rows(bench: MiniBench, attack: str, eps: float, x: torch.Tensor, targets: list[str],
                 target_images: torch.Tensor | None, clean: Judged, attacked_sets: dict, log: Log) -> list[dict]:
    methods = bench.settings.methods
    runs = [(False, tuple(m for m in methods if attack != "adaptive" or m != "stochastic"))]
    if attack == "adaptive" and "stochastic" in methods:
        runs.append((True, ("stochastic",)))
    rows = []
    for stochastic, judged_by in runs:
        if not judged_by:
            continue
        start = time.monotonic()
        adv = bench.attack(attack, x, targets, target_images, eps, stochastic)
        judged = bench.judge(adv, judged_by)
        hit = [c == t for c, t in zip(judged.captions, targets)]
        moved = [c != k for c, k in zip(judged.captions, clean.captions)]
        if not stochastic:
            attacked_sets[(attack, float(eps))] = (adv, judged)
        log(f"{attack}{' (EoT vs stochastic)' if stochastic else ''} eps {eps:g}/255: success "
            f"{np.mean(hit):.2f}, caption changed {np.mean(moved):.2f} ({time.monotonic() - start:.0f}s)")
        for method in judged_by:
            rows.append(detection_row(method, attack, eps, clean.scores[method], judged.scores[method], moved, hit))
    return rows


def model_quality(bench: MiniBench, truth: list[str], clean_captions: list[str]) -> dict:
    """Captioner exact-caption accuracy on clean test images; the generator's accuracy as the
    captioner's exact-caption accuracy on images generated from the true captions."""
    generated = bench.regenerate(bench.models.generator, truth)
    gen_captions = bench.models.captioner.caption(generated)
    return {"captioner_accuracy": float(np.mean([c == t for c, t in zip(clean_captions, truth)])),
            "generator_accuracy": float(np.mean([c == t for c, t in zip(gen_captions, truth)])),
            "n": len(truth)}


def steps_sweep(bench: MiniBench, x: torch.Tensor, clean: Judged, attacked: tuple[torch.Tensor, Judged],
                steps: tuple[int, ...], targets: list[str], log: Log) -> list[dict]:
    """Vanilla MirrorCheck on eps 8/255 PGD with fewer or more Euler steps: detection against cost.
    Cost is generation time relative to the profile's default step count, in this same run."""
    adv, judged = attacked
    moved = [c != k for c, k in zip(judged.captions, clean.captions)]
    hit = [c == t for c, t in zip(judged.captions, targets)]
    spec, default = bench.models.generator.spec.split("?")[0], bench.models.generator.steps
    out = []
    for n_steps in steps:
        generator = Generator.load(f"{spec}?steps={n_steps}&guidance={bench.models.generator.guidance:g}")
        start = time.perf_counter()
        regen_clean = bench.regenerate(generator, clean.captions)
        regen_adv = bench.regenerate(generator, judged.captions)
        seconds = time.perf_counter() - start
        mc_clean = [ensemble_score(s) for s in score_pairs(bench.models.encoders, to_images(x), regen_clean)]
        mc_adv = [ensemble_score(s) for s in score_pairs(bench.models.encoders, to_images(adv), regen_adv)]
        row = detection_row("mirrorcheck", "pgd", 8.0, mc_clean, mc_adv, moved, hit)
        back = bench.models.captioner.caption(regen_clean)
        out.append({"steps": n_steps, "auroc": row["auroc"], "accuracy": row["accuracy"],
                    "tpr_at_1pct_fpr": row["tpr_at_1pct_fpr"], "n": row["n"],
                    "generator_accuracy": float(np.mean([b == c for b, c in zip(back, clean.captions)])),
                    "seconds": seconds})
        log(f"steps {n_steps}: auroc {row['auroc']}, generation {seconds:.1f}s")
    base = next((r["seconds"] for r in out if r["steps"] == default), max(r["seconds"] for r in out))
    for r in out:
        r["time_ratio"] = r.pop("seconds") / base  # only ratios: absolute CPU times vary by machine
    return out
