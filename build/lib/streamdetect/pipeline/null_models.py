"""Instant stand-ins for the three model interfaces, to measure everything but the models.

The benchmark runs the stream path once with these, so the gap to a bare Kafka loop is the
stream layer's own cost. They answer at once with fixed outputs: the verdicts mean nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from PIL import Image

EMBED_DIM = 8


class NullCaptioner:
    spec = "null:captioner"

    def caption(self, images: list[Image.Image]) -> list[str]:
        return ["null caption"] * len(images)


class NullGenerator:
    spec = "null:generator"

    def generate(self, prompts: list[str], seeds: list[int]) -> list[Image.Image]:
        if len(prompts) != len(seeds):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
        return [Image.new("RGB", (8, 8)) for _ in prompts]


class NullEncoder:
    spec = "null:encoder"
    name = "null"

    def embed(self, images: list[Image.Image]) -> torch.Tensor:
        return torch.ones(len(images), EMBED_DIM)


@dataclass
class NullModels:
    """The same shape as models.ModelSet."""

    captioner: NullCaptioner = field(default_factory=NullCaptioner)
    generator: NullGenerator = field(default_factory=NullGenerator)
    encoders: list[NullEncoder] = field(default_factory=lambda: [NullEncoder()])
