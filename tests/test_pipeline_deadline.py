"""An upload whose deadline has passed is not given to the expensive stages."""

import time
from pathlib import Path

import pytest
from PIL import Image

from streamdetect.models import get_profile, load_models
from streamdetect.pipeline.engine import DeadlineExceeded, Pipeline, Request


@pytest.fixture(scope="module")
def pipeline_models(tiny_models: Path):
    return load_models(get_profile("tiny", tiny_models))


async def test_expired_deadline_skips_caption_and_generation(pipeline_models) -> None:
    pipeline = Pipeline(pipeline_models.captioner, pipeline_models.generator, pipeline_models.encoders, threshold=0.5)
    image = Image.new("RGB", (32, 32), "red")
    try:
        with pytest.raises(DeadlineExceeded, match="caption stage for upload late"):
            await pipeline.submit(Request(upload_id="late", image=image, deadline=time.time() - 1))
        with pytest.raises(DeadlineExceeded, match="generate stage for upload late-own"):
            await pipeline.submit(Request(upload_id="late-own", image=image, caption="a red square",
                                          deadline=time.time() - 1))
        assert not pipeline.caption_stage.batch_sizes and not pipeline.generate_stage.batch_sizes
        verdict = await pipeline.submit(Request(upload_id="in-time", image=image, deadline=time.time() + 60))
        assert verdict.upload_id == "in-time"
    finally:
        await pipeline.close()
