"""A score that is not a finite number is never a clean verdict: an encoder that returns NaN,
through the real pipeline and handler, gives a model_error dead letter, and no event with a
non-finite number passes validation."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from streamdetect import events
from streamdetect.events import SchemaError, Source
from streamdetect.images import ImagePolicy
from streamdetect.models import get_profile, load_models
from streamdetect.pipeline.engine import Pipeline, Request
from streamdetect.stream.handler import Topics, UploadHandler


class NaNEncoder:
    """A real tiny encoder whose embeddings come out NaN, as fp16 overflow or broken weights do."""

    def __init__(self, inner) -> None:  # type: ignore[no-untyped-def]
        self._inner = inner

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self._inner, name)

    def embed(self, images: list[Image.Image]) -> torch.Tensor:
        return torch.full_like(self._inner.embed(images), float("nan"))


def _upload() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), "red").save(buffer, format="PNG")
    image = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    return json.dumps({"schema_version": 1, "upload_id": "nan-1", "image": image}).encode()


async def test_a_nan_encoder_through_the_real_pipeline_is_a_model_error(tiny_models: Path) -> None:
    models = load_models(get_profile("tiny", tiny_models))
    pipeline = Pipeline(models.captioner, models.generator, [NaNEncoder(models.encoders[0])], threshold=0.5)

    async def judge(**request):  # type: ignore[no-untyped-def]
        return await pipeline.submit(Request(**request))

    handler = UploadHandler(judge, ImagePolicy(), Topics("alerts", "audit", "dlq"), "w")
    try:
        records = await handler.handle(_upload(), Source("uploads", 0, 1))
    finally:
        await pipeline.close()
    assert [r.topic for r in records] == ["dlq"]
    event = json.loads(records[0].value)
    assert event["reason"] == "model_error" and "not a finite number" in event["detail"]
    assert dict(records[0].headers)["dlq.reason"] == b"model_error"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_no_event_with_a_non_finite_number_validates(value: float) -> None:
    verdict = {"schema_version": 1, "upload_id": "u", "flagged": False, "score": value, "threshold": 0.5,
               "scores": {"e": 0.9}, "caption": "c", "caption_source": "model", "seed": 1,
               "models": {"captioner": None, "generator": "g", "encoders": ["e"]},
               "decided_at": "2026-12-01T00:00:00Z", "worker": "w"}
    with pytest.raises(SchemaError, match="score: not a finite number"):
        events.validate("verdict", verdict)
    with pytest.raises(ValueError):
        events.encode({"score": value})
