"""Train the mini image encoders: small open_clip CLIP models, contrastive on domain captions.

Three go into the `mini` profile's ensemble (two ViTs of different shape and a ResNet), and a
fourth, a ViT of its own seed, is the surrogate for the transfer attack: an attacker's
stand-in encoder, never part of the detector. Each is saved as an open_clip local dir
(open_clip_config.json + open_clip_model.safetensors), which `open_clip:<dir>` loads.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from streamdetect.mini.domain import ALL_SCENES, SIZE, Scene
from streamdetect.mini.training import Log, Progress, batch, cosine_lr, half_state

STEPS = 500
BATCH = 96
LR = 1e-3
WARMUP = 50
CONTEXT = 16
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
# vocab_size stays 49408: open_clip's bundled tokenizer emits ids up to that. A narrow text tower
# keeps that embedding table small on disk.
TEXT_CFG = {"context_length": CONTEXT, "vocab_size": 49408, "width": 24, "heads": 2, "layers": 2}
ENCODERS: dict[str, dict] = {
    "encoder-vit-a": {"seed_offset": 10, "vision_cfg": {"layers": 3, "width": 64, "head_width": 32, "patch_size": 4}},
    "encoder-vit-b": {"seed_offset": 11, "vision_cfg": {"layers": 4, "width": 64, "head_width": 32, "patch_size": 8}},
    "encoder-rn": {"seed_offset": 12, "vision_cfg": {"layers": [1, 1, 1, 1], "width": 8}},
    "surrogate-vit": {"seed_offset": 13, "vision_cfg": {"layers": 3, "width": 64, "head_width": 32, "patch_size": 4}},
}
PROFILE_ENCODERS = ("encoder-vit-a", "encoder-vit-b", "encoder-rn")
SURROGATE = "surrogate-vit"


def model_cfg(name: str) -> dict:
    return {"embed_dim": 64, "vision_cfg": {"image_size": SIZE, **ENCODERS[name]["vision_cfg"]}, "text_cfg": TEXT_CFG}


def _same(rows: list[str], cols: list[str]) -> torch.Tensor:
    return torch.tensor([[a == b for b in cols] for a in rows], dtype=torch.float32)


def contrastive_loss(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor, captions: list[str],
                     hard_text: torch.Tensor | None = None, hard_captions: list[str] | None = None) -> torch.Tensor:
    """CLIP's symmetric loss, except that pairs with the same caption are all positives: with
    324 distinct scenes a batch repeats captions, and those are not negatives. Hard negatives
    (captions one attribute off) join the image-to-text side as extra columns."""
    logits = scale * image @ text.T
    same = _same(captions, captions)
    target = same / same.sum(1, keepdim=True)
    text_side = F.cross_entropy(logits.T, target)
    if hard_text is not None and hard_captions is not None:
        logits = torch.cat([logits, scale * image @ hard_text.T], 1)
        same = torch.cat([same, _same(captions, hard_captions)], 1)
    return (F.cross_entropy(logits, same / same.sum(1, keepdim=True)) + text_side) / 2


def one_attribute_off(scene: Scene, rng: np.random.Generator) -> str:
    """A caption naming a scene that differs from this one in exactly one attribute: the
    difference MirrorCheck must see between an image and its regeneration from a wrong caption
    (a random batch rarely holds such a pair, so contrastive training alone blurs them)."""
    options = [s for s in ALL_SCENES if sum(a != b for a, b in zip(s.attributes(), scene.attributes())) == 1]
    return options[int(rng.integers(len(options)))].caption


def train_encoder(out: Path, name: str, seed: int, log: Log, steps: int = STEPS) -> None:
    if name not in ENCODERS:
        raise ValueError(f"unknown mini encoder {name!r}; expected one of {', '.join(ENCODERS)}")
    seed = seed + ENCODERS[name]["seed_offset"]
    torch.manual_seed(seed)
    cfg = model_cfg(name)
    model = open_clip.CLIP(**cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)
    mean, std = torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1), torch.tensor(OPENAI_STD).view(1, 3, 1, 1)
    progress = Progress(name, steps, log, every=100)
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, steps, WARMUP, LR)
        pixels, scenes = batch(seed, step, BATCH)
        captions = [s.caption for s in scenes]
        rng = np.random.default_rng([seed, step])
        hard = [one_attribute_off(s, rng) for s in scenes]
        image = model.encode_image((pixels - mean) / std, normalize=True)
        text = model.encode_text(open_clip.tokenize(captions + hard, context_length=CONTEXT), normalize=True)
        loss = contrastive_loss(image, text[:BATCH], model.logit_scale.exp(), captions, text[BATCH:], hard)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, 4.6052)  # CLIP's cap: temperature >= 0.01
        progress.update(step, float(loss.detach()))
    save_encoder(out / name, model.eval(), cfg)


def save_encoder(path: Path, model: open_clip.CLIP, cfg: dict) -> None:
    path.mkdir(parents=True, exist_ok=True)
    preprocess = {"mean": list(OPENAI_MEAN), "std": list(OPENAI_STD), "interpolation": "bicubic",
                  "resize_mode": "shortest"}
    (path / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": preprocess}, indent=2))
    save_file(half_state(model), str(path / "open_clip_model.safetensors"))
