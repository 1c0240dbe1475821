"""Builds the worker's parts from Settings: models -> pipeline -> judge -> upload handler.

The only place that knows both the models and the stream layer, so that neither knows the other.
"""

from __future__ import annotations

import structlog
from PIL import Image

from streamdetect.app.detector_config import threshold_source
from streamdetect.settings import Settings
from streamdetect.images import ImagePolicy
from streamdetect.stream.handler import Evidence, Topics, UploadHandler

log = structlog.get_logger(__name__)


def image_policy(settings: Settings) -> ImagePolicy:
    return ImagePolicy(
        max_bytes=settings.max_image_bytes,
        max_pixels=settings.max_image_pixels,
        allow_file=settings.allow_file,
        allow_http=settings.allow_http,
        allow_private_hosts=settings.allow_private_hosts,
        file_root=settings.file_root,
        timeout_s=settings.fetch_timeout_s,
        s3_endpoint=settings.s3_endpoint,
        s3_region=settings.s3_region,
    )


def prepare_models(settings: Settings) -> str:
    """Build the random-weight models if the profile has them (tiny, standard-shapes); say where
    the profile's models are."""
    from streamdetect.models import ensure_profile_models, get_profile

    ensure_profile_models(settings.profile, settings.model_dir)
    profile = get_profile(settings.profile, settings.model_dir, settings.device, settings.dtype)
    return "\n".join([f"profile {profile.name}:", f"  captioner  {profile.captioner}",
                      f"  generator  {profile.generator}", *(f"  encoder    {e}" for e in profile.encoders)])


def load_profile_models(settings: Settings):  # type: ignore[no-untyped-def]
    """The configured models: the profile's, or the zoo in stochastic mode (detector_settings.py)."""
    from streamdetect.app.detector_config import load_detector_models
    from streamdetect.models._torch import quiet_model_libraries, set_cpu_threads

    set_cpu_threads(settings.cpu_threads)
    quiet_model_libraries()
    return load_detector_models(settings)


def stage_settings(settings: Settings):  # type: ignore[no-untyped-def]
    """Batch settings per stage, from the flat settings (a stage's own max_batch, or max_batch)."""
    from streamdetect.pipeline.batcher import BatchSettings, StageSettings

    def stage(name: str) -> BatchSettings:
        return BatchSettings(max_batch=settings.stage_max_batch(name), max_wait_ms=settings.max_wait_ms,
                             max_queue=settings.max_in_flight, batches_in_flight=settings.batches_in_flight)

    return StageSettings(default=stage("generate"), caption=stage("caption"), embed=stage("embed"))


def build_pipeline(settings: Settings, models=None):  # type: ignore[no-untyped-def]
    """The pipeline on the profile's models (or on ``models``, any object with captioner,
    generator and encoders), reporting its batches to this process's worker metrics."""
    from streamdetect.app.detector_config import cascade_settings, resolve_threshold, stochastic_settings
    from streamdetect.pipeline.engine import Pipeline
    from streamdetect.stream.metrics import worker_metrics

    threshold = resolve_threshold(settings)  # a stale calibration fails before minutes of loading
    cascade = cascade_settings(settings)
    models = models or load_profile_models(settings)
    metrics = worker_metrics()
    pipeline = Pipeline(models.captioner, models.generator, models.encoders,
                        threshold=threshold, batching=stage_settings(settings),
                        observer=metrics.observe_batch, stochastic=stochastic_settings(settings), cascade=cascade)
    for stage in (pipeline.caption_stage, pipeline.agree_stage, pipeline.generate_stage, pipeline.embed_stage):
        metrics.watch_queue(stage.name, stage.queue_depth)
    return pipeline


def build_handler(settings: Settings, models=None) -> UploadHandler:  # type: ignore[no-untyped-def]
    from streamdetect.pipeline.engine import Request

    pipeline = build_pipeline(settings, models)

    async def judge(*, upload_id: str, image: Image.Image, caption: str | None, seed: int,  # type: ignore[no-untyped-def]
                    deadline: float | None = None):
        return await pipeline.submit(Request(upload_id=upload_id, image=image, caption=caption, seed=seed,
                                             deadline=deadline))

    topics = Topics(alerts=settings.topic("alerts"), audit=settings.topic("audit"), dlq=settings.topic("dlq"))
    source = threshold_source(settings)
    if source == "default":
        log.warning("worker.threshold_uncalibrated", threshold=settings.threshold, profile=settings.profile,
                    hint="fit one with `streamdetect calibrate --profile "
                         f"{settings.profile} --clean-dir CLEAN/ --threshold-file FILE` and pass --threshold-file; "
                         "every verdict says threshold_source=default until then")
    from streamdetect.stream.metrics import worker_health, worker_metrics
    from streamdetect.stream.retries import Retries

    metrics, health = worker_metrics(), worker_health()
    retries = Retries(fetch=settings.fetch_retries, model=settings.model_retries, backoff_s=settings.retry_backoff_s,
                      model_error_limit=settings.model_error_limit)
    return UploadHandler(
        judge, image_policy(settings), topics, settings.worker_name, settings.seed, source,
        settings.dead_letter_payload_max_bytes, retries, settings.fetch_threads,
        on_retry=lambda kind: metrics.retries.labels(kind).inc(),
        on_models_failing=lambda n: health.set_broken(f"{n} model errors in a row: the models or the device are "
                                                      "broken; the worker stopped taking uploads"),
        seed_key=settings.seed_secret.get_secret_value().encode(), evidence=evidence_config(settings))


def evidence_config(settings: Settings) -> Evidence:
    """The evidence store of the settings (none when evidence_store is empty)."""
    from streamdetect.evidence import open_store

    if not settings.evidence_store:
        return Evidence()
    store = open_store(settings.evidence_store, settings.s3_endpoint, settings.s3_region)
    return Evidence(store, of_all=settings.evidence_of == "all")
