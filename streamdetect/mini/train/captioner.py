"""Train the mini captioner (the victim VLM): a small transformers BLIP on domain scenes.

Saved with save_pretrained, with its processor, so `Captioner.load("hf:<dir>")` loads it the
way it loads Salesforce/blip-image-captioning-base.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

from streamdetect.mini.domain import SIZE, WORDS
from streamdetect.mini.train.common import Log, Progress, batch, cosine_lr

STEPS = 4000
BATCH = 64
LR = 5e-4
WARMUP = 100
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "[ENC]"]


def build_processor() -> BlipProcessor:
    vocab = {tok: i for i, tok in enumerate([*SPECIALS, *WORDS])}
    # transformers 5 ignores vocab_file; the vocabulary must be passed in memory (docs/architecture.md#transformers-vocab).
    tokenizer = BertTokenizer(vocab=vocab, bos_token="[DEC]", model_max_length=32)
    tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    return BlipProcessor(image_processor=BlipImageProcessor(size={"height": SIZE, "width": SIZE}),
                         tokenizer=tokenizer)


def build_model(processor: BlipProcessor) -> BlipForConditionalGeneration:
    vocab = processor.tokenizer.get_vocab()
    common = dict(hidden_size=96, intermediate_size=192, num_attention_heads=4)
    config = BlipConfig(
        # initializer_range: BLIP's vision default (1e-10) starts position embeddings at zero, and
        # from there the model barely learns where a shape is (25% caption accuracy, mostly position).
        vision_config=dict(common, num_hidden_layers=3, image_size=SIZE, patch_size=4, initializer_range=0.02),
        text_config=dict(
            common, num_hidden_layers=2, vocab_size=len(vocab), encoder_hidden_size=96,
            max_position_embeddings=32, pad_token_id=vocab["[PAD]"], bos_token_id=vocab["[DEC]"],
            sep_token_id=vocab["[SEP]"], eos_token_id=vocab["[SEP]"],
        ),
        projection_dim=64,
    )
    return BlipForConditionalGeneration(config)


def caption_tokens(processor: BlipProcessor, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoder input ids ([DEC] words [SEP], padded) and their attention mask."""
    enc = processor.tokenizer(captions, padding=True, return_tensors="pt")
    ids = enc["input_ids"].clone()
    ids[:, 0] = processor.tokenizer.convert_tokens_to_ids("[DEC]")  # BLIP decodes from [DEC], not [CLS]
    return ids, enc["attention_mask"]


def normalise(processor: BlipProcessor, pixels: torch.Tensor) -> torch.Tensor:
    """[0, 1] pixels -> the model's input; differentiable, so attacks can go through it."""
    ip = processor.image_processor
    mean = torch.tensor(ip.image_mean, dtype=pixels.dtype).view(1, 3, 1, 1)
    std = torch.tensor(ip.image_std, dtype=pixels.dtype).view(1, 3, 1, 1)
    return (pixels - mean) / std


def token_loss(model: BlipForConditionalGeneration, pixel_values: torch.Tensor, ids: torch.Tensor,
               mask: torch.Tensor) -> torch.Tensor:
    """Per-image mean cross-entropy of the caption tokens given the image (teacher forcing)."""
    logits = model(pixel_values=pixel_values, input_ids=ids, attention_mask=mask).logits
    target = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
    ce = F.cross_entropy(logits[:, :-1].transpose(1, 2), target, ignore_index=-100, reduction="none")
    return ce.sum(1) / mask[:, 1:].sum(1)


def train_captioner(out: Path, seed: int, log: Log, steps: int = STEPS) -> None:
    torch.manual_seed(seed)
    processor = build_processor()
    model = build_model(processor).train()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)
    progress = Progress("captioner", steps, log, every=100)
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, steps, WARMUP, LR)
        pixels, scenes = batch(seed, step, BATCH)
        ids, mask = caption_tokens(processor, [s.caption for s in scenes])
        loss = token_loss(model, normalise(processor, pixels), ids, mask).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        progress.update(step, float(loss.detach()))
    out.mkdir(parents=True, exist_ok=True)
    copy.deepcopy(model).eval().half().save_pretrained(out)  # fp16 on disk; loaders cast back
    processor.save_pretrained(out)
