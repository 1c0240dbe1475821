"""MirrorCheck (arXiv 2406.09250): an input whose caption regenerates into a dissimilar picture
is flagged. Similarity is the cosine between the input's and the regeneration's embeddings
under each encoder; the ensemble score is their mean."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, Sequence

import torch
from PIL import Image


@dataclass(frozen=True)
class Verdict:
    """The detector's decision on one image, before the stream layer adds its envelope."""

    upload_id: str
    flagged: bool
    score: float
    threshold: float
    scores: dict[str, float]
    caption: str
    caption_source: Literal["model", "upload"]
    seed: int
    models: dict[str, Any] = field(default_factory=dict)
    # Stochastic mode only: the draw (seed, noise scale, generator and encoder specs) that made it.
    stochastic: dict[str, Any] | None = None
    # The caption's regeneration: the verdict's evidence (stored by the worker, never on the wire).
    regenerated: Image.Image | None = field(default=None, compare=False, repr=False)
    # Which stage decided: regeneration (MirrorCheck), or the cascade's first stage, in which case
    # score, scores and threshold are the caption agreement and its exit threshold (detector/cascade.py).
    decided_by: Literal["regeneration", "first_stage"] = "regeneration"
    cascade: dict[str, Any] | None = None  # cascade on: the first stage's agreement and exit threshold

    def as_dict(self) -> dict[str, Any]:
        return {
            "upload_id": self.upload_id,
            "flagged": self.flagged,
            "score": self.score,
            "threshold": self.threshold,
            "scores": dict(self.scores),
            "caption": self.caption,
            "caption_source": self.caption_source,
            "seed": self.seed,
            "models": dict(self.models),
            **({"stochastic": dict(self.stochastic)} if self.stochastic is not None else {}),
            "decided_by": self.decided_by,
            **({"cascade": dict(self.cascade)} if self.cascade is not None else {}),
        }


def cosine_scores(inputs: torch.Tensor, regenerated: torch.Tensor) -> list[float]:
    """Row-wise cosine similarity of two (N, D) embedding batches, clamped to [-1, 1]."""
    if inputs.shape != regenerated.shape:
        raise ValueError(f"embedding shapes differ: inputs {tuple(inputs.shape)} vs {tuple(regenerated.shape)}")
    sims = torch.nn.functional.cosine_similarity(inputs.float(), regenerated.float(), dim=-1)
    return [float(s) for s in sims.clamp(-1.0, 1.0)]


class PairEncoder(Protocol):
    name: str

    def embed(self, images: list[Image.Image]) -> torch.Tensor: ...


def score_pairs(
    encoders: Sequence[PairEncoder], inputs: Sequence[Image.Image], regenerated: Sequence[Image.Image]
) -> list[dict[str, float]]:
    """Per-encoder cosine scores for N (input, regeneration) pairs: one batched call per encoder."""
    if len(inputs) != len(regenerated):
        raise ValueError(f"{len(inputs)} inputs but {len(regenerated)} regenerated images")
    per_item: list[dict[str, float]] = [{} for _ in inputs]
    if not inputs:
        return per_item
    for encoder in encoders:
        embeddings = encoder.embed([*inputs, *regenerated])
        sims = cosine_scores(embeddings[: len(inputs)], embeddings[len(inputs) :])
        for scores, sim in zip(per_item, sims):
            scores[encoder.name] = sim
    return per_item


def ensemble_score(scores: dict[str, float]) -> float:
    """The ensemble's score: the mean of the per-encoder similarities."""
    if not scores:
        raise ValueError("no encoder scores to decide on")
    return sum(scores.values()) / len(scores)


def decide(scores: dict[str, float], threshold: float) -> tuple[float, bool]:
    """Ensemble score, and whether it falls below the threshold (adversarial)."""
    mean = ensemble_score(scores)
    return mean, mean < threshold
