"""Scoring labelled items with the configured detector: caption (unless the item has a caption
or a regeneration), regenerate, embed and score, in batches, by the same detector code the
worker runs, stochastic draws included."""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from PIL import Image

from streamdetect.offline.items import EvalItem, Scored


@dataclass(frozen=True)
class RunOptions:
    seed: int = 0  # regeneration seed base, as the worker's `seed`
    draw_seed: int | None = None  # one draw for every item (the reference's 'config' sampling)
    batch: int = 8
    regenerated_dir: Path | None = None  # keep regenerations here (eval --out DIR/regenerated)
    agreement: bool = False  # also the cascade's first-stage score of each item (calibrate --cascade)
    first_stage: str = "agreement"  # which first-stage score: the caption agreement or its margin over rivals
    swaps: Any = None  # first stage swap: its vocabulary (detector.Swaps)


def regeneration_seed(name: str, seed: int) -> int:
    """Per item and independent of order, like the worker's per-upload seed."""
    return (zlib.crc32(name.encode()) + seed) % 2**31


def item_draw_seed(name: str, seed: int) -> int:
    digest = hashlib.sha256(f"draw:{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 2**53


def score_items(
    items: Sequence[EvalItem], models: Any, stochastic: Any, options: RunOptions,
    progress: Callable[[int], None] = lambda n: None,
) -> list[Scored]:
    """Caption, regenerate and score every item in batches of ``options.batch``.
    ``models`` has captioner, generators, encoders (models.zoo.LoadedZoo)."""
    if options.batch < 1:
        raise ValueError(f"batch must be >= 1, got {options.batch}")
    out: list[Scored] = []
    for start in range(0, len(items), options.batch):
        chunk = items[start : start + options.batch]
        out += _score_chunk(chunk, models, stochastic, options)
        progress(len(chunk))
    return out


def _score_chunk(chunk: Sequence[EvalItem], models: Any, stochastic: Any, options: RunOptions) -> list[Scored]:
    from streamdetect.detector import PairToScore, decide, draw, score_batch

    images = [_open(i.input) for i in chunk]
    captions = _captions(chunk, images, models)
    seeds = [regeneration_seed(i.name, options.seed) for i in chunk]
    draws = [None if stochastic is None else draw(
        options.draw_seed if options.draw_seed is not None else item_draw_seed(i.name, options.seed),
        max(len(models.generators), 1), len(models.encoders), stochastic) for i in chunk]
    regenerated = _regenerate(chunk, captions, seeds, draws, models)
    paths = [i.generated or _keep(options.regenerated_dir, i, im) for i, im in zip(chunk, regenerated)]
    per_encoder = score_batch(models.encoders, [PairToScore(a, b, d) for a, b, d in zip(images, regenerated, draws)])
    agreements = _first_stage(models, images, captions, options) if options.agreement else [None] * len(chunk)
    scored = []
    for item, caption, seed, drawn, path, scores, agreed in zip(chunk, captions, seeds, draws, paths, per_encoder,
                                                                agreements):
        record = None if drawn is None else {
            "seed": drawn.seed, "noise_scale": drawn.noise_scale,
            "generator": models.generators[drawn.generator].spec if item.generated is None else None,
            "encoders": [models.encoders[j].spec for j in drawn.encoders]}
        scored.append(Scored(item, decide(scores, 0.0)[0], scores, caption, path, seed, record, agreed))
    return scored


def _first_stage(models: Any, images: list[Image.Image], captions: list[str],
                 options: RunOptions) -> list[float | None]:
    """The cascade's first-stage score of each item, as the worker computes it; None for one that
    could never exit (detector.cascade.can_exit), which is no sample of the exit's fit."""
    from streamdetect.detector import RIVALS, agreement, agreement_scores, margin_scores
    from streamdetect.detector.cascade import can_exit

    if options.first_stage == "agreement":
        return [agreement(s) for s in agreement_scores(models.encoders, images, captions)]
    swaps = options.swaps
    rivals = [swaps.rivals(c) for c in captions] if options.first_stage == "swap" else \
        models.captioner.rivals(images, captions, RIVALS)
    margins = [agreement(s) for s in margin_scores(models.encoders, images, captions, rivals)]
    return [m if can_exit(options.first_stage, m, swaps.unchecked(c) if swaps else None) else None
            for c, m in zip(captions, margins)]


def _open(path: Path) -> Image.Image:
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except OSError as exc:
        raise ValueError(f"cannot read image {path}: {exc}") from exc


def _captions(chunk: Sequence[EvalItem], images: list[Image.Image], models: Any) -> list[str]:
    """The CSV's caption; else the captioner's; items with a regeneration and no caption get ''."""
    need = [k for k, i in enumerate(chunk) if i.caption is None and i.generated is None]
    captions = [i.caption or "" for i in chunk]
    if need:
        for k, text in zip(need, models.captioner.caption([images[k] for k in need])):
            captions[k] = text
    return captions


def _regenerate(chunk: Sequence[EvalItem], captions: list[str], seeds: list[int], draws: list[Any],
                models: Any) -> list[Image.Image]:
    out: list[Image.Image | None] = [_open(i.generated) if i.generated else None for i in chunk]
    groups: dict[int, list[int]] = {}
    for k, item in enumerate(chunk):
        if item.generated is None:
            groups.setdefault(draws[k].generator if draws[k] else 0, []).append(k)
    for index, members in sorted(groups.items()):
        images = models.generators[index].generate([captions[k] for k in members], [seeds[k] for k in members])
        for k, image in zip(members, images):
            out[k] = image
    return [im for im in out if im is not None]


def _keep(folder: Path | None, item: EvalItem, image: Image.Image) -> Path | None:
    if folder is None:
        return None
    path = folder / f"{Path(item.name).with_suffix('')}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path
