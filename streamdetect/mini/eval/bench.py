"""The mini models loaded once, the detectors that judge images, and the attacks aimed at them.

Detectors (methods), each a similarity per image, flagged when low:
- mirrorcheck: vanilla MirrorCheck, the public encoders (the `mini` profile);
- stochastic: the paper's stochastic variant over those encoders;
- robust: MirrorCheck scored with the adversarially fine-tuned encoders (`mini-robust`);
- robust_clip: caption-image agreement under the robust encoders (no regeneration);
- robust_margin: how much better the caption fits than its rivals with one word swapped (the
  worker's first stage ``swap`` with the mini vocabulary: for a domain caption, its one-attribute
  rivals), under the robust encoders (no regeneration);
- fused: the worst clean-standardised of robust and robust_margin (detector.fusion, fitted on
  clean validation scenes);
- private, private_margin: MirrorCheck and the caption margin with robust encoders trained from
  a private seed and never shipped (grey-box; needs --private-weights), judged on attacks aimed
  at the public robust ones (the attacker's best stand-in: transfer);
- cascade, robust_cascade: the worker's cascade (detector/cascade.py): decided clean (1.0) when
  the caption agreement (clip_score on the public encoders, robust_clip on the robust ones)
  clears the exit threshold fitted on clean validation scenes for the exit budget, else the
  always-regenerate score (mirrorcheck, robust);
- swap_cascade: the worker's `--profile mini-robust --cascade swap`: the caption margin on the
  robust encoders (robust_margin) as its first stage (a caption it cannot check never exits),
  then robust MirrorCheck;
- robust_beam_margin, beam_cascade: the caption margin against the captioner's own beam-search
  rivals instead of the domain's one-attribute ones (what a worker outside the mini domain can
  have), and the cascade with it as its first stage;
- clip_score, feature_squeezing, mutation_divergence: the paper's baselines.

Adaptive attacks are aimed at one group of detectors (AIMED) and pull every signal the group
uses; each group is judged only on the attacks aimed at it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from streamdetect.detector.cascade import can_exit, fit_exit
from streamdetect.detector.fusion import MinZFusion
from streamdetect.detector.mirrorcheck import ensemble_score, score_pairs
from streamdetect.detector.stochastic import StochasticSettings, draw, score_with_draw
from streamdetect.mini.attacks import (EoTSettings, PGDSettings, Pull, WhiteBoxCaptioner, adaptive_attack,
                                       pgd_attack, transfer_attack, untargeted_attack)
from streamdetect.mini.clip import DomainClip
from streamdetect.mini.eval.baselines import (UNCHECKED, caption_margin, captioner_fn, clip_score,
                                             feature_squeezing, mutation_divergence)
from streamdetect.mini.domain import neighbours, parse_caption, to_images, to_tensor
from streamdetect.mini.train.encoders import SURROGATE
from streamdetect.mini.train.robust import ROBUST
from streamdetect.models.encoders import ImageEncoder
from streamdetect.models.generator import Generator
from streamdetect.models.profiles import MINI_ENCODERS, ModelSet, load_models, mini_profile

METHODS = ("mirrorcheck", "stochastic", "robust", "robust_clip", "robust_margin", "fused", "private", "private_margin",
           "cascade", "robust_cascade", "swap_cascade", "robust_beam_margin", "beam_cascade", "clip_score",
           "feature_squeezing", "mutation_divergence")
AIMED = {  # who an adaptive attack is aimed at -> the detectors judged on it
    "public": ("mirrorcheck", "cascade", "clip_score", "feature_squeezing", "mutation_divergence"),
    # At the cascade's first stage: the caption agreement alone, to exit clean with a wrong caption;
    # judged by the cascade and by always-regenerate on the same images.
    "first_stage": ("cascade", "mirrorcheck"),
    "cascade": ("cascade", "mirrorcheck"),  # the agreement and MirrorCheck's regenerations together
    "stochastic": ("stochastic",),
    "robust": ("robust", "robust_clip", "robust_margin", "fused", "private", "private_margin", "robust_cascade",
               "swap_cascade", "robust_beam_margin", "beam_cascade"),
    "robust_first_stage": ("robust_cascade", "robust"),
    # At the margin cascade's first stage alone: the wrong caption must beat its own rivals (the
    # true caption among them) under the robust encoders.
    "margin_first_stage": ("swap_cascade", "beam_cascade", "robust"),
    # At the beam margin: every robust signal, the margin over the target's rivals other than the
    # truth, and the true caption pushed out of the captioner's beam (so it is no rival).
    "beam": ("beam_cascade", "swap_cascade", "robust"),
}
ROBUST_AIMS = ("robust", "robust_first_stage", "margin_first_stage", "beam")  # aims at the robust encoders
CASCADES = {"cascade": ("clip_score", "mirrorcheck"), "robust_cascade": ("robust_clip", "robust"),
            "swap_cascade": ("robust_margin", "robust"), "beam_cascade": ("robust_beam_margin", "robust")}
# (first stage, then the regeneration)
# Aims that exist to compare a cascade with always-regenerate: run only when the cascade is judged.
COMPARED = {"first_stage": ("cascade",), "cascade": ("cascade",), "robust_first_stage": ("robust_cascade",),
            "margin_first_stage": ("swap_cascade", "beam_cascade"), "beam": ("beam_cascade", "swap_cascade")}
FUSED_SIGNALS = ("robust", "robust_margin")
REGEN_SEED, DRAW_SEED, TARGET_SEED = 1_000_000, 2_000_000, 3_000_000  # detector's vs attacker's seeds


@dataclass
class Judged:
    captions: list[str]
    scores: dict[str, list[float]] = field(default_factory=dict)  # method -> similarity per image
    exits: dict[str, list[bool]] = field(default_factory=dict)  # cascade -> decided at the first stage, per image


@dataclass(frozen=True)
class BenchSettings:
    seed: int = 0
    attack_steps: int = 60
    adaptive_weight: float = 2.0
    stochastic_k: int = 2  # encoders per request, of the profile's 3
    noise_scale: float = 1e-3
    eot_samples: int = 2
    mutations: int = 6
    target_generations: int = 4  # attacker's generations per target caption (EoT over the regeneration)
    cascade_exit_share: float = 0.8  # the cascades' budget: clean validation share let through unregenerated
    euler_steps: int = 0  # the generator's Euler steps, for the detector and the attacks alike; 0: the profile's 10


def easiest_targets(landed: list[str], clean: list[str], fallback: list[str]) -> list[str]:
    """Per image, the wrong caption the smallest-change untargeted attack landed on; where it
    landed nowhere (or off the domain's captions), the fallback target."""
    return [c if c != k and parse_caption(c) is not None else f for c, k, f in zip(landed, clean, fallback)]


def _private(folder: Path) -> list[ImageEncoder]:
    """The robust-* encoders a platform trained from its own seed (any of them, at least one)."""
    folder = folder.expanduser().resolve()
    names = [name for name in ROBUST if (folder / name / "open_clip_config.json").is_file()]
    if not names:
        raise FileNotFoundError(f"{folder} holds none of {', '.join(ROBUST)}: train them with `streamdetect mini "
                                f"train --seed SECRET --only encoder-rn --only robust-rn --out {folder}`")
    return [ImageEncoder.load(f"open_clip:{folder / name}") for name in names]


class MiniBench:
    def __init__(self, settings: BenchSettings, weights: Path, private_weights: Path | None = None) -> None:
        self.settings = settings
        self.weights = Path(weights).expanduser().resolve()  # a spec names a folder only as an absolute path
        self.models: ModelSet = load_models(mini_profile(self.weights))
        if settings.euler_steps:
            generator = self.models.generator
            self.models.generator = Generator.load(
                f"{generator.spec.split('?')[0]}?steps={settings.euler_steps}&guidance={generator.guidance:g}")
        self.whitebox = WhiteBoxCaptioner(self.models.captioner)
        self.clips = [DomainClip(self.weights / name) for name in MINI_ENCODERS]
        self.surrogate = DomainClip(self.weights / SURROGATE)
        self.robust_clips = [DomainClip(self.weights / name) for name in ROBUST]
        self.robust = [ImageEncoder.load(f"open_clip:{self.weights / name}") for name in ROBUST]
        self.private = _private(Path(private_weights)) if private_weights else []
        self.private_clips = [DomainClip(Path(e.spec.split(":", 1)[1])) for e in self.private]
        self.caption = captioner_fn(self.models.captioner)
        self.stochastic = StochasticSettings(k=settings.stochastic_k, noise_scale=settings.noise_scale)
        self.fusion: MinZFusion | None = None
        self.exits: dict[str, float] = {}  # cascade -> exit threshold, fitted on clean validation (fit_exits)

    # -- detectors -------------------------------------------------------------------------
    def judge(self, x: torch.Tensor, methods: tuple[str, ...], draw_offset: int = 0) -> Judged:
        captions = self.caption(x)
        judged = Judged(captions)
        images = to_images(x)
        wanted = set(methods) | (set(FUSED_SIGNALS) if "fused" in methods else set())
        wanted |= {part for cascade in set(methods) & set(CASCADES) for part in CASCADES[cascade]}
        regen = self.regenerate(self.models.generator, captions) if wanted & {"mirrorcheck", "stochastic", "robust",
                                                                               "private"} else None
        for method, encoders in (("mirrorcheck", self.models.encoders), ("robust", self.robust),
                                 ("private", self.private)):
            if method in wanted:
                judged.scores[method] = [ensemble_score(s) for s in score_pairs(encoders, images, regen)]
        if "stochastic" in wanted:
            judged.scores["stochastic"] = [self._stochastic(draw_offset + i, im, rg)
                                           for i, (im, rg) in enumerate(zip(images, regen))]
        if "clip_score" in wanted:
            judged.scores["clip_score"] = clip_score(self.clips, x, captions)
        if "robust_clip" in wanted:
            judged.scores["robust_clip"] = clip_score(self.robust_clips, x, captions)
        if "robust_margin" in wanted:
            judged.scores["robust_margin"] = caption_margin(self.robust_clips, x, captions)
        if "robust_beam_margin" in wanted:  # the rivals from the captioner's own beam, as the worker would have them
            rivals = self.models.captioner.rivals(images, captions)
            judged.scores["robust_beam_margin"] = caption_margin(self.robust_clips, x, captions, rivals)
        if "private_margin" in wanted:
            judged.scores["private_margin"] = caption_margin(self.private_clips, x, captions)
        if "fused" in wanted and self.fusion is not None:
            judged.scores["fused"] = self.fusion.scores({k: judged.scores[k] for k in FUSED_SIGNALS})
        for cascade in set(methods) & set(CASCADES):
            self._cascade(judged, cascade)
        self._baselines(judged, x, methods)
        return judged

    def _cascade(self, judged: Judged, cascade: str) -> None:
        """Decided clean (1.0, the top of the scale) at the first stage, else the regeneration's score;
        before fit_exits nothing exits (the validation scenes are judged as always-regenerate)."""
        first, second = (judged.scores[part] for part in CASCADES[cascade])
        exit_at = self.exits.get(cascade, float("inf"))
        judged.exits[cascade] = [a >= exit_at and self._can_exit(cascade, a) for a in first]
        judged.scores[cascade] = [1.0 if out else s for out, s in zip(judged.exits[cascade], second)]

    def fit_exits(self, clean_validation: Judged) -> None:
        """Each cascade's exit threshold for the budget, on the clean validation agreements (as
        `calibrate --cascade agreement` fits the worker's), then the validation scenes re-judged."""
        for cascade in set(clean_validation.scores) & set(CASCADES):
            first = clean_validation.scores[CASCADES[cascade][0]]
            can = [a for a in first if self._can_exit(cascade, a)]  # as calibrate fits: on what can exit
            self.exits[cascade] = fit_exit(can, self.settings.cascade_exit_share)
            self._cascade(clean_validation, cascade)

    @staticmethod
    def _can_exit(cascade: str, score: float) -> bool:
        """The worker's rule (detector.cascade.can_exit): a margin first stage exits only above zero,
        and a caption the swap stage cannot check scores UNCHECKED, below zero."""
        first_stage = {"swap_cascade": "swap", "beam_cascade": "margin"}.get(cascade, "agreement")
        return can_exit(first_stage, score) and score != UNCHECKED

    def fit_fusion(self, clean_validation: Judged) -> None:
        self.fusion = MinZFusion.fit({k: clean_validation.scores[k] for k in FUSED_SIGNALS})
        clean_validation.scores["fused"] = self.fusion.scores({k: clean_validation.scores[k] for k in FUSED_SIGNALS})

    def _baselines(self, judged: Judged, x: torch.Tensor, methods: tuple[str, ...]) -> None:
        if "feature_squeezing" in methods:
            judged.scores["feature_squeezing"] = feature_squeezing(self.caption, x, judged.captions)
        if "mutation_divergence" in methods:
            judged.scores["mutation_divergence"] = mutation_divergence(
                self.caption, x, self.settings.mutations, self.settings.seed)

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

    def pulls(self, aimed: str, targets: list[str], target_images: torch.Tensor,
              truth: list[str] | None = None) -> list[Pull]:
        """Every signal of the aimed-at detectors, as the attacker pulls it toward the target
        (``truth``: the clean captions, which the aim "beam" leaves out of the margin's rivals)."""
        m = self.settings.target_generations
        if aimed in ("public", "stochastic"):
            return [Pull(c, c.anchor(target_images, m), stochastic=aimed == "stochastic") for c in self.clips]
        if aimed in ("first_stage", "robust_first_stage"):  # into the confident-clean band of the agreement
            clips = self.clips if aimed == "first_stage" else self.robust_clips
            return [Pull(c, c.embed_text(targets)) for c in clips]
        if aimed == "margin_first_stage":  # into the confident-clean band of the caption margin
            return [Pull(c, c.embed_text(targets), rivals=torch.stack([c.embed_text(neighbours(t)) for t in targets]))
                    for c in self.robust_clips]
        if aimed == "cascade":
            return [pull for c in self.clips for pull in (Pull(c, c.anchor(target_images, m)),
                                                          Pull(c, c.embed_text(targets)))]
        if aimed == "beam":
            truth = truth or [""] * len(targets)
            return [pull for c in self.robust_clips for pull in (
                Pull(c, c.anchor(target_images, m)), Pull(c, c.embed_text(targets)),
                Pull(c, c.embed_text(targets), rivals=torch.stack(
                    [c.embed_text([r for r in neighbours(t) if r != k][:11]) for t, k in zip(targets, truth)])))]
        if aimed == "robust":
            return [pull for c in self.robust_clips for pull in (
                Pull(c, c.anchor(target_images, m)),  # MirrorCheck on the robust encoders
                Pull(c, c.embed_text(targets)),  # caption-image agreement
                Pull(c, c.embed_text(targets), rivals=torch.stack([c.embed_text(neighbours(t)) for t in targets])),
            )]  # and the caption margin
        raise ValueError(f"unknown aim {aimed!r}; expected one of {', '.join(AIMED)}")

    def weakest_targets(self, x: torch.Tensor, captions: list[str], aimed: str) -> list[str]:
        """Per image, the one-attribute rival of its caption that the aimed-at encoders already
        find most like the image: where they are least sure, so the least push flips them."""
        clips = self.robust_clips if aimed in ROBUST_AIMS else self.clips
        out = []
        with torch.no_grad():
            images = [c.embed(x) for c in clips]
            for i, caption in enumerate(captions):
                rivals = neighbours(caption)
                sims = torch.stack([e[i : i + 1] @ c.embed_text(rivals).T for c, e in zip(clips, images)]).mean(0)
                out.append(rivals[int(sims.argmax())])
        return out

    def attack(self, kind: str, x: torch.Tensor, targets: list[str], eps: float, aimed: str = "public",
               target_images: torch.Tensor | None = None, clean_captions: list[str] | None = None) -> torch.Tensor:
        s = self.settings
        settings = PGDSettings(eps, steps=s.attack_steps)
        if kind == "pgd":
            return pgd_attack(self.whitebox, x, targets, settings)
        if kind == "untargeted":
            return untargeted_attack(self.whitebox, self.caption, x, clean_captions or self.caption(x), settings)
        target_images = self.target_images(targets) if target_images is None else target_images
        if kind == "transfer":
            return transfer_attack(self.surrogate, x, target_images, settings)
        if kind in ("adaptive", "easiest", "weakest"):
            eot = EoTSettings(s.stochastic_k, s.noise_scale, s.eot_samples) if aimed == "stochastic" else None
            truth = clean_captions or self.caption(x)
            return adaptive_attack(self.whitebox, self.pulls(aimed, targets, target_images, truth), x, targets,
                                   settings, s.adaptive_weight, eot, seed=s.seed,
                                   caption=self.caption if kind in ("easiest", "weakest") else None,
                                   away=truth if aimed == "beam" else None)
        raise ValueError(f"unknown attack {kind!r}")
