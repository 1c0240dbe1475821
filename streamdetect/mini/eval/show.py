"""`streamdetect attack`: attack a few mini test images and lay them out beside what MirrorCheck
regenerates from their captions, so a person can see the attack and the detection."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from streamdetect.detector.mirrorcheck import ensemble_score, score_pairs
from streamdetect.mini.domain import make_split, to_images, to_tensor, wrong_caption
from streamdetect.mini.eval.bench import BenchSettings, MiniBench, easiest_targets
from streamdetect.models.profiles import MINI_WEIGHTS

SCALE = 4  # 32x32 pictures are too small to look at


AIMS = {"vanilla": "public", "stochastic": "stochastic", "robust": "robust"}


def run_attack(kind: str, eps: float, n: int, steps: int, against: str, target_set: str, seed: int, out: Path,
               weights: Path = MINI_WEIGHTS) -> dict:
    bench = MiniBench(BenchSettings(seed=seed, attack_steps=steps), weights)
    images, scenes = make_split(seed, "test", n)
    x = to_tensor(images)
    clean_captions = bench.caption(x)
    targets = [wrong_caption(s, np.random.default_rng([seed, 7, i]), target_set) for i, s in enumerate(scenes)]
    if kind == "easiest":
        landed = bench.caption(bench.attack("untargeted", x, [], eps, clean_captions=clean_captions))
        targets = easiest_targets(landed, clean_captions, targets)
    if kind == "weakest":
        targets = bench.weakest_targets(x, clean_captions, AIMS[against])
    adv = bench.attack(kind, x, targets, eps, AIMS[against], clean_captions=clean_captions)
    adv_images = to_images(adv)
    adv_captions = bench.caption(adv)
    regen_clean = bench.regenerate(bench.models.generator, clean_captions)
    regen_adv = bench.regenerate(bench.models.generator, adv_captions)
    encoders = bench.robust if against == "robust" else bench.models.encoders
    score_clean = score_pairs(encoders, images, regen_clean)
    score_adv = score_pairs(encoders, adv_images, regen_adv)
    out.mkdir(parents=True, exist_ok=True)
    grid(list(zip(images, regen_clean, adv_images, regen_adv))).save(out / "grid.png")
    _save_all(out / "clean", images)
    _save_all(out / "attacked", adv_images)
    goal = adv_captions if kind == "untargeted" else targets
    items = [{"truth": s.caption, "target": None if kind == "untargeted" else t, "clean_caption": c,
              "attacked_caption": a, "success": (a != c) if kind == "untargeted" else a == t,
              "mirrorcheck_clean": ensemble_score(sc), "mirrorcheck_attacked": ensemble_score(sa),
              "linf_255": float((adv[i] - x[i]).abs().max() * 255)}
             for i, (s, t, c, a, sc, sa) in enumerate(zip(scenes, goal, clean_captions, adv_captions,
                                                          score_clean, score_adv))]
    summary = {"attack": kind, "eps": eps, "steps": steps, "against": against, "targets": target_set,
               "scored_with": [e.name for e in encoders],
               "n": n, "attack_success_rate": float(np.mean([i["success"] for i in items])),
               "columns": ["input", "regenerated from its caption", "attacked", "regenerated from its caption"]}
    (out / "results.json").write_text(json.dumps({**summary, "items": items}, indent=2))
    return summary


def write_scenes(seed: int, split: str, n: int, start: int, out: Path) -> None:
    images, scenes = make_split(seed, split, n, start)
    names = _save_all(out, images, start)
    lines = ["file,caption", *(f"{name},{scene.caption}" for name, scene in zip(names, scenes))]
    (out / "captions.csv").write_text("\n".join(lines) + "\n")


def _save_all(folder: Path, images: list[Image.Image], start: int = 0) -> list[str]:
    """PNG is lossless: the saved pixels are exactly the attacked ones."""
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"{start + i:04d}.png" for i in range(len(images))]
    for name, image in zip(names, images):
        image.save(folder / name)
    return names


def grid(rows: list[tuple[Image.Image, ...]], gap: int = 2) -> Image.Image:
    cell = rows[0][0].width * SCALE
    cols = len(rows[0])
    sheet = Image.new("RGB", (cols * (cell + gap) - gap, len(rows) * (cell + gap) - gap), (255, 255, 255))
    for r, row in enumerate(rows):
        for c, im in enumerate(row):
            sheet.paste(im.resize((cell, cell), Image.Resampling.NEAREST), (c * (cell + gap), r * (cell + gap)))
    return sheet
