"""Captioner: image -> text with a transformers image-to-text model (BLIP and friends)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor, PreTrainedModel

from ._torch import torch_device, torch_dtype
from .specs import check_options, parse_spec


@dataclass
class Captioner:
    spec: str
    processor: Any
    model: PreTrainedModel
    device: torch.device
    dtype: torch.dtype

    @classmethod
    def load(cls, spec: str, device: str = "cpu", dtype: str = "fp32") -> Captioner:
        """Load from the hub cache or a local dir; both go through from_pretrained."""
        parsed = parse_spec(spec)
        if parsed.kind != "hf":
            raise ValueError(f"captioner spec {spec!r} must be of kind 'hf:', not {parsed.kind!r}")
        check_options(parsed, frozenset())
        dev, dt = torch_device(device), torch_dtype(dtype)
        name = os.path.expanduser(parsed.name)
        processor = AutoProcessor.from_pretrained(name)
        model = AutoModelForImageTextToText.from_pretrained(name, dtype=dt).to(dev).eval()
        return cls(spec, processor, model, dev, dt)

    def caption(self, images: list[Image.Image], max_new_tokens: int = 20) -> list[str]:
        """One caption per image, from a single batched greedy generate call."""
        if not images:
            return []
        inputs = self.processor(images=[im.convert("RGB") for im in images], return_tensors="pt")
        pixel_values = inputs["pixel_values"].to(self.device, self.dtype)
        with torch.inference_mode():
            # do_sample=False: the same image must always give the same caption.
            tokens = self.model.generate(
                pixel_values=pixel_values, max_new_tokens=max_new_tokens, do_sample=False
            )
        texts = self.processor.batch_decode(tokens, skip_special_tokens=True)
        return [" ".join(text.split()) for text in texts]

    def rivals(self, images: list[Image.Image], captions: list[str], k: int = 4,
               max_new_tokens: int = 20) -> list[list[str]]:
        """Per image, up to ``k`` other captions the captioner itself finds likely (a beam search of
        width k + 1, deterministic), without the image's own caption: the rivals the caption must
        beat under the encoders for the cascade's margin first stage."""
        if not images:
            return []
        inputs = self.processor(images=[im.convert("RGB") for im in images], return_tensors="pt")
        pixel_values = inputs["pixel_values"].to(self.device, self.dtype)
        width = k + 1
        with torch.inference_mode():
            tokens = self.model.generate(pixel_values=pixel_values, max_new_tokens=max_new_tokens, do_sample=False,
                                         num_beams=width, num_return_sequences=width)
        texts = [" ".join(t.split()) for t in self.processor.batch_decode(tokens, skip_special_tokens=True)]
        out = []
        for i, caption in enumerate(captions):
            beam = list(dict.fromkeys(texts[i * width:(i + 1) * width]))  # in order, without repeats
            out.append([t for t in beam if t != caption][:k])
        return out
