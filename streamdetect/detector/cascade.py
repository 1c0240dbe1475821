"""The cascade's first stage: does the caption fit the picture, under the detector's own
encoders' text towers? An upload whose caption agrees with it confidently (first stage
``agreement``: mean cosine of image and caption embeddings at or above ``exit_threshold``; or
``margin``: how much better the caption fits than the captioner's own next likeliest captions;
or ``swap``: how much better it fits than itself with one word swapped for another of its kind,
swaps.py) is decided clean without a text-to-image call; every other upload goes on to
regeneration, and MirrorCheck decides.

The exit threshold is fitted on clean traffic only, for a budget: the share of clean uploads
allowed to skip regeneration (``fit_exit``). An attack must make the caption wrong, and a wrong
caption that the encoders still find agrees confidently is what an attacker aiming at this
stage has to buy; `streamdetect mini eval` measures what that costs (README "The cascade").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, Sequence

import numpy as np
import torch
from PIL import Image

if TYPE_CHECKING:
    from streamdetect.detector.swaps import Swaps


class TextImageEncoder(Protocol):
    name: str

    def embed(self, images: list[Image.Image]) -> torch.Tensor: ...

    def embed_text(self, captions: list[str]) -> torch.Tensor: ...


FIRST_STAGES = ("agreement", "margin", "swap")
RIVALS = 4  # the captioner's beam alternatives a caption must beat (first stage "margin")


@dataclass(frozen=True)
class CascadeSettings:
    exit_threshold: float  # first-stage score at or above which an upload exits clean
    exit_share: float | None = None  # the clean share the threshold was fitted to let through
    first_stage: str = "agreement"  # agreement, margin (against the captioner's own rivals) or swap
    swaps: Swaps | None = None  # first stage swap: the vocabulary its rivals come from

    def __post_init__(self) -> None:
        if self.first_stage not in FIRST_STAGES:
            raise ValueError(f"first_stage {self.first_stage!r}: expected one of {', '.join(FIRST_STAGES)}")
        if (self.first_stage == "swap") != (self.swaps is not None):
            raise ValueError("the swap first stage, and only it, needs a vocabulary (swaps)")

    @property
    def margin_based(self) -> bool:
        return self.first_stage in ("margin", "swap")


def agreement_scores(encoders: Sequence[TextImageEncoder], images: list[Image.Image],
                     captions: list[str]) -> list[dict[str, float]]:
    """Per image, each encoder's cosine between the image and its caption: one batched call per
    encoder and tower."""
    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    out: list[dict[str, float]] = [{} for _ in images]
    for encoder in encoders:
        sims = (encoder.embed(images) * encoder.embed_text(captions)).sum(-1).clamp(-1.0, 1.0)
        for scores, sim in zip(out, sims.tolist()):
            scores[encoder.name] = float(sim)
    return out


def margin_scores(encoders: Sequence[TextImageEncoder], images: list[Image.Image], captions: list[str],
                  rivals: list[list[str]]) -> list[dict[str, float]]:
    """Per image, each encoder's margin of the caption over its best rival (cosine with the image,
    caption minus best rival, clamped to [-1, 1]; no rival counts as a rival at cosine -1). Under
    robust encoders an attacker who forces a wrong caption must also make it beat the captions
    the captioner itself found next likeliest, the true one often among them (README "The
    cascade"): the adaptive attacks of `mini eval` push far fewer images over this band."""
    if not len(images) == len(captions) == len(rivals):
        raise ValueError(f"{len(images)} images, {len(captions)} captions and {len(rivals)} rival lists")
    flat = [r for theirs in rivals for r in theirs]
    owners = torch.tensor([i for i, theirs in enumerate(rivals) for _ in theirs], dtype=torch.long)
    out: list[dict[str, float]] = [{} for _ in images]
    for encoder in encoders:
        image = encoder.embed(images)
        own = (image * encoder.embed_text(captions)).sum(-1)
        best = torch.full_like(own, -1.0)
        if flat:
            sims = (image[owners] * encoder.embed_text(flat)).sum(-1)
            best = best.scatter_reduce(0, owners, sims, reduce="amax")
        for scores, value in zip(out, (own - best).clamp(-1.0, 1.0).tolist()):
            scores[encoder.name] = float(value)
    return out


def agreement(scores: dict[str, float]) -> float:
    if not scores:
        raise ValueError("no agreement scores")
    return sum(scores.values()) / len(scores)


def can_exit(first_stage: str, score: float, unchecked: str | None = None) -> bool:
    """Whatever the exit threshold: a margin first stage (margin, swap) lets a caption through only
    when it beats every rival (margin above zero: a rival the encoders cannot tell from it, e.g.
    one that differs past the words they read, is a tie, not a win), and swap only a caption it
    could check word by word. Samples that cannot exit are no samples of the exit's fit either."""
    if unchecked is not None:
        return False
    return score > 0.0 if first_stage in ("margin", "swap") else True


def cascade_score(agreed: float, score: float, exit_threshold: float) -> float:
    """The cascade's score of one upload: 1.0 (decided clean, the top of the scale) when its
    agreement clears the exit threshold, else the regeneration's score. Calibration, the mini eval
    and the bench fit the cascade's MirrorCheck threshold on these, so its FPR is the whole cascade's."""
    return 1.0 if agreed >= exit_threshold else score


def fit_exit(clean_agreements: Sequence[float], exit_share: float) -> float:
    """The threshold that lets ``exit_share`` of these clean uploads skip regeneration: their
    (1 - exit_share) quantile (the lower order statistic, so at most that share exits)."""
    if not 0.0 <= exit_share < 1.0:
        raise ValueError(f"exit_share must be in [0, 1), not {exit_share}")
    values = np.sort(np.asarray(clean_agreements, dtype=float))
    if values.size == 0 or not np.all(np.isfinite(values)):
        raise ValueError("the exit threshold needs finite clean agreement scores")
    if exit_share == 0.0:
        return float("inf")
    index = int(np.ceil((1.0 - exit_share) * values.size))
    return float(values[min(index, values.size - 1)])
