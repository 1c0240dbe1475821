"""Builds the worker's parts from Settings: models -> pipeline -> judge -> upload handler.

The only place that knows both the models and the stream layer, so that neither knows the other.
"""

from __future__ import annotations

from PIL import Image

from streamdetect.config import Settings
from streamdetect.images import ImagePolicy
from streamdetect.stream.handler import Topics, UploadHandler


def image_policy(settings: Settings) -> ImagePolicy:
    return ImagePolicy(
        max_bytes=settings.max_image_bytes,
        max_pixels=settings.max_image_pixels,
        allow_file=settings.allow_file,
        allow_http=settings.allow_http,
        timeout_s=settings.fetch_timeout_s,
        s3_endpoint=settings.s3_endpoint,
        s3_region=settings.s3_region,
    )


def prepare_models(settings: Settings) -> str:
    """Build the tiny models if that is the profile; say where the profile's models are."""
    from streamdetect.models import ensure_tiny_models, get_profile

    if settings.profile == "tiny":
        ensure_tiny_models(settings.model_dir)
    profile = get_profile(settings.profile, settings.model_dir, settings.device, settings.dtype)
    return "\n".join([f"profile {profile.name}:", f"  captioner  {profile.captioner}",
                      f"  generator  {profile.generator}", *(f"  encoder    {e}" for e in profile.encoders)])


def build_pipeline(settings: Settings):  # type: ignore[no-untyped-def]
    from streamdetect.models import ensure_tiny_models, get_profile, load_models
    from streamdetect.pipeline import BatchSettings, Pipeline

    if settings.profile == "tiny":
        ensure_tiny_models(settings.model_dir)
    models = load_models(get_profile(settings.profile, settings.model_dir, settings.device, settings.dtype))
    batching = BatchSettings(max_batch=settings.max_batch, max_wait_ms=settings.max_wait_ms,
                             max_queue=settings.max_in_flight)
    return Pipeline(models.captioner, models.generator, models.encoders,
                    threshold=settings.threshold, batching=batching)


def build_handler(settings: Settings) -> UploadHandler:
    from streamdetect.pipeline import Request

    pipeline = build_pipeline(settings)

    async def judge(*, upload_id: str, image: Image.Image, caption: str | None, seed: int):  # type: ignore[no-untyped-def]
        return await pipeline.submit(Request(upload_id=upload_id, image=image, caption=caption, seed=seed))

    topics = Topics(alerts=settings.topic("alerts"), audit=settings.topic("audit"), dlq=settings.topic("dlq"))
    return UploadHandler(judge, image_policy(settings), topics, settings.worker_name, settings.seed)
