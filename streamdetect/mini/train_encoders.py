"""Train the mini image encoders: small open_clip CLIP models, contrastive on domain captions.

Three go into the `mini` profile's ensemble (two ViTs of different shape and a ResNet), and a
fourth, a ViT of its own seed, is the surrogate for the transfer attack: an attacker's
stand-in encoder, never part of the detector. Each is saved as an open_clip local dir
(open_clip_config.json + open_clip_model.safetensors), which `open_clip:<dir>` loads.
"""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from streamdetect.mini.domain import SIZE
from streamdetect.mini.training import Log, Progress, batch, half_state, warmup_lr

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


def contrastive_loss(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor, captions: list[str]) -> torch.Tensor:
    """CLIP's symmetric loss, except that pairs with the same caption are all positives: with
    324 distinct scenes a batch repeats captions, and those are not negatives."""
    logits = scale * image @ text.T
    same = torch.tensor([[a == b for b in captions] for a in captions], dtype=logits.dtype)
    target = same / same.sum(1, keepdim=True)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


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
            group["lr"] = warmup_lr(step, WARMUP, LR)
        pixels, scenes = batch(seed, step, BATCH)
        captions = [s.caption for s in scenes]
        image = model.encode_image((pixels - mean) / std, normalize=True)
        text = model.encode_text(open_clip.tokenize(captions, context_length=CONTEXT), normalize=True)
        loss = contrastive_loss(image, text, model.logit_scale.exp(), captions)
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
