"""Attacks on the mini models, all L-inf bounded, all on [0, 1] pixel tensors (N, 3, 32, 32),
every result rounded to 8-bit pixels as any uploaded file is.

- pgd: targeted white-box PGD on the captioner: minimise the cross-entropy of a chosen wrong
  caption, so the VLM says it.
- transfer: AttackVLM style (MF-ii): pull a surrogate encoder's embedding of the input toward
  that of an image generated from the target caption; the victim is never queried.
- untargeted: the smallest change that moves the caption at all: small steps up the loss of the
  clean caption, and each image stops at the first 8-bit iterate whose caption differs.
- adaptive: pgd plus terms pulling every signal the detector computes toward the target: the
  input's embedding toward images generated from the target caption (MirrorCheck) and, where
  the detector also scores caption-image agreement, toward the target caption's text embedding.
  Against stochastic MirrorCheck it takes the expectation over the defence's randomness (EoT):
  every step averages over fresh encoder subsets and weight perturbations.
- easiest: adaptive, aimed per image at the wrong caption the untargeted attack landed on (the
  one easiest to reach), and kept at the 8-bit iterate that says the target while looking most
  like its generations to the detector: rounding cannot undo a success that was checked rounded.
- weakest: easiest's hardening, aimed per image at the one-attribute rival caption that the
  detector's own encoders already find most like the clean image (where they are least sure);
  a strategy first tried by an attack written outside the project.
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

__all__ = ["ATTACKS", "EoTSettings", "PGDSettings", "Pull", "WhiteBoxCaptioner", "adaptive_attack", "pgd",
           "pgd_attack", "transfer_attack", "untargeted_attack"]
Loss = Callable[[torch.Tensor], torch.Tensor]  # (N, 3, H, W) -> (N,) per-image loss to minimise
Gradient = Callable[[torch.Tensor], torch.Tensor]  # (N, 3, H, W) -> its gradient
# A check on rounded candidates: (accepted (N,) bool, cost (N,) float; lower is better).
Check = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
CaptionFn = Callable[[torch.Tensor], list[str]]


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


MARGIN_SCALE = 20.0  # the temperature of the rival loss: steep enough that the gradient points at the closest rival


@dataclass(frozen=True)
class Pull:
    """One signal the detector computes, as the attacker drives it: the cosine between the
    encoder's embedding of the input and `anchor` (N, D), one unit row per image. With `rivals`
    (N, K, D), the anchor must also beat every rival (a caption-margin signal): the loss is the
    cross-entropy of the anchor among anchor and rivals."""

    encoder: DomainClip
    anchor: torch.Tensor
    stochastic: bool = False  # part of the stochastic defence's zoo: drawn and perturbed under EoT
    rivals: torch.Tensor | None = None

    def loss(self, z: torch.Tensor) -> torch.Tensor:
        e = self.encoder.embed(z)
        own = (e * self.anchor).sum(-1)
        if self.rivals is None:
            return 1 - own
        logits = MARGIN_SCALE * torch.cat([own[:, None], torch.einsum("nd,nkd->nk", e, self.rivals)], dim=1)
        return torch.logsumexp(logits, dim=1) - logits[:, 0]


def gradient_of(loss: Loss) -> Gradient:
    def grad(z: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            return torch.autograd.grad(loss(z).sum(), z)[0]

    return grad


def rounded(x: torch.Tensor) -> torch.Tensor:
    return (x.clamp(0, 1) * 255).round() / 255


def pgd(x: torch.Tensor, grad: Gradient, settings: PGDSettings, check: Check | None = None,
        every: int = 5, freeze: bool = False) -> torch.Tensor:
    """Signed-gradient descent inside the eps ball around x and the [0, 1] box, rounded to 8 bits.

    With a check, every `every` steps the rounded iterate is judged and, per image, the accepted
    one of lowest cost is what is returned (the last iterate where none was accepted). With
    freeze, an image stops moving once accepted: its first accepted iterate is its smallest."""
    eps = settings.eps / 255
    alpha = eps * settings.step_fraction
    delta = torch.zeros_like(x)
    best = rounded(x)
    best_cost = torch.full((len(x),), float("inf"))
    found = torch.zeros(len(x), dtype=torch.bool)
    for step in range(1, settings.steps + 1):
        with torch.no_grad():
            moving = (~found if freeze else torch.ones(len(x), dtype=torch.bool)).view(-1, 1, 1, 1)
            update = (delta - alpha * grad(x + delta).sign()).clamp(-eps, eps)
            delta = torch.where(moving, (x + update).clamp(0, 1) - x, delta)
        if check is not None and (step % every == 0 or step == settings.steps):
            candidate = rounded(x + delta)
            accepted, cost = check(candidate)
            better = accepted & (cost < best_cost)
            best = torch.where(better.view(-1, 1, 1, 1), candidate, best)
            best_cost = torch.where(better, cost, best_cost)
            found |= accepted
            if freeze and bool(found.all()):
                break
    final = rounded(x + delta)
    if check is None:
        return final
    return torch.where(found.view(-1, 1, 1, 1), best, final)


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


UNTARGETED_STEP = 0.05  # of eps: small steps, so the first caption change is close to the smallest


def untargeted_attack(captioner: WhiteBoxCaptioner, caption: CaptionFn, x: torch.Tensor, clean: list[str],
                      settings: PGDSettings) -> torch.Tensor:
    """Ascend the clean caption's loss in small steps; each image keeps its first rounded
    iterate whose caption differs from `clean` (checked every step)."""
    ascend = gradient_of(captioner.loss(clean))
    steps = max(settings.steps, int(2 / UNTARGETED_STEP))  # enough small steps to reach eps twice over
    small = PGDSettings(settings.eps, steps=steps, step_fraction=UNTARGETED_STEP)

    def moved(candidate: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        changed = torch.tensor([c != k for c, k in zip(caption(candidate), clean)])
        return changed, torch.zeros(len(candidate))

    return pgd(x, lambda z: -ascend(z), small, check=moved, every=1, freeze=True)


AWAY_CAP = 5.0  # caption loss (mean nats per token) past which the truth is pushed no further


def _capped_away(loss: Loss) -> Loss:
    return lambda z: -loss(z).clamp(max=AWAY_CAP)


def adaptive_attack(
    captioner: WhiteBoxCaptioner, pulls: list[Pull], x: torch.Tensor, targets: list[str],
    settings: PGDSettings, weight: float = 2.0, eot: EoTSettings | None = None, seed: int = 0,
    caption: CaptionFn | None = None, away: list[str] | None = None,
) -> torch.Tensor:
    """Caption loss + weight * mean over pulls of (1 - cos(embedding, anchor)).

    With `caption`, every fifth step is checked rounded, and each image keeps the iterate that
    says its target with the lowest pull loss (the hardened form the `easiest` attack uses).
    With `away`, the captioner's loss on these captions (each image's true one) is also pushed up,
    up to AWAY_CAP: the truth drops out of the captioner's beam search."""
    target_grad = gradient_of(captioner.loss(targets))
    away_grad = gradient_of(_capped_away(captioner.loss(away))) if away else None

    def caption_grad(z: torch.Tensor) -> torch.Tensor:
        return target_grad(z) if away_grad is None else target_grad(z) + away_grad(z)

    rng = torch.Generator().manual_seed(seed)
    zoo = [p for p in pulls if p.stochastic]

    def pull_grad(z: torch.Tensor, pull: Pull, noise_seed: int, scale: float) -> torch.Tensor:
        # The gradient is taken inside the perturbation: restoring the weights after the
        # forward pass would invalidate the tensors autograd saved.
        with perturbed(pull.encoder.model.visual, noise_seed, scale):
            return gradient_of(pull.loss)(z)

    def draws() -> list[tuple[Pull, int, float]]:
        fixed = [(p, 0, 0.0) for p in pulls if not p.stochastic or eot is None]
        if eot is None or not zoo:
            return fixed
        out = []
        for _ in range(eot.samples):
            noise_seed = int(torch.randint(0, 2**62, (), generator=rng))
            chosen = torch.randperm(len(zoo), generator=rng)[: eot.k].tolist()
            out += [(zoo[i], noise_seed + i, eot.noise_scale) for i in chosen]
        return fixed + out

    def grad(z: torch.Tensor) -> torch.Tensor:
        picked = draws()
        if not picked:
            return caption_grad(z)
        pulled = sum(pull_grad(z, p, ns, scale) for p, ns, scale in picked) / len(picked)
        return caption_grad(z) + weight * pulled

    check = None
    if caption is not None:
        def check(candidate: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            hit = torch.tensor([c == t for c, t in zip(caption(candidate), targets)])
            with torch.no_grad():
                cost = torch.stack([p.loss(candidate) for p in pulls]).mean(0) if pulls else torch.zeros(len(x))
            return hit, cost

    return pgd(x, grad, settings, check=check)
