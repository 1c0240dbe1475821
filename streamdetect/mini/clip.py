"""A mini open_clip model (image and text towers) as an attacker or a baseline holds it:
differentiable on [0, 1] pixel tensors, loaded from the same shipped folder as the detector's."""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F

from streamdetect.mini.train.encoders import CONTEXT


class DomainClip:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if not (self.path / "open_clip_config.json").is_file():
            raise FileNotFoundError(f"{str(self.path)!r} is not an open_clip model dir (no open_clip_config.json)")
        model, _, _ = open_clip.create_model_and_transforms(f"local-dir:{self.path.resolve()}")
        self.model = model.eval().requires_grad_(False)
        cfg = json.loads((self.path / "open_clip_config.json").read_text())["preprocess_cfg"]
        self.mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg["std"]).view(1, 3, 1, 1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Unit-norm image embeddings of (N, 3, H, W) pixels in [0, 1]; differentiable."""
        return F.normalize(self.model.encode_image((x - self.mean) / self.std), dim=-1)

    def embed_text(self, captions: list[str]) -> torch.Tensor:
        with torch.no_grad():
            tokens = open_clip.tokenize(captions, context_length=CONTEXT)
            return F.normalize(self.model.encode_text(tokens), dim=-1)

    def anchor(self, images: torch.Tensor, per_item: int) -> torch.Tensor:
        """Mean embedding of `per_item` consecutive images per target: (N*per_item, ...) -> (N, D)."""
        with torch.no_grad():
            e = self.embed(images)
        return F.normalize(e.view(-1, per_item, e.shape[-1]).mean(1), dim=-1)
