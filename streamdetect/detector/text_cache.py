"""Text embeddings kept between batches: the cascade's margin first stages embed every upload's
caption and its rivals under each encoder's text tower, and on a real stream the same captions
(and, for ``swap``, the same rivals) come back again and again. An encoder wrapped here embeds a
caption once and answers from a bounded least-recently-used table after that; images pass
through untouched. Only the device thread calls it (the pipeline's one executor), so it needs no
lock. A sender who varies captions to defeat it costs the same text-tower call it would without
the cache, and the table never grows past ``size`` rows.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Protocol

import torch
from PIL import Image


class TextImageEncoder(Protocol):
    name: str

    def embed(self, images: list[Image.Image]) -> torch.Tensor: ...

    def embed_text(self, captions: list[str]) -> torch.Tensor: ...


class CachedText:
    def __init__(self, encoder: TextImageEncoder, size: int = 8192) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self.encoder, self.size, self.name = encoder, size, encoder.name
        self._rows: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.hits = self.misses = 0

    def embed(self, images: list[Image.Image]) -> torch.Tensor:
        return self.encoder.embed(images)

    def embed_text(self, captions: list[str]) -> torch.Tensor:
        """The encoder's (N, D) rows for these captions; the ones not in the table in one call."""
        missing = list(dict.fromkeys(c for c in captions if c not in self._rows))
        self.misses += len(missing)
        self.hits += len(captions) - len(missing)
        fresh = dict(zip(missing, self.encoder.embed_text(missing))) if missing else {}
        rows = [fresh[c] if c in fresh else self._rows[c] for c in captions]
        for caption, row in fresh.items():
            self._rows[caption] = row
        for caption in captions:
            if caption in self._rows:
                self._rows.move_to_end(caption)
        while len(self._rows) > self.size:
            self._rows.popitem(last=False)
        return torch.stack(rows) if rows else self.encoder.embed_text([])
