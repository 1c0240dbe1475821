"""Attacks on the mini models, all L-inf bounded, all on [0, 1] pixel tensors (N, 3, 32, 32).

- pgd: targeted white-box PGD on the captioner: minimise the cross-entropy of a chosen wrong
  caption, so the VLM says it.
- transfer: AttackVLM style (MF-ii): pull a surrogate encoder's embedding of the input toward
  that of an image generated from the target caption; the victim is never queried.
- adaptive: pgd plus a term pulling the input's embedding, under the detector's own encoders,
  toward images generated from the target caption, so the regeneration looks like the input.
  Against stochastic MirrorCheck it takes the expectation over the defence's randomness (EoT):
  every step averages over fresh encoder subsets and weight perturbations.
The attacker holds its own copies of the weights (white-box), never the detector's objects.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from streamdetect.detector.stochastic import perturbed
from streamdetect.mini import ATTACKS
from streamdetect.mini.clip import DomainClip
from streamdetect.mini.train.captioner import caption_tokens, normalise, token_loss
from streamdetect.models.captioner import Captioner

__all__ = ["ATTACKS", "EoTSettings", "PGDSettings", "WhiteBoxCaptioner", "adaptive_attack", "pgd",
           "pgd_attack", "transfer_attack"]
Loss = Callable[[torch.Tensor], torch.Tensor]  # (N, 3, H, W) -> (N,) per-image loss to minimise
Gradient = Callable[[torch.Tensor], torch.Tensor]  # (N, 3, H, W) -> its gradient


@dataclass(frozen=True)
class PGDSettings:
    eps: float  # in 1/255 units, L-inf
    steps: int = 60
    step_fraction: float = 0.2  # step size as a fraction of eps

    def __post_init__(self) -> None:
        if not 0 < self.eps <= 64:
            raise ValueError(f"eps={self.eps} (in 1/255): expected 0 < eps <= 64")
        if self.steps < 1:
            raise ValueError(f"steps={self.steps}: expected >= 1")
        if not 0 < self.step_fraction <= 1:
            raise ValueError(f"step_fraction={self.step_fraction}: expected in (0, 1]")


@dataclass(frozen=True)
class EoTSettings:
    """The stochastic defence as the attacker models it: k encoders drawn per sample, weight
    noise of this scale, `samples` draws averaged per step."""

    k: int
    noise_scale: float
    samples: int = 2


def gradient_of(loss: Loss) -> Gradient:
    def grad(z: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            return torch.autograd.grad(loss(z).sum(), z)[0]

    return grad


def pgd(x: torch.Tensor, grad: Gradient, settings: PGDSettings) -> torch.Tensor:
    """Signed-gradient descent inside the eps ball around x and the [0, 1] box; the result is
    rounded to 8-bit pixels, as any uploaded file would be."""
    eps = settings.eps / 255
    alpha = eps * settings.step_fraction
    delta = torch.zeros_like(x)
    for _ in range(settings.steps):
        with torch.no_grad():
            delta = (delta - alpha * grad(x + delta).sign()).clamp(-eps, eps)
            delta = (x + delta).clamp(0, 1) - x
    return ((x + delta).clamp(0, 1) * 255).round() / 255


class WhiteBoxCaptioner:
    """Teacher-forced caption loss through the captioner's own weights and normalisation."""

    def __init__(self, captioner: Captioner) -> None:
        self.model, self.processor = captioner.model, captioner.processor
        self.model.requires_grad_(False)

    def loss(self, targets: list[str]) -> Loss:
        ids, mask = caption_tokens(self.processor, targets)
        return lambda x: token_loss(self.model, normalise(self.processor, x), ids, mask)


def pgd_attack(captioner: WhiteBoxCaptioner, x: torch.Tensor, targets: list[str], settings: PGDSettings) -> torch.Tensor:
    return pgd(x, gradient_of(captioner.loss(targets)), settings)


def transfer_attack(surrogate: DomainClip, x: torch.Tensor, target_images: torch.Tensor,
                    settings: PGDSettings) -> torch.Tensor:
    """target_images: (N * m, 3, H, W), m generations of each item's target caption."""
    anchor = surrogate.anchor(target_images, len(target_images) // len(x))
    return pgd(x, gradient_of(lambda z: 1 - (surrogate.embed(z) * anchor).sum(-1)), settings)


def adaptive_attack(
    captioner: WhiteBoxCaptioner, encoders: list[DomainClip], x: torch.Tensor, targets: list[str],
    target_images: torch.Tensor, settings: PGDSettings, weight: float = 2.0,
    eot: EoTSettings | None = None, seed: int = 0,
) -> torch.Tensor:
    """Caption loss + weight * mean over encoders of (1 - cos(input, target generations))."""
    caption_grad = gradient_of(captioner.loss(targets))
    per_item = len(target_images) // len(x)
    anchors = [enc.anchor(target_images, per_item) for enc in encoders]
    rng = torch.Generator().manual_seed(seed)

    def embedding_grad(z: torch.Tensor, i: int, noise_seed: int, scale: float) -> torch.Tensor:
        # The gradient is taken inside the perturbation: restoring the weights after the
        # forward pass would invalidate the tensors autograd saved.
        with perturbed(encoders[i].model.visual, noise_seed, scale):
            return gradient_of(lambda v: 1 - (encoders[i].embed(v) * anchors[i]).sum(-1))(z)

    def draws() -> list[tuple[int, int, float]]:
        if eot is None:
            return [(i, 0, 0.0) for i in range(len(encoders))]
        out = []
        for _ in range(eot.samples):
            noise_seed = int(torch.randint(0, 2**62, (), generator=rng))
            chosen = torch.randperm(len(encoders), generator=rng)[: eot.k].tolist()
            out += [(i, noise_seed + i, eot.noise_scale) for i in chosen]
        return out

    def grad(z: torch.Tensor) -> torch.Tensor:
        picked = draws()
        emb = sum(embedding_grad(z, i, ns, scale) for i, ns, scale in picked) / len(picked)
        return caption_grad(z) + weight * emb

    return pgd(x, grad, settings)
