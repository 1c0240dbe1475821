"""Baseline detectors from the paper's table, on the mini models. Each returns a similarity per
image (flag when low), the same convention as MirrorCheck's score.

- caption_margin (a defence, not a baseline): the caption's similarity to the image minus that
  of its best rival (by default the caption with one word swapped for another of its kind, as
  the worker's first stage ``swap`` has them), under each encoder; used on the robust encoders.
- clip_score: cosine between the caption's text embedding and the image's embedding, averaged
  over the encoders ("CLIP" in the paper's table).
- feature_squeezing (Xu et al.): does the caption survive bit-depth reduction and a median
  filter? Agreement of the squeezed captions with the original, worst squeezer.
- mutation_divergence (JailGuard style): caption randomly mutated copies of the input; an
  adversarial input's captions scatter. Mean pairwise agreement of the variants' captions.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from streamdetect.detector.swaps import load_swaps
from streamdetect.mini.clip import DomainClip
from streamdetect.mini.domain import to_images

CaptionFn = Callable[[torch.Tensor], list[str]]  # (N, 3, H, W) pixels -> captions
UNCHECKED = -2.0  # caption_margin of a caption the swap first stage cannot check: below every margin


def word_agreement(a: str, b: str) -> float:
    """Fraction of word positions that agree (1.0: same caption)."""
    wa, wb = a.split(), b.split()
    if not wa and not wb:
        return 1.0
    return sum(x == y for x, y in zip(wa, wb)) / max(len(wa), len(wb))


def clip_score(clips: list[DomainClip], x: torch.Tensor, captions: list[str]) -> list[float]:
    with torch.no_grad():
        sims = [(clip.embed(x) * clip.embed_text(captions)).sum(-1) for clip in clips]
    return [float(s) for s in torch.stack(sims).mean(0)]


def caption_margin(clips: list[DomainClip], x: torch.Tensor, captions: list[str],
                   rivals: list[list[str]] | None = None) -> list[float]:
    """How much better the caption fits the image than its nearest rivals (by default the caption
    with one word swapped, from the mini vocabulary: for a domain caption, the captions one
    attribute away; or the ones given, e.g. the captioner's beam), under each encoder, averaged:
    positive when the encoder agrees with the caption. On robust encoders an attacker must move
    the embedding itself to flip it, not just the caption. By default a caption the swap first
    stage cannot check scores UNCHECKED, the bottom of the scale (it never exits, and is the most
    suspect); given rivals, an image with none is measured against the worst possible one (cosine -1)."""
    if rivals is None:
        swaps = load_swaps("mini")
        margins = caption_margin(clips, x, captions, [swaps.rivals(c) for c in captions])
        return [UNCHECKED if swaps.unchecked(c) else m for c, m in zip(captions, margins)]
    with torch.no_grad():
        margins = []
        for clip in clips:
            image = clip.embed(x)
            own = (image * clip.embed_text(captions)).sum(-1)
            rival = torch.stack([(image[i : i + 1] @ clip.embed_text(r).T).max() if r else torch.tensor(-1.0)
                                 for i, r in enumerate(rivals)])
            margins.append(own - rival)
    return [float(m) for m in torch.stack(margins).mean(0)]


def bit_depth(x: torch.Tensor, bits: int = 4) -> torch.Tensor:
    levels = 2**bits - 1
    return (x * levels).round() / levels


def median_filter(x: torch.Tensor, size: int = 2) -> torch.Tensor:
    # Pad right/bottom for even sizes, as Xu et al.'s 2x2 filter does.
    padded = F.pad(x, (size // 2, (size - 1) // 2, size // 2, (size - 1) // 2), mode="reflect") if size > 2 \
        else F.pad(x, (0, size - 1, 0, size - 1), mode="reflect")
    patches = padded.unfold(2, size, 1).unfold(3, size, 1)
    return patches.reshape(*patches.shape[:4], -1).median(-1).values


def feature_squeezing(caption: CaptionFn, x: torch.Tensor, captions: list[str]) -> list[float]:
    squeezed = [caption(bit_depth(x)), caption(median_filter(x))]
    return [min(word_agreement(c, s[i]) for s in squeezed) for i, c in enumerate(captions)]


def mutate(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """One random JailGuard-style image mutation per image. No horizontal flips or large moves:
    they would change what a correct caption says (left/right) and so are not mutations here."""
    out = []
    for img in x:
        kind = int(rng.integers(5))
        if kind == 0:
            img = img + torch.from_numpy(rng.normal(0, 8 / 255, img.shape).astype(np.float32))
        elif kind == 1:
            img = img * float(rng.uniform(0.85, 1.15))
        elif kind == 2:
            dx, dy = (int(v) for v in rng.integers(-1, 2, 2))
            img = torch.roll(img, shifts=(dy, dx), dims=(1, 2))
        elif kind == 3:
            img = F.avg_pool2d(F.pad(img[None], (1, 1, 1, 1), mode="replicate"), 3, 1)[0]
        else:
            top, left = (int(v) for v in rng.integers(0, 28, 2))
            img = img.clone()
            img[:, top : top + 4, left : left + 4] = float(rng.uniform(0, 1))
        out.append(img.clamp(0, 1))
    return torch.stack(out)


def mutation_divergence(caption: CaptionFn, x: torch.Tensor, variants: int, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    mutated = [caption(mutate(x, rng)) for _ in range(variants)]
    scores = []
    for i in range(len(x)):
        pairs = list(itertools.combinations([m[i] for m in mutated], 2))
        scores.append(sum(word_agreement(a, b) for a, b in pairs) / len(pairs))
    return scores


def captioner_fn(captioner) -> CaptionFn:  # type: ignore[no-untyped-def]
    """Captions of pixel tensors through the real Captioner, via 8-bit images like uploads."""
    return lambda x: captioner.caption(to_images(x))
