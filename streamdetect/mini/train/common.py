"""Shared pieces of the mini trainers: seeded batches of domain scenes, warm-up, progress logs."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch

from streamdetect.mini.domain import Scene, make_item, to_tensor

Log = Callable[[str], None]


def batch(seed: int, step: int, size: int) -> tuple[torch.Tensor, list[Scene]]:
    """Fresh training scenes for one step: pixels (size, 3, 32, 32) in [0, 1] and their scenes.
    Indices never repeat across steps, so the trainers see new pictures every time."""
    items = [make_item(seed, "train", step * size + i) for i in range(size)]
    return to_tensor([im for im, _ in items]), [scene for _, scene in items]


def warmup_lr(step: int, warmup: int, lr: float) -> float:
    return lr * min(1.0, (step + 1) / warmup)


def cosine_lr(step: int, steps: int, warmup: int, lr: float) -> float:
    """Linear warm-up, then cosine decay to zero: the late small steps settle the model where a
    constant rate keeps it bouncing (the captioner's exact-caption errors at a constant rate)."""
    if step < warmup:
        return warmup_lr(step, warmup, lr)
    return lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


class Progress:
    """Logs a line every `every` steps with the loss averaged since the last line."""

    def __init__(self, name: str, steps: int, log: Log, every: int = 50) -> None:
        self.name, self.steps, self.log, self.every = name, steps, log, every
        self.start = time.monotonic()
        self.total, self.count = 0.0, 0

    def update(self, step: int, loss: float) -> None:
        self.total, self.count = self.total + loss, self.count + 1
        if (step + 1) % self.every == 0 or step + 1 == self.steps:
            elapsed = time.monotonic() - self.start
            self.log(f"{self.name} step {step + 1}/{self.steps} loss {self.total / self.count:.4f} "
                     f"elapsed {elapsed:.0f}s")
            self.total, self.count = 0.0, 0


def half_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """fp16 copies of float weights (halves the shipped size; loaders cast back to fp32)."""
    return {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in module.state_dict().items()}
