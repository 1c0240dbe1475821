"""Train the mini image encoders: small open_clip CLIP models, trained to pick each scene's
caption out of all the domain's captions (CLIP's image-to-text loss over the closed caption set).

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
import torchvision.transforms.v2.functional as TF
from safetensors.torch import save_file

from streamdetect.mini.domain import ALL_SCENES, SIZE
from streamdetect.mini.train.common import Log, Progress, batch, cosine_lr, half_state

STEPS = 1500
BATCH = 96
LR = 3e-3
WARMUP = 50
BLUR_P, BLUR_SIGMA, NOISE_MAX = 0.5, (0.3, 1.0), 0.04
CONTEXT = 16
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
# vocab_size stays 49408: open_clip's bundled tokenizer emits ids up to that. A narrow text tower
# keeps that embedding table small on disk.
TEXT_CFG = {"context_length": CONTEXT, "vocab_size": 49408, "width": 24, "heads": 2, "layers": 2}
ENCODERS: dict[str, dict] = {
    # vit-a was patch 4 (64 tokens) until a retrain with augmentation stalled on it; 16 wider
    # tokens train reliably. The surrogate keeps the patch-4 shape.
    "encoder-vit-a": {"seed_offset": 10, "vision_cfg": {"layers": 3, "width": 96, "head_width": 32, "patch_size": 8}},
    "encoder-vit-b": {"seed_offset": 11, "vision_cfg": {"layers": 4, "width": 64, "head_width": 32, "patch_size": 8}},
    "encoder-rn": {"seed_offset": 12, "vision_cfg": {"layers": [1, 1, 1, 1], "width": 8}},
    "surrogate-vit": {"seed_offset": 13, "vision_cfg": {"layers": 3, "width": 64, "head_width": 32, "patch_size": 4}},
}
PROFILE_ENCODERS = ("encoder-vit-a", "encoder-vit-b", "encoder-rn")
SURROGATE = "surrogate-vit"


def model_cfg(name: str) -> dict:
    return {"embed_dim": 64, "vision_cfg": {"image_size": SIZE, **ENCODERS[name]["vision_cfg"]}, "text_cfg": TEXT_CFG}


def caption_loss(image: torch.Tensor, captions_embedded: torch.Tensor, scale: torch.Tensor,
                 labels: torch.Tensor) -> torch.Tensor:
    """CLIP's image-to-text loss with every domain caption as a candidate, not just the batch's:
    the domain has only 324 captions, so the full set is cheap and every wrong caption, including
    the one-attribute neighbours an attack aims for, pushes back. At 500 in-batch steps
    the ViT encoders named few test scenes and hardly told left from right."""
    return F.cross_entropy(scale * image @ captions_embedded.T, labels)


def augment(pixels: torch.Tensor, seed: int, step: int) -> torch.Tensor:
    """Random blur on half the images and faint Gaussian noise on all: the generator's drawings
    are softer and noisier than the renders, and an encoder that has only seen crisp renders
    scores a correct regeneration as unlike its input."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
    n = len(pixels)
    blur = torch.rand(n, generator=gen) < BLUR_P
    sigma = BLUR_SIGMA[0] + (BLUR_SIGMA[1] - BLUR_SIGMA[0]) * torch.rand(n, generator=gen)
    blurred = torch.stack([TF.gaussian_blur(p[None], [5, 5], [float(s)])[0] if b else p
                           for p, b, s in zip(pixels, blur, sigma)])
    noise = torch.randn(pixels.shape, generator=gen) * NOISE_MAX * torch.rand(n, 1, 1, 1, generator=gen)
    return (blurred + noise).clamp(0, 1)


def train_encoder(out: Path, name: str, seed: int, log: Log, steps: int = STEPS) -> None:
    if name not in ENCODERS:
        raise ValueError(f"unknown mini encoder {name!r}; expected one of {', '.join(ENCODERS)}")
    seed = seed + ENCODERS[name]["seed_offset"]
    torch.manual_seed(seed)
    cfg = model_cfg(name)
    model = open_clip.CLIP(**cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)
    mean, std = torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1), torch.tensor(OPENAI_STD).view(1, 3, 1, 1)
    captions = [scene.caption for scene in ALL_SCENES]
    tokens = open_clip.tokenize(captions, context_length=CONTEXT)
    index = {caption: i for i, caption in enumerate(captions)}
    progress = Progress(name, steps, log, every=100)
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, steps, WARMUP, LR)
        pixels, scenes = batch(seed, step, BATCH)
        image = model.encode_image((augment(pixels, seed, step) - mean) / std, normalize=True)
        text = model.encode_text(tokens, normalize=True)
        labels = torch.tensor([index[s.caption] for s in scenes])
        loss = caption_loss(image, text, model.logit_scale.exp(), labels)
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
