"""Image encoders: CLIP-family vision towers giving L2-normalised embeddings."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import open_clip
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import CLIPImageProcessor, CLIPModel

from ._torch import torch_device, torch_dtype
from .specs import ModelSpec, check_options, looks_like_path, parse_spec

Pixels = Callable[[list[Image.Image]], torch.Tensor]
Forward = Callable[[torch.Tensor], torch.Tensor]
Texts = Callable[[list[str]], torch.Tensor]  # captions -> (N, D) text embeddings, not yet normalised


class _Loaded(NamedTuple):
    name: str
    module: torch.nn.Module
    dim: int
    pixels: Pixels
    forward: Forward
    texts: Texts | None = None


@dataclass
class ImageEncoder:
    spec: str
    name: str
    module: torch.nn.Module
    dim: int
    device: torch.device
    dtype: torch.dtype
    _pixels: Pixels = field(repr=False)
    _forward: Forward = field(repr=False)
    _texts: Texts | None = field(default=None, repr=False)

    @classmethod
    def load(cls, spec: str, device: str = "cpu", dtype: str = "fp32") -> ImageEncoder:
        parsed = parse_spec(spec)
        dev, dt = torch_device(device), torch_dtype(dtype)
        if parsed.kind == "open_clip":
            loaded = _load_open_clip(parsed, dev, dtype)
        elif parsed.kind == "hf-clip":
            loaded = _load_hf_clip(parsed, dev, dt)
        else:
            raise ValueError(f"encoder spec {spec!r} must be 'open_clip:' or 'hf-clip:', not {parsed.kind!r}")
        return cls(spec, loaded.name, loaded.module, loaded.dim, dev, dt, loaded.pixels, loaded.forward,
                   loaded.texts)

    @property
    def has_text(self) -> bool:
        return self._texts is not None

    def embed_text(self, captions: list[str]) -> torch.Tensor:
        """(N, D) float32 CPU tensor of unit rows: the captions through the model's own text tower
        (the cascade's first stage compares them with embed()); open_clip encoders only."""
        if self._texts is None:
            raise ValueError(f"encoder {self.spec} keeps no text tower; the cascade needs open_clip encoders")
        if not captions:
            return torch.empty(0, self.dim)
        with torch.inference_mode():
            features = self._texts(captions)
        return F.normalize(features.float(), dim=-1).cpu()

    def embed(self, images: list[Image.Image]) -> torch.Tensor:
        """(N, D) float32 CPU tensor, rows of unit L2 norm, from one batched forward."""
        if not images:
            return torch.empty(0, self.dim)
        pixels = self._pixels([im.convert("RGB") for im in images]).to(self.device, self.dtype)
        with torch.inference_mode():
            features = self._forward(pixels)
        # Normalise in fp32: fp16 norms of wide embeddings lose precision.
        return F.normalize(features.float(), dim=-1).cpu()


def _load_open_clip(spec: ModelSpec, device: torch.device, dtype: str) -> _Loaded:
    check_options(spec, frozenset({"pretrained"}))
    pretrained = spec.options.get("pretrained")
    if looks_like_path(spec.name):
        if pretrained:  # open_clip would ignore it with a warning
            raise ValueError(f"open_clip dir {spec.name!r} has its own weights; drop pretrained={pretrained!r}")
        path = Path(os.path.expanduser(spec.name)).resolve()
        model_name, short = f"local-dir:{path}", path.name
    else:
        model_name, short = spec.name, spec.name + (f":{pretrained}" if pretrained else "")
    # require_pretrained: open_clip only *warns* when it finds no weights and returns a random model.
    model, _, preprocess = open_clip.create_model_and_transforms(
        model_name, pretrained=pretrained, device=device, precision=dtype, require_pretrained=True,
        force_quick_gelu=needs_quick_gelu(spec.name, pretrained),
    )
    model.eval()
    dim = int(open_clip.get_model_config(model_name)["embed_dim"])  # timm towers lack output_dim
    pixels = lambda ims: torch.stack([preprocess(im) for im in ims])  # noqa: E731
    tokenizer = open_clip.get_tokenizer(model_name)
    texts = lambda captions: model.encode_text(tokenizer(captions).to(device))  # noqa: E731
    return _Loaded(short, model.visual, dim, pixels, model.encode_image, texts)


def needs_quick_gelu(arch: str, pretrained: str | None) -> bool:
    """OpenAI (and some other) weights were trained with QuickGELU, but open_clip 3.x builds the
    plain 'ViT-B-32' config with GELU and only warns on the mismatch: embeddings come out subtly
    wrong. The tag's own config knows; local dirs and hf-hub configs carry quick_gelu themselves."""
    if not pretrained:
        return False
    return bool(open_clip.get_pretrained_cfg(arch.replace("/", "-"), pretrained).get("quick_gelu", False))


def _load_hf_clip(spec: ModelSpec, device: torch.device, dtype: torch.dtype) -> _Loaded:
    check_options(spec, frozenset())
    name = os.path.expanduser(spec.name)
    processor = CLIPImageProcessor.from_pretrained(name)
    # Full CLIPModel, not CLIPVisionModelWithProjection: the latter takes projection_dim from
    # vision_config, which CLIPModel checkpoints need not carry (size mismatch on load).
    model = CLIPModel.from_pretrained(name, dtype=dtype).to(device).eval()
    model.text_model = model.text_projection = None  # unused here; frees the text tower's memory
    short = Path(name).name if os.path.isdir(name) else name
    return _Loaded(
        short,
        model,
        int(model.config.projection_dim),
        lambda ims: processor(images=ims, return_tensors="pt")["pixel_values"],
        # transformers 5: get_image_features returns a ModelOutput; projected features are pooler_output.
        lambda x: model.get_image_features(pixel_values=x).pooler_output,
    )
