"""``streamdetect bench --models-only``: the models alone, in-process, with no broker.

Made for a GPU machine, which has no Kafka: the reference design (one image at a time) and the
engine (micro-batched, the whole burst at t0, as in bench/run.py) for each batch size, reported
as images/s and p50/p95/p99 latency, and where the time goes:

- ``engine.stages``: each stage's time inside the engine's model calls (its batch observer);
- ``stages``: each stage called alone on one full batch, the median of a few calls: caption;
  generate, split into text encoder, UNet and VAE decode (the rest is prompt handling, the
  scheduler and turning tensors into PIL images on the CPU); embed per encoder, split into
  preprocessing (PIL resize and normalise, on the CPU) and the forward pass.

Runs on the CPU too (any profile), which is how it is tested; nothing here needs a GPU to import.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from streamdetect.bench.run import bench_images, run_reference, summary
from streamdetect.settings import Settings

STAGE_REPEATS = 3  # calls per stage after one warm-up call; the median is reported


@dataclass(frozen=True)
class ModelsBench:
    n_images: int
    batch_sizes: tuple[int, ...]
    image_size: int = 512  # uploads are photos, not thumbnails: preprocessing resizes them on the CPU
    reference: bool = True
    channels_last: bool = True
    compile: bool = False


def run_models_bench(settings: Settings, bench: ModelsBench) -> dict[str, Any]:
    from streamdetect.app.wiring import load_profile_models
    from streamdetect.models.accel import cuda_fast_paths

    models = load_profile_models(settings)
    applied = cuda_fast_paths(models, channels_last=bench.channels_last, compile=bench.compile)
    images = bench_inputs(bench.n_images, bench.image_size)
    result: dict[str, Any] = {"setup": setup_info(settings, models, bench, applied)}
    if bench.reference:
        result["reference"] = summary(*run_reference(models, images, settings.threshold))
    result["batches"] = {str(b): measure_batch_size(models, images, settings, b) for b in bench.batch_sizes}
    result["peak_memory_gib"] = _peak_memory_gib(models)
    return result


def bench_inputs(n: int, size: int) -> list[Image.Image]:
    return [image.resize((size, size), Image.Resampling.BICUBIC) for image in bench_images(n)]


def measure_batch_size(models: Any, images: list[Image.Image], settings: Settings, batch: int) -> dict[str, Any]:
    batched = settings.model_copy(update={"max_batch": batch})
    return {"engine": asyncio.run(run_engine_observed(models, images, batched)),
            "stages": stage_sweep(models, images, batch)}


async def run_engine_observed(models: Any, images: list[Image.Image], settings: Settings) -> dict[str, Any]:
    """The engine on the whole burst, after one warm-up burst (the first call at each shape pays
    for cuDNN's kernel search, allocator growth and compilation); failures are counted, not raised."""
    from streamdetect.app.wiring import stage_settings
    from streamdetect.pipeline.engine import Pipeline, Request

    stats: dict[str, list[float]] = defaultdict(lambda: [0, 0, 0.0])  # batches, images, seconds

    def observe(report: Any) -> None:
        entry = stats[report.stage]
        entry[0], entry[1], entry[2] = entry[0] + 1, entry[1] + report.size, entry[2] + report.seconds

    pipeline = Pipeline(models.captioner, models.generator, models.encoders, threshold=settings.threshold,
                        batching=stage_settings(settings), observer=observe)

    async def one(i: int, image: Image.Image, t0: float) -> float:
        await pipeline.submit(Request(upload_id=f"bench-{i}", image=image, seed=i))
        return time.perf_counter() - t0

    async def burst() -> list[Any]:
        t0 = time.perf_counter()
        return await asyncio.gather(*(one(i, image, t0) for i, image in enumerate(images)), return_exceptions=True)

    try:
        await burst()
        stats.clear()
        done = await burst()
    finally:
        await pipeline.close()
    return _engine_report(done, stats)


def _engine_report(done: list[Any], stats: dict[str, list[float]]) -> dict[str, Any]:
    latencies = [d for d in done if isinstance(d, float)]
    errors = [d for d in done if isinstance(d, BaseException)]
    if not latencies:
        raise RuntimeError(f"every image failed in the engine; the first: {errors[0]!r}")
    out: dict[str, Any] = summary(latencies, max(latencies))
    out["errors"] = len(errors)
    if errors:
        out["first_error"] = repr(errors[0])[:500]
    total = sum(seconds for _, _, seconds in stats.values()) or 1.0
    out["stages"] = {stage: {"batches": int(b), "mean_batch": n / b, "seconds": s, "ms_per_image": 1000 * s / n,
                             "share": s / total}
                     for stage, (b, n, s) in stats.items() if b and n}
    return out


def stage_sweep(models: Any, images: list[Image.Image], batch: int) -> dict[str, Any]:
    """Each stage alone on one batch of ``batch`` images (the inputs repeated when there are fewer)."""
    inputs = [images[i % len(images)] for i in range(batch)]
    generator = _first_generator(models)
    out: dict[str, Any] = {"batch": batch, "caption": _stage(_median_s(lambda: models.captioner.caption(inputs)), batch)}
    captions, seeds = models.captioner.caption(inputs), list(range(batch))
    regenerated = generator.generate(captions, seeds)  # also the warm-up of the timed calls below
    with _substage_times(generator.pipeline) as parts:
        generate_s = _median_s(lambda: generator.generate(captions, seeds), warm=False)
    split = {f"{name}_ms": 1000 * seconds / STAGE_REPEATS for name, seconds in parts.items()}
    split["other_ms"] = max(0.0, 1000 * generate_s - sum(split.values()))  # prompts, scheduler, to PIL
    out["generate"] = {**_stage(generate_s, batch), "split_ms_per_batch": split}
    out["embed"] = {encoder.name: _embed_stage(encoder, [*inputs, *regenerated], batch) for encoder in models.encoders}
    return out


def _embed_stage(encoder: Any, pair_images: list[Image.Image], batch: int) -> dict[str, Any]:
    # One call per encoder embeds the inputs and their regenerations together, as score_pairs does.
    result = _stage(_median_s(lambda: encoder.embed(pair_images)), batch)
    pixels = getattr(encoder, "_pixels", None)  # the CPU preprocessing alone, without the forward pass
    if pixels is not None:
        rgb = [im.convert("RGB") for im in pair_images]
        result["preprocess_ms_per_batch"] = 1000 * _median_s(lambda: pixels(rgb))
    return result


def _stage(seconds: float, batch: int) -> dict[str, float]:
    return {"ms_per_batch": 1000 * seconds, "ms_per_image": 1000 * seconds / batch, "images_per_s": batch / seconds}


def _median_s(call: Callable[[], Any], warm: bool = True) -> float:
    if warm:
        call()  # the first call at a new shape is not what steady state costs
    times = []
    for _ in range(STAGE_REPEATS):
        start = time.perf_counter()
        call()  # every stage returns CPU objects (strings, PIL images, CPU tensors): the device is done
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@contextmanager
def _substage_times(pipeline: Any) -> Iterator[dict[str, float]]:
    """Seconds spent in the text encoder, the UNet and the VAE decode while the block runs
    (synchronising the device around each, so GPU time lands where it is spent)."""
    totals: dict[str, float] = defaultdict(float)
    device = getattr(pipeline, "device", torch.device("cpu"))
    handles, started = [], {}
    for name in ("text_encoder", "unet"):
        module = getattr(pipeline, name, None)
        if isinstance(module, torch.nn.Module):
            handles.append(module.register_forward_pre_hook(_start(name, started, device)))
            handles.append(module.register_forward_hook(_stop(name, started, totals, device)))
    vae = getattr(pipeline, "vae", None)
    own_decode = vae.__dict__.get("decode") if vae is not None else None  # a compiled decode lives on the instance
    if vae is not None:
        vae.decode = _timed_call(vae.decode, "vae_decode", totals, device)
    try:
        yield totals
    finally:
        for handle in handles:
            handle.remove()
        if vae is not None:
            if own_decode is None:
                del vae.decode  # back to the class's method
            else:
                vae.decode = own_decode


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _start(name: str, started: dict[str, float], device: torch.device) -> Callable[..., None]:
    def hook(*_: Any) -> None:
        _sync(device)
        started[name] = time.perf_counter()
    return hook


def _stop(name: str, started: dict[str, float], totals: dict[str, float], device: torch.device) -> Callable[..., None]:
    def hook(*_: Any) -> None:
        _sync(device)
        totals[name] += time.perf_counter() - started.pop(name, time.perf_counter())
    return hook


def _timed_call(fn: Callable[..., Any], name: str, totals: dict[str, float], device: torch.device) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        _sync(device)
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        _sync(device)
        totals[name] += time.perf_counter() - start
        return out
    return call


def _first_generator(models: Any) -> Any:
    generators = getattr(models, "generators", None)
    return generators[0] if generators else models.generator


def setup_info(settings: Settings, models: Any, bench: ModelsBench, applied: list[str]) -> dict[str, Any]:
    from streamdetect.models.accel import attention_report, parameter_counts

    counts = parameter_counts(models)
    cuda = settings.device.startswith("cuda")
    return {
        "profile": settings.profile, "device": settings.device, "dtype": _dtype(models),
        "gpu": torch.cuda.get_device_name(torch.device(settings.device)) if cuda else None,
        "torch": torch.__version__, "torch_cuda": torch.version.cuda, "images": bench.n_images,
        "image_size": bench.image_size, "batch_sizes": list(bench.batch_sizes), "cpu_threads": settings.cpu_threads,
        "max_wait_ms": settings.max_wait_ms, "batches_in_flight": settings.batches_in_flight,
        "fast_paths": applied, "attention": attention_report(models),
        "parameters": counts, "parameters_total": sum(counts.values()),
    }


def _dtype(models: Any) -> str:
    return str(models.captioner.dtype).removeprefix("torch.")


def _peak_memory_gib(models: Any) -> float | None:
    from streamdetect.models.accel import on_cuda

    return torch.cuda.max_memory_allocated() / 2**30 if on_cuda(models) else None


def format_models_report(result: dict[str, Any]) -> str:
    setup = result["setup"]
    where = f"{setup['device']} ({setup['gpu']})" if setup["gpu"] else setup["device"]
    lines = [f"streamdetect bench --models-only: profile {setup['profile']} on {where}, {setup['dtype']}, "
             f"{setup['images']} images of {setup['image_size']} px, {setup['parameters_total'] / 1e6:,.1f}M parameters",
             f"fast paths: {', '.join(setup['fast_paths']) or 'none (not on CUDA)'}",
             f"{'mode':10} {'batch':>5} {'images/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'errors':>6}"]
    if "reference" in result:
        lines.append(_mode_line("reference", 1, result["reference"]))
    for batch, measured in result["batches"].items():
        lines.append(_mode_line("engine", int(batch), measured["engine"]))
    lines.append("ms per image in the engine / each stage alone:")
    for batch, measured in result["batches"].items():
        lines.append(f"  batch {batch:>3}: " + "  ".join(_stage_cells(measured)))
    if result.get("peak_memory_gib") is not None:
        lines.append(f"peak GPU memory {result['peak_memory_gib']:.1f} GiB")
    return "\n".join(lines)


def _mode_line(mode: str, batch: int, r: dict[str, Any]) -> str:
    return (f"{mode:10} {batch:5d} {r['images_per_s']:9.1f} {r['p50_ms']:8.1f} {r['p95_ms']:8.1f} "
            f"{r['p99_ms']:8.1f} {r.get('errors', 0):6d}")


def _stage_cells(measured: dict[str, Any]) -> list[str]:
    engine, stages = measured["engine"]["stages"], measured["stages"]
    alone = {"caption": stages["caption"]["ms_per_image"], "generate": stages["generate"]["ms_per_image"],
             "embed": sum(e["ms_per_image"] for e in stages["embed"].values())}
    cells = [f"{name} {engine[name]['ms_per_image'] if name in engine else float('nan'):.1f} / {alone[name]:.1f}"
             for name in ("caption", "generate", "embed")]
    split = stages["generate"]["split_ms_per_batch"]
    cells.append("generate split per batch: " + ", ".join(f"{k.removesuffix('_ms')} {v:.0f}" for k, v in split.items()))
    return cells
