"""The MirrorCheck pipeline as three micro-batched stages: caption, regenerate, embed.

``await Pipeline.submit(request)`` runs one image through the stages and returns a Verdict.
Many callers submit concurrently; each stage batches across them and runs its model calls on
one device thread, so the event loop never blocks and the stages overlap. No Kafka here.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol, Sequence

import torch
from PIL import Image

from streamdetect.detector import Verdict, cosine_scores, decide
from streamdetect.pipeline.batcher import Batcher, BatchSettings


class CaptionModel(Protocol):
    spec: str

    def caption(self, images: list[Image.Image]) -> list[str]: ...


class GenerateModel(Protocol):
    spec: str

    def generate(self, prompts: list[str], seeds: list[int]) -> list[Image.Image]: ...


class EmbedModel(Protocol):
    spec: str
    name: str

    def embed(self, images: list[Image.Image]) -> torch.Tensor: ...


@dataclass(frozen=True)
class Request:
    upload_id: str
    image: Image.Image
    caption: str | None = None  # the platform's own VLM output; skips the caption stage
    seed: int = 0  # seeds the regeneration, recorded in the verdict


class ModelError(RuntimeError):
    """A stage failed on this item even when run alone."""

    def __init__(self, stage: str, upload_id: str, cause: BaseException) -> None:
        super().__init__(f"{stage} stage failed for upload {upload_id}: {type(cause).__name__}: {cause}")
        self.stage = stage
        self.upload_id = upload_id


class Pipeline:
    def __init__(
        self,
        captioner: CaptionModel,
        generator: GenerateModel,
        encoders: Sequence[EmbedModel],
        *,
        threshold: float,
        batching: BatchSettings = BatchSettings(),
    ) -> None:
        if not encoders:
            raise ValueError("MirrorCheck needs at least one image encoder")
        self.threshold = threshold
        self._captioner = captioner
        self._generator = generator
        self._encoders = list(encoders)
        # One device thread: model calls never run on the event loop and never contend
        # with each other for the accelerator.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="device")
        self.caption_stage = Batcher("caption", captioner.caption, self._executor, batching)
        self.generate_stage = Batcher("generate", self._generate_batch, self._executor, batching)
        self.embed_stage = Batcher("embed", self._score_batch, self._executor, batching)
        self._models = {
            "captioner": captioner.spec,
            "generator": generator.spec,
            "encoders": [e.spec for e in self._encoders],
        }

    async def submit(self, request: Request) -> Verdict:
        """Judge one image. Raises ModelError if a stage fails on it."""
        if request.caption:
            caption, source = request.caption, "upload"
        else:
            caption, source = await self._stage(self.caption_stage, request.image, request), "model"
        regenerated = await self._stage(self.generate_stage, (caption, request.seed), request)
        scores = await self._stage(self.embed_stage, (request.image, regenerated), request)
        score, flagged = decide(scores, self.threshold)
        return Verdict(
            upload_id=request.upload_id,
            flagged=flagged,
            score=score,
            threshold=self.threshold,
            scores=scores,
            caption=caption,
            caption_source=source,
            seed=request.seed,
            models={**self._models, "captioner": self._models["captioner"] if source == "model" else None},
        )

    async def close(self) -> None:
        for stage in (self.caption_stage, self.generate_stage, self.embed_stage):
            await stage.close()
        self._executor.shutdown(wait=False, cancel_futures=True)

    @staticmethod
    async def _stage(stage: Batcher, item: object, request: Request):  # type: ignore[no-untyped-def]
        try:
            return await stage.submit(item)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - reported per item, the worker goes on
            raise ModelError(stage.name, request.upload_id, exc) from exc

    def _generate_batch(self, items: list[tuple[str, int]]) -> list[Image.Image]:
        prompts = [prompt for prompt, _ in items]
        seeds = [seed for _, seed in items]
        return self._generator.generate(prompts, seeds)

    def _score_batch(self, pairs: list[tuple[Image.Image, Image.Image]]) -> list[dict[str, float]]:
        inputs = [inp for inp, _ in pairs]
        regenerated = [regen for _, regen in pairs]
        per_item: list[dict[str, float]] = [{} for _ in pairs]
        for encoder in self._encoders:
            embeddings = encoder.embed(inputs + regenerated)
            sims = cosine_scores(embeddings[: len(pairs)], embeddings[len(pairs) :])
            for scores, sim in zip(per_item, sims):
                scores[encoder.name] = sim
        return per_item
