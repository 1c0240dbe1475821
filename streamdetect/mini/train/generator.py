"""Train the mini text-to-image model (rectified flow; docs/architecture.md#mini-recipe) and save it."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn.functional as F

from streamdetect.mini.domain import WORDS
from streamdetect.models.mini_t2i import MiniTextEncoder, build_scheduler, build_unet, pack
from streamdetect.mini.train.common import Log, Progress, batch, cosine_lr

STEPS = 2400
BATCH = 64
LR = 1e-3
WARMUP = 100
DROP_CAPTION = 0.1  # trains the unconditional branch for classifier-free guidance


def train_generator(out: Path, seed: int, log: Log, steps: int = STEPS, checkpoint_every: int = 0) -> None:
    """Cosine decay after warm-up (sharper samples than a constant rate); a checkpoint at step k is
    therefore a snapshot mid-schedule, not a run of k steps."""
    torch.manual_seed(seed)
    unet, text = build_unet(), MiniTextEncoder(list(WORDS))
    params = [*unet.parameters(), *text.parameters()]
    opt = torch.optim.AdamW(params, lr=LR, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    progress = Progress("generator", steps, log)
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, steps, WARMUP, LR)
        loss = _loss(unet, text, step, seed, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        progress.update(step, float(loss.detach()))
        if checkpoint_every and (step + 1) % checkpoint_every == 0 and step + 1 < steps:
            save_generator(out, unet, text)
            log(f"generator checkpoint at step {step + 1}")
    save_generator(out, unet, text)


def _loss(unet: torch.nn.Module, text: MiniTextEncoder, step: int, seed: int, gen: torch.Generator) -> torch.Tensor:
    pixels, scenes = batch(seed, step, BATCH)
    x0 = pack(pixels)
    prompts = ["" if torch.rand((), generator=gen) < DROP_CAPTION else s.caption for s in scenes]
    noise = torch.randn(x0.shape, generator=gen)
    # Logit-normal t: most training where the flow is hardest, in the middle.
    t = torch.sigmoid(torch.randn(len(x0), generator=gen))
    tt = t.view(-1, 1, 1, 1)
    x_t = (1 - tt) * x0 + tt * noise
    cond = text(text.tokenize(prompts))
    pred = unet(x_t, t * 1000, encoder_hidden_states=cond).sample
    return F.mse_loss(pred, noise - x0)


def save_generator(out: Path, unet: torch.nn.Module, text: MiniTextEncoder) -> None:
    out.mkdir(parents=True, exist_ok=True)
    # fp16 on disk halves the shipped size; from_dir loads back into fp32.
    copy.deepcopy(unet).half().save_pretrained(out / "unet")
    copy.deepcopy(text).half().save_pretrained(out / "text_encoder")
    build_scheduler().save_pretrained(out / "scheduler")
