"""The cascade's first stage: does the caption fit the picture, under the detector's own
encoders' text towers? An upload whose caption agrees with it confidently (mean cosine of
image and caption embeddings at or above ``exit_threshold``) is decided clean without a
text-to-image call; every other upload goes on to regeneration, and MirrorCheck decides.

The exit threshold is fitted on clean traffic only, for a budget: the share of clean uploads
allowed to skip regeneration (``fit_exit``). An attack must make the caption wrong, and a wrong
caption that the encoders still find agrees confidently is what an attacker aiming at this
stage has to buy; `streamdetect mini eval` measures what that costs (README "The cascade").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np
import torch
from PIL import Image


class TextImageEncoder(Protocol):
    name: str

    def embed(self, images: list[Image.Image]) -> torch.Tensor: ...

    def embed_text(self, captions: list[str]) -> torch.Tensor: ...


@dataclass(frozen=True)
class CascadeSettings:
    exit_threshold: float  # mean caption agreement at or above which an upload exits clean
    exit_share: float | None = None  # the clean share the threshold was fitted to let through


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


def agreement(scores: dict[str, float]) -> float:
    if not scores:
        raise ValueError("no agreement scores")
    return sum(scores.values()) / len(scores)


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
