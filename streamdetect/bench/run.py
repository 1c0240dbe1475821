"""``streamdetect bench``: how much the engine and the stream layer buy, as ratios measured in one run.

Seven modes on the same models and the same images:

- ``reference``: the reference design, one image at a time: caption, then generate, then embed.
- ``engine``: the micro-batched pipeline in-process, every image submitted at once.
- ``model_ceiling``: the raw batched model calls alone, in the main thread, chunk by chunk of
  ``max_batch`` (caption, generate, embed): what the engine could reach on these models.
- ``stream``: the full path through the real broker: a `streamdetect worker` process, uploads
  sent to ``uploads``, verdicts read back from ``audit``.
- ``stream_null``: the same with instant null models: the stream layer's own cost.
- ``stream_ceiling``: the worker's own per-upload work on the null models (parse and check the
  upload, decode, seed, judge, build, check and encode the verdict: the real functions) in a
  plain aiokafka loop batched per poll (bench/ceiling.py): what stream_null could reach.
- ``bare_kafka``: a bare aiokafka consume-and-produce loop, no models and no per-upload work: the
  broker's own ceiling.

Each mode gets the whole burst at t0; an image's latency is from t0 to its verdict (so the
reference's latencies include waiting its turn, as the engine's include queueing).
"""

from __future__ import annotations

import asyncio
import base64
import io
import random
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from streamdetect.settings import Settings

MODES = ("reference", "engine", "model_ceiling", "stream", "stream_null", "stream_ceiling", "bare_kafka")
MODEL_MODES = ("reference", "engine", "model_ceiling")
BROKER_MODES = ("bare_kafka", "stream_ceiling", "stream_null", "stream")
RATIOS = {"engine_vs_reference": ("engine", "reference"), "engine_vs_model_ceiling": ("engine", "model_ceiling"),
          "stream_vs_engine": ("stream", "engine"),
          "stream_null_vs_ceiling": ("stream_null", "stream_ceiling"),
          "stream_null_vs_bare_kafka": ("stream_null", "bare_kafka")}
WARMUP = 4


def bench_images(n: int, seed: int = 0) -> list[Image.Image]:
    """Drawn scenes (a coloured shape on grey), varied so no two requests are the same."""
    rng = random.Random(seed)
    images = []
    for _ in range(n):
        image = Image.new("RGB", (64, 64), tuple(rng.randrange(80, 180) for _ in range(3)))
        x, y, size = rng.randrange(4, 30), rng.randrange(4, 30), rng.randrange(12, 30)
        fill = tuple(rng.randrange(256) for _ in range(3))
        (ImageDraw.Draw(image).ellipse if rng.random() < 0.5 else ImageDraw.Draw(image).rectangle)(
            (x, y, x + size, y + size), fill=fill)
        images.append(image)
    return images


def data_uri(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def summary(latencies_s: list[float], total_s: float) -> dict[str, float]:
    import numpy as np

    ms = np.asarray(latencies_s) * 1000
    return {"images_per_s": len(latencies_s) / total_s, "p50_ms": float(np.percentile(ms, 50)),
            "p95_ms": float(np.percentile(ms, 95)), "p99_ms": float(np.percentile(ms, 99))}


def run_reference(models: Any, images: list[Image.Image], threshold: float) -> tuple[list[float], float]:
    """One image at a time, each stage called with a batch of one."""
    from streamdetect.detector import cosine_scores, decide

    def judge(image: Image.Image, seed: int) -> None:
        caption = models.captioner.caption([image])[0]
        regenerated = models.generator.generate([caption], [seed])[0]
        scores = {}
        for encoder in models.encoders:
            embeddings = encoder.embed([image, regenerated])
            scores[encoder.name] = cosine_scores(embeddings[:1], embeddings[1:])[0]
        decide(scores, threshold)

    for i, image in enumerate(images[:WARMUP]):
        judge(image, i)
    t0, done = time.perf_counter(), []
    for i, image in enumerate(images):
        judge(image, i)
        done.append(time.perf_counter() - t0)
    return done, done[-1]


def run_model_ceiling(models: Any, images: list[Image.Image], batch: int) -> tuple[list[float], float]:
    """The models' own batched calls, back to back, no engine: each chunk's images are done when its
    embeddings are."""
    from streamdetect.detector import score_pairs

    def chunk(part: list[Image.Image], start: int) -> None:
        captions = models.captioner.caption(part)
        regenerated = models.generator.generate(captions, list(range(start, start + len(part))))
        score_pairs(models.encoders, part, regenerated)

    chunk(images[:WARMUP], 0)
    t0, done = time.perf_counter(), []
    for start in range(0, len(images), batch):
        part = images[start : start + batch]
        chunk(part, start)
        done += [time.perf_counter() - t0] * len(part)
    return done, done[-1]


async def run_engine(models: Any, images: list[Image.Image], settings: Settings) -> tuple[list[float], float]:
    """The micro-batched pipeline in-process, the whole burst submitted at once."""
    from streamdetect.pipeline.engine import Pipeline, Request
    from streamdetect.app.wiring import stage_settings

    pipeline = Pipeline(models.captioner, models.generator, models.encoders, threshold=settings.threshold,
                        batching=stage_settings(settings))

    async def one(i: int, image: Image.Image, t0: float) -> float:
        await pipeline.submit(Request(upload_id=f"bench-{i}", image=image, seed=i))
        return time.perf_counter() - t0

    try:
        await asyncio.gather(*(one(i, image, time.perf_counter()) for i, image in enumerate(images[:WARMUP])))
        t0 = time.perf_counter()
        done = await asyncio.gather(*(one(i, image, t0) for i, image in enumerate(images)))
    finally:
        await pipeline.close()
    return list(done), max(done)


async def run_modes(bootstrap: str, models: Any, images: list[Image.Image], settings: Settings,
                    log_dir: Path, modes: tuple[str, ...] = MODES) -> dict[str, tuple[list[float], float]]:
    """Start the broker-side processes (each mode on its own topics), wait until all are ready,
    then measure every mode, one at a time: start-ups are CPU-heavy and would skew a measurement."""
    from streamdetect.bench import stream_contenders as bs

    run = uuid.uuid4().hex[:6]
    prefixes = {mode: f"bench-{run}-{mode}-" for mode in BROKER_MODES if mode in modes}
    await bs.create_topics(bootstrap, list(prefixes.values()))
    worker_env = _worker_env(settings)
    start = {
        "bare_kafka": lambda p: bs.start_bare(bootstrap, p, log_dir),
        "stream_ceiling": lambda p: bs.start_ceiling(bootstrap, p, worker_env, log_dir),
        "stream_null": lambda p: bs.start_worker("stream_null", bootstrap, p, worker_env, log_dir, True),
        "stream": lambda p: bs.start_worker("stream", bootstrap, p, worker_env, log_dir, False),
    }
    contenders = {mode: start[mode](prefix) for mode, prefix in prefixes.items()}
    uris = [data_uri(image) for image in images]
    measured: dict[str, tuple[list[float], float]] = {}
    try:
        await asyncio.gather(*(c.wait_ready() for c in contenders.values()))
        if "reference" in modes:
            measured["reference"] = run_reference(models, images, settings.threshold)
        if "engine" in modes:
            measured["engine"] = await run_engine(models, images, settings)
        if "model_ceiling" in modes:
            measured["model_ceiling"] = run_model_ceiling(models, images, settings.max_batch)
        for mode, contender in contenders.items():
            measured[mode] = await bs.measure(bootstrap, contender, uris, f"{run}-{mode}")
            contender.stop()  # an idle contender still polls the broker: stop it before the next
    finally:
        for contender in contenders.values():
            contender.stop()
    return measured


def _worker_env(settings: Settings) -> dict[str, str]:
    names = ("profile", "model_dir", "device", "dtype", "threshold", "max_batch", "max_wait_ms", "max_in_flight",
             "caption_max_batch", "generate_max_batch", "embed_max_batch", "batches_in_flight", "log_level")
    return {f"STREAMDETECT_{name.upper()}": str(getattr(settings, name)) for name in names}


def report(measured: dict[str, tuple[list[float], float]]) -> dict[str, Any]:
    """Every measured mode, and every ratio of two measured modes."""
    result: dict[str, Any] = {mode: summary(*measured[mode]) for mode in MODES if mode in measured}
    result["ratios"] = {name: result[a]["images_per_s"] / result[b]["images_per_s"] for name, (a, b) in RATIOS.items()
                        if a in measured and b in measured}
    return result


def format_report(result: dict[str, Any], n: int, profile: str) -> str:
    lines = [f"streamdetect bench: profile {profile}, {n} images per mode",
             f"{'mode':14} {'images/s':>10} {'p50 ms':>9} {'p95 ms':>9} {'p99 ms':>9}"]
    for mode in (m for m in MODES if m in result):
        r = result[mode]
        lines.append(f"{mode:14} {r['images_per_s']:10.1f} {r['p50_ms']:9.1f} {r['p95_ms']:9.1f} {r['p99_ms']:9.1f}")
    lines += [f"{name:28} {value:6.2f}" for name, value in result["ratios"].items()]
    return "\n".join(lines)


def run_bench(settings: Settings, n_images: int, bootstrap: str | None,
              modes: tuple[str, ...] = MODES) -> dict[str, Any]:
    from streamdetect.bench.local_broker import Broker
    from streamdetect.app.wiring import load_profile_models

    with tempfile.TemporaryDirectory(prefix="streamdetect-bench-") as tmp:
        with Broker(Path(tmp) / "kafka", external=bootstrap or "") as broker:
            models = load_profile_models(settings) if set(MODEL_MODES) & set(modes) else None
            measured = asyncio.run(run_modes(broker.bootstrap, models, bench_images(n_images), settings, Path(tmp),
                                             modes))
    return report(measured)
