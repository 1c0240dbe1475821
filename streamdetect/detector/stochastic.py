"""Stochastic MirrorCheck: per request, a text-to-image model drawn from a zoo, a random subset of
k encoders, and a one-time-use Gaussian perturbation of those encoders' weights.

Everything a request draws comes from one integer seed, recorded in its verdict, so an audit
record can be re-scored to the same number. The perturbation is undone exactly (the weights are
copied back from a snapshot, not un-added: float subtraction would not restore every bit), and
scoring runs one request at a time inside it, so a perturbation never reaches a batch-mate.
"""

from __future__ import annotations

import hashlib
import math
import random
import secrets
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Protocol, Sequence

import torch
from PIL import Image

from streamdetect.detector.mirrorcheck import cosine_scores, score_pairs

# Seeds stay below 2**53 so JSON readers that hold numbers as doubles (JavaScript) keep every bit.
SEED_LIMIT = 2**53
MAX_NOISE_SCALE = 0.1  # the paper uses 5e-6 .. 1e-3; far above that the encoders stop being encoders


class Encoder(Protocol):
    spec: str
    name: str
    module: torch.nn.Module

    def embed(self, images: list[Image.Image]) -> torch.Tensor: ...


@dataclass(frozen=True)
class StochasticSettings:
    """k encoders per request (0: the whole zoo) and the noise scale (0: no perturbation)."""

    k: int = 0
    noise_scale: float = 5e-4

    def __post_init__(self) -> None:
        if self.k < 0:
            raise ValueError(f"k (encoders per request) must be >= 0, got {self.k}")
        if not (math.isfinite(self.noise_scale) and 0 <= self.noise_scale <= MAX_NOISE_SCALE):
            raise ValueError(f"noise_scale must be in [0, {MAX_NOISE_SCALE}], got {self.noise_scale}")

    def encoders_per_request(self, zoo_size: int) -> int:
        k = self.k or zoo_size
        if k > zoo_size:
            raise ValueError(f"k={self.k} encoders per request, but the encoder zoo has only {zoo_size}")
        return k


@dataclass(frozen=True)
class Draw:
    """What one request drew: indices into the generator and encoder zoos, and the noise."""

    seed: int
    generator: int
    encoders: tuple[int, ...]  # in zoo order
    noise_scale: float


def new_seed() -> int:
    """An unpredictable draw seed (OS entropy): an attacker must not be able to foresee the draw."""
    return secrets.randbelow(SEED_LIMIT)


def draw(seed: int, n_generators: int, n_encoders: int, settings: StochasticSettings) -> Draw:
    """The draw a seed stands for; the same seed and zoo sizes always give the same draw."""
    if not 0 <= seed < SEED_LIMIT:
        raise ValueError(f"draw seed must be in [0, 2**53), got {seed}")
    if n_generators < 1 or n_encoders < 1:
        raise ValueError(f"zoos must not be empty: {n_generators} generators, {n_encoders} encoders")
    rng = random.Random(seed)
    generator = rng.randrange(n_generators)
    encoders = tuple(sorted(rng.sample(range(n_encoders), settings.encoders_per_request(n_encoders))))
    return Draw(seed, generator, encoders, settings.noise_scale)


def noise_seed(draw_seed: int, encoder_spec: str) -> int:
    """Each encoder's noise gets its own stream, keyed by its spec (stable across processes)."""
    digest = hashlib.sha256(f"{draw_seed}:{encoder_spec}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1  # torch seeds are signed 64-bit


@contextmanager
def perturbed(module: torch.nn.Module, seed: int, scale: float) -> Iterator[None]:
    """Add N(0, scale^2) noise to every floating-point parameter, then restore them bit for bit.

    Noise comes from a generator on the parameter's device, so a draw is reproducible on the
    same kind of device. In fp16 a scale below the weights' resolution is partly rounded away.
    """
    if scale == 0:
        yield
        return
    params = [p for p in module.parameters() if p.is_floating_point()]
    with torch.no_grad():
        snapshot = [p.detach().clone() for p in params]
    generators: dict[torch.device, torch.Generator] = {}
    try:
        with torch.no_grad():
            for p in params:
                gen = generators.get(p.device)
                if gen is None:
                    gen = generators[p.device] = torch.Generator(p.device).manual_seed(seed)
                noise = torch.randn(p.shape, generator=gen, device=p.device, dtype=torch.float32)
                p.add_((noise * scale).to(p.dtype))
        yield
    finally:
        with torch.no_grad():
            for p, original in zip(params, snapshot):
                p.copy_(original)


def score_with_draw(
    encoders: Sequence[Encoder], image: Image.Image, regenerated: Image.Image, draw_seed: int, scale: float
) -> dict[str, float]:
    """Per-encoder cosine scores of one pair, each encoder under its own one-time perturbation."""
    scores: dict[str, float] = {}
    for encoder in encoders:
        with perturbed(encoder.module, noise_seed(draw_seed, encoder.spec), scale):
            embeddings = encoder.embed([image, regenerated])
        scores[encoder.name] = cosine_scores(embeddings[:1], embeddings[1:])[0]
    return scores


@dataclass(frozen=True)
class PairToScore:
    image: Image.Image
    regenerated: Image.Image
    draw: Draw | None = None  # None: the plain ensemble, no perturbation


def score_batch(zoo: Sequence[Encoder], items: Sequence[PairToScore]) -> list[dict[str, float]]:
    """Score a batch from many requests. Unperturbed items share one batched call per encoder;
    each drawn item is scored alone inside its own perturbation, so none leaks into another."""
    results: list[dict[str, float] | None] = [None] * len(items)
    plain = [i for i, item in enumerate(items) if item.draw is None]
    for i, scores in zip(plain, score_pairs(zoo, [items[i].image for i in plain],
                                             [items[i].regenerated for i in plain])):
        results[i] = scores
    for i, item in enumerate(items):
        if item.draw is not None:
            selected = [zoo[j] for j in item.draw.encoders]
            results[i] = score_with_draw(selected, item.image, item.regenerated, item.draw.seed,
                                         item.draw.noise_scale)
    return [r for r in results if r is not None]


class Regenerator(Protocol):
    spec: str

    def generate(self, prompts: list[str], seeds: list[int]) -> list[Image.Image]: ...


def rescore(
    verdict: Mapping[str, Any], image: Image.Image, generator: Regenerator, encoders: Mapping[str, Encoder]
) -> dict[str, float]:
    """Re-score an audit verdict: regenerate its caption with its generator and seed, and score
    with its encoders under its recorded perturbation. ``encoders`` maps spec -> loaded encoder."""
    return rescore_with_regeneration(verdict, image, generator, encoders)[0]


def rescore_with_regeneration(
    verdict: Mapping[str, Any], image: Image.Image, generator: Regenerator, encoders: Mapping[str, Encoder]
) -> tuple[dict[str, float], Image.Image]:
    """``rescore``, and the regeneration it scored against (``streamdetect rescore`` compares its
    hash with the one the verdict's evidence recorded)."""
    models = verdict["models"]
    if generator.spec != models["generator"]:
        raise ValueError(f"verdict {verdict['upload_id']} was regenerated by {models['generator']!r}, "
                         f"not {generator.spec!r}")
    missing = [spec for spec in models["encoders"] if spec not in encoders]
    if missing:
        raise ValueError(f"verdict {verdict['upload_id']} needs encoders {missing}, which are not loaded")
    drawn = verdict.get("stochastic") or {"seed": 0, "noise_scale": 0.0}
    regenerated = generator.generate([verdict["caption"]], [int(verdict["seed"])])[0]
    selected = [encoders[spec] for spec in models["encoders"]]
    scores = score_with_draw(selected, image, regenerated, int(drawn["seed"]), float(drawn["noise_scale"]))
    return scores, regenerated
