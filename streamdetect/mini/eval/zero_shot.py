"""Zero-shot accuracy of a mini encoder over the domain's captions, clean and under attack: the
share of test images whose own caption is the nearest of all 324 (robust: after eps-bounded
untargeted PGD on that choice, rounded to 8 bits). This is how TeCoA/FARE robustness is reported,
and it bounds what a detector built on the encoder can hold."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from streamdetect.mini.attacks import PGDSettings, gradient_of, pgd
from streamdetect.mini.clip import DomainClip
from streamdetect.mini.domain import ALL_SCENES, Scene

ROBUST_STEPS = 20


def zero_shot(clip: DomainClip, x: torch.Tensor, scenes: list[Scene], eps: float = 8.0) -> dict[str, float]:
    captions = [s.caption for s in ALL_SCENES]
    text = clip.embed_text(captions)
    labels = torch.tensor([captions.index(s.caption) for s in scenes])

    def loss(z: torch.Tensor) -> torch.Tensor:
        return -F.cross_entropy(100 * clip.embed(z) @ text.T, labels, reduction="none")

    adv = pgd(x, gradient_of(loss), PGDSettings(eps, steps=ROBUST_STEPS, step_fraction=0.25))
    with torch.no_grad():
        clean_acc = float(((clip.embed(x) @ text.T).argmax(-1) == labels).float().mean())
        robust_acc = float(((clip.embed(adv) @ text.T).argmax(-1) == labels).float().mean())
    return {"clean": clean_acc, "robust": robust_acc, "eps": eps, "n": len(scenes)}
