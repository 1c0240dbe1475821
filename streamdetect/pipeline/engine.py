"""The MirrorCheck pipeline as three micro-batched stages: caption, regenerate, embed.

``await Pipeline.submit(request)`` runs one image through the stages and returns a Verdict.
Many callers submit concurrently; each stage batches across them and runs its model calls on
one device thread, so the event loop never blocks and the stages overlap. No Kafka here.

Stochastic mode (``stochastic=StochasticSettings(...)``): each request draws a generator from
the generator zoo, k encoders from the encoder zoo and a weight perturbation (see
detector/stochastic.py). The regenerate stage batches the requests that drew the same
generator; the embed stage scores each drawn request alone inside its own perturbation, on the
one device thread, so no perturbation reaches a batch-mate.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol, Sequence

import torch
from PIL import Image

from streamdetect.detector import (RIVALS, CascadeSettings, Draw, PairToScore, StochasticSettings, Verdict, agreement,
                                   agreement_scores, decide, draw, margin_scores, new_seed, score_batch)
from streamdetect.detector.cascade import can_exit
from streamdetect.detector.text_cache import CachedText
from streamdetect.pipeline.batcher import Batcher, BatchObserver, BatchSettings, StageSettings


class CaptionModel(Protocol):
    spec: str

    def caption(self, images: list[Image.Image]) -> list[str]: ...

    def rivals(self, images: list[Image.Image], captions: list[str], k: int = ...) -> list[list[str]]: ...


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
    draw_seed: int | None = None  # stochastic mode: the draw's seed; None draws one from OS entropy
    deadline: float | None = None  # wall-clock time.time() after which the verdict is no use


class DeadlineExceeded(RuntimeError):
    """The upload's deadline passed before an expensive stage; judging it would waste the device."""

    dead_letter_reason = "deadline"  # read by the stream layer, which does not import this module

    def __init__(self, upload_id: str, stage: str) -> None:
        super().__init__(f"deadline passed before the {stage} stage for upload {upload_id}")


class ModelError(RuntimeError):
    """A stage failed on this item even when run alone."""

    def __init__(self, stage: str, upload_id: str, cause: BaseException) -> None:
        super().__init__(f"{stage} stage failed for upload {upload_id}: {type(cause).__name__}: {cause}")
        self.stage = stage
        self.upload_id = upload_id


def _check_deadline(request: Request, stage: str) -> None:
    if request.deadline is not None and time.time() > request.deadline:
        raise DeadlineExceeded(request.upload_id, stage)


class Pipeline:
    def __init__(
        self,
        captioner: CaptionModel,
        generator: GenerateModel | Sequence[GenerateModel],
        encoders: Sequence[EmbedModel],
        *,
        threshold: float,
        batching: BatchSettings | StageSettings = BatchSettings(),
        observer: BatchObserver | None = None,
        stochastic: StochasticSettings | None = None,
        cascade: CascadeSettings | None = None,
    ) -> None:
        """``generator`` is one model, or the generator zoo in stochastic mode; ``encoders`` is
        the ensemble (vanilla) or the encoder zoo (stochastic). With ``cascade``, an upload whose
        caption the encoders confidently agree with is decided clean before regeneration."""
        generators = list(generator) if isinstance(generator, Sequence) else [generator]
        _check_models(generators, encoders, stochastic)
        _check_cascade(captioner, encoders, stochastic, cascade)
        self.threshold = threshold
        self.stochastic = stochastic
        self.cascade = cascade
        self._captioner = captioner
        self._generators = generators
        self._encoders = list(encoders)
        # The first stage's encoders keep the text embeddings they made: captions and rivals recur.
        self._first_encoders = [CachedText(e) for e in self._encoders] if cascade is not None else []  # type: ignore
        # One device thread: model calls never run on the event loop and never contend
        # with each other for the accelerator.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="device")
        self.caption_stage = Batcher("caption", captioner.caption, self._executor, batching.for_stage("caption"), observer)
        self.generate_stage = Batcher("generate", self._generate_batch, self._executor, batching.for_stage("generate"),
                                      observer)
        self.embed_stage = Batcher("embed", self._score_batch, self._executor, batching.for_stage("embed"), observer)
        self.agree_stage = Batcher("agree", self._agree_batch, self._executor, batching.for_stage("embed"), observer)
        self.rivals_stage = Batcher("rivals", self._rivals_batch, self._executor, batching.for_stage("caption"),
                                    observer)

    async def submit(self, request: Request) -> Verdict:
        """Judge one image. Raises ModelError if a stage fails on it."""
        if request.caption:
            caption, source = request.caption, "upload"
        else:
            _check_deadline(request, "caption")
            caption, source = await self._stage(self.caption_stage, request.image, request), "model"
        first = await self._first_stage(request, caption, source) if self.cascade is not None else None
        if first is not None and first.decided_by == "first_stage":
            return first
        _check_deadline(request, "generate")
        drawn = self._draw(request)
        generator = drawn.generator if drawn else 0
        regenerated = await self._stage(self.generate_stage, (caption, request.seed, generator), request)
        scores = await self._stage(self.embed_stage, PairToScore(request.image, regenerated, drawn), request)
        score, flagged = decide(scores, self.threshold)
        encoders = [self._encoders[i].spec for i in drawn.encoders] if drawn else [e.spec for e in self._encoders]
        models = {"captioner": self._captioner.spec if source == "model" else None,
                  "generator": self._generators[generator].spec, "encoders": encoders}
        return Verdict(
            upload_id=request.upload_id,
            flagged=flagged,
            score=score,
            threshold=self.threshold,
            scores=scores,
            caption=caption,
            caption_source=source,
            seed=request.seed,
            models=models,
            stochastic=None if drawn is None else {"seed": drawn.seed, "noise_scale": drawn.noise_scale,
                                                   "generator": models["generator"], "encoders": encoders},
            regenerated=regenerated,
            cascade=None if first is None else first.cascade,
        )

    async def _first_stage(self, request: Request, caption: str, source: str) -> Verdict:
        """The first-stage score; a Verdict decided here when it clears the exit threshold and,
        with ``swap``, every word of the caption was checked (its ``cascade`` is carried into the
        regeneration's verdict otherwise)."""
        cascade = self.cascade
        assert cascade is not None
        rivals, unchecked = None, None
        if cascade.first_stage == "margin":
            rivals = await self._stage(self.rivals_stage, (request.image, caption), request)
        elif cascade.swaps is not None:  # a pure function of the caption: no model call
            rivals, unchecked = cascade.swaps.rivals(caption), cascade.swaps.unchecked(caption)
        scores = await self._stage(self.agree_stage, (request.image, caption, rivals), request)
        mean, exit_at = agreement(scores), cascade.exit_threshold
        exits = mean >= exit_at and can_exit(cascade.first_stage, mean, unchecked)
        stage = {"agreement": mean} if rivals is None else {"first_stage": cascade.first_stage, "margin": mean,
                                                            "rivals": rivals}
        if cascade.swaps is not None:
            stage["vocabulary"] = cascade.swaps.fingerprint()
        if unchecked is not None:
            stage["unchecked"] = unchecked
        return Verdict(
            upload_id=request.upload_id, flagged=False, score=mean, threshold=exit_at, scores=scores,
            caption=caption, caption_source=source, seed=request.seed,  # type: ignore[arg-type]
            models={"captioner": self._captioner.spec if source == "model" else None, "generator": None,
                    "encoders": [e.spec for e in self._encoders]},
            decided_by="first_stage" if exits else "regeneration",
            cascade={**stage, "exit_threshold": exit_at, "exited": exits, "scores": scores},
        )

    def _draw(self, request: Request) -> Draw | None:
        if self.stochastic is None:
            return None
        seed = new_seed() if request.draw_seed is None else request.draw_seed
        return draw(seed, len(self._generators), len(self._encoders), self.stochastic)

    async def close(self) -> None:
        for stage in (self.caption_stage, self.rivals_stage, self.agree_stage, self.generate_stage, self.embed_stage):
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

    def _generate_batch(self, items: list[tuple[str, int, int]]) -> list[Image.Image]:
        """One batched call per generator drawn in this batch (always one call in vanilla mode)."""
        out: list[Image.Image | None] = [None] * len(items)
        for index in sorted({g for _, _, g in items}):
            members = [i for i, item in enumerate(items) if item[2] == index]
            images = self._generators[index].generate([items[i][0] for i in members], [items[i][1] for i in members])
            for i, image in zip(members, images):
                out[i] = image
        return [im for im in out if im is not None]

    def _score_batch(self, items: list[PairToScore]) -> list[dict[str, float]]:
        return score_batch(self._encoders, items)

    def _agree_batch(self, items: list[tuple[Image.Image, str, list[str] | None]]) -> list[dict[str, float]]:
        images, captions, rivals = [i[0] for i in items], [i[1] for i in items], [i[2] for i in items]
        if self.cascade is not None and self.cascade.margin_based:
            return margin_scores(self._first_encoders, images, captions, [r or [] for r in rivals])
        return agreement_scores(self._first_encoders, images, captions)

    def _rivals_batch(self, items: list[tuple[Image.Image, str]]) -> list[list[str]]:
        return self._captioner.rivals([image for image, _ in items], [caption for _, caption in items], RIVALS)


def _check_cascade(captioner: CaptionModel, encoders: Sequence, stochastic: StochasticSettings | None,
                   cascade: CascadeSettings | None) -> None:
    if cascade is None:
        return
    if cascade.first_stage == "margin" and not callable(getattr(captioner, "rivals", None)):
        raise ValueError("the margin first stage needs a captioner that gives rival captions (a beam search)")
    if stochastic is not None:
        raise ValueError("the cascade runs with vanilla MirrorCheck; stochastic mode draws encoders per request")
    missing = [e.spec for e in encoders if not getattr(e, "has_text", False)]
    if missing:
        raise ValueError(f"the cascade needs encoders with a text tower (open_clip); these have none: {missing}")


def _check_models(generators: list, encoders: Sequence, stochastic: StochasticSettings | None) -> None:
    if not encoders:
        raise ValueError("MirrorCheck needs at least one image encoder")
    if not generators:
        raise ValueError("MirrorCheck needs at least one text-to-image generator")
    if stochastic is None and len(generators) > 1:
        raise ValueError(f"vanilla mode uses one generator, got {len(generators)}; a zoo needs stochastic mode")
    names = [e.name for e in encoders]
    if len(set(names)) != len(names):
        raise ValueError(f"encoder names must be unique (they key the verdict's scores): {names}")
    if stochastic is not None:
        stochastic.encoders_per_request(len(encoders))  # fails now if k exceeds the zoo
