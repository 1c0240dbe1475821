"""`streamdetect bench`: reference vs engine vs stream vs its ceiling vs bare Kafka, as ratios in one run."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from streamdetect.cli.context import settings_from_context
from streamdetect.cli.options import setting_options


def _modes(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    from streamdetect.bench.run import MODES

    chosen = MODES if value == "all" else tuple(m.strip() for m in value.split(",") if m.strip())
    unknown = sorted(set(chosen) - set(MODES))
    if unknown or not chosen:
        raise click.BadParameter(f"unknown mode(s) {', '.join(unknown) or '(none given)'}; "
                                 f"choose from {', '.join(MODES)}")
    return chosen


# Options of the in-process run (bench/gpu.py), packed into one argument so that the command's
# own flags and the settings' flags stay as they are.
MODELS_ONLY_FLAGS = ("batch_sizes", "image_size", "compile_models", "channels_last")


def _batch_sizes(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, ...]:
    if value is None:
        return ()
    try:
        sizes = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise click.BadParameter(f"expected comma-separated batch sizes >= 1, got {value!r}")
    return sizes


def models_only_options(fn: Any) -> Any:
    options = [
        click.option("--models-only/--with-broker", "models_only", default=None,
                     help="Only the in-process modes (reference, engine) and per-stage times, no broker: for a GPU "
                          "machine without Kafka (bench/gpu.py). [default: --models-only with --device cuda]"),
        click.option("--batch-sizes", callback=_batch_sizes,
                     help="--models-only: comma-separated batch sizes, one engine run and stage sweep each, models "
                          "loaded once. [default: --max-batch]"),
        click.option("--image-size", type=click.IntRange(32, 4096), default=512, show_default=True,
                     help="--models-only: side of the square input images, in pixels."),
        click.option("--compile", "compile_models", is_flag=True,
                     help="--models-only: torch.compile the UNet and the VAE decode (CUDA; minutes of warm-up)."),
        click.option("--channels-last/--no-channels-last", default=True, show_default=True,
                     help="--models-only: channels_last memory format for the UNet and VAE (CUDA)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _run_models_only(ctx: click.Context, settings: Any, n_images: int, json_path: Path | None,
                     modes: tuple[str, ...], flags: dict[str, Any]) -> bool:
    """Run the in-process bench when asked for (or on CUDA by default); False: run the full one."""
    models_only = flags.pop("models_only")
    if models_only is None:
        models_only = settings.device.startswith("cuda")
    if not models_only:
        given = [f"--{name.replace('_models', '').replace('_', '-')}" for name in MODELS_ONLY_FLAGS
                 if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE]
        if given:
            raise click.UsageError(f"{', '.join(given)} apply to --models-only runs only")
        return False
    from streamdetect.bench.gpu import ModelsBench, format_models_report, run_models_bench

    bench = ModelsBench(n_images, flags["batch_sizes"] or (settings.max_batch,), flags["image_size"],
                        reference="reference" in modes, channels_last=flags["channels_last"],
                        compile=flags["compile_models"])
    result = run_models_bench(settings, bench)
    click.echo(format_models_report(result))
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=2) + "\n")
    return True


@click.command("bench")
@click.option("--images", "n_images", type=click.IntRange(min=2), default=100, show_default=True,
              help="Images per mode.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the results as JSON to this file.")
@click.option("--modes", default="all", show_default=True, callback=_modes,
              help="Comma-separated modes to measure (reference, engine, model_ceiling, stream, stream_null, "
                   "stream_ceiling, bare_kafka); a ratio is reported when both its modes were measured.")
@models_only_options
@setting_options("profile", "model_dir", "device", "dtype", "cpu_threads", "max_batch")
@click.pass_context
def bench(ctx: click.Context, n_images: int, json_path: Path | None, modes: tuple[str, ...],
          **overrides: Any) -> None:
    """Measure the reference design, the engine, the stream path, the stream path on null models,
    its ceiling (the worker's per-upload work in a bare loop batched per poll) and a bare Kafka
    loop, on the same models and images, and print images/s, p50/p95/p99 latency and the ratios
    engine/reference, stream/engine, stream_null/stream_ceiling and stream_null/bare_kafka.

    Uses the broker from --bootstrap or KAFKA_BOOTSTRAP if set; otherwise starts a throwaway one
    on free loopback ports (deploy/kafka/kafka.sh) and stops it afterwards. With --models-only
    (the default with --device cuda) no broker is used: the reference and the engine per batch
    size, and each stage's time, in-process (bench/gpu.py)."""
    flags = {name: overrides.pop(name) for name in ("models_only", *MODELS_ONLY_FLAGS)}
    settings = settings_from_context(ctx, **overrides)
    if _run_models_only(ctx, settings, n_images, json_path, modes, flags):
        return
    from streamdetect.bench.run import format_report, run_bench

    result = run_bench(settings, n_images, _explicit_bootstrap(ctx), modes)
    click.echo(format_report(result, n_images, settings.profile))
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=2) + "\n")


def _explicit_bootstrap(ctx: click.Context) -> str | None:
    """A broker the user named; otherwise the bench starts its own."""
    return ctx.find_root().obj["overrides"].get("bootstrap") or os.environ.get("KAFKA_BOOTSTRAP") or os.environ.get(
        "STREAMDETECT_BOOTSTRAP")


@click.command("bench-recovery")
@click.option("--rate", type=click.FloatRange(min=1), default=20, show_default=True, help="Uploads sent per second.")
@click.option("--before", "before_s", type=click.FloatRange(min=1), default=6, show_default=True,
              help="Seconds of traffic before one of the two workers is SIGKILLed.")
@click.option("--after", "after_s", type=click.FloatRange(min=5), default=25, show_default=True,
              help="Seconds of traffic after the kill.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the results as JSON to this file.")
@click.pass_context
def bench_recovery(ctx: click.Context, rate: float, before_s: float, after_s: float, json_path: Path | None) -> None:
    """Kill one of two workers mid-stream and measure how long its partitions sit idle (the worst
    time from sending an upload to its verdict after the kill), how many uploads are judged twice,
    and that none is lost. Uses the worker's session and heartbeat settings (session_timeout_s)."""
    import asyncio
    import tempfile

    from streamdetect.bench.local_broker import Broker
    from streamdetect.bench.recovery import measure_recovery

    settings = settings_from_context(ctx)
    env = {f"STREAMDETECT_{name.upper()}": str(getattr(settings, name))
           for name in ("session_timeout_s", "heartbeat_interval_s", "commit_interval_s")}
    with tempfile.TemporaryDirectory(prefix="streamdetect-recovery-") as tmp:
        with Broker(Path(tmp) / "kafka", external=_explicit_bootstrap(ctx) or "") as broker:
            result = asyncio.run(measure_recovery(broker.bootstrap, Path(tmp), rate, before_s, after_s, env))
    click.echo(json.dumps(result, indent=2))
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=2) + "\n")


@click.command("bench-soak")
@click.option("--minutes", type=click.FloatRange(min=1), default=10, show_default=True, help="How long to stream.")
@click.option("--rate", type=click.FloatRange(min=1), default=50, show_default=True, help="Uploads sent per second.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the results as JSON to this file.")
@click.pass_context
def bench_soak(ctx: click.Context, minutes: float, rate: float, json_path: Path | None) -> None:
    """Stream uploads through one worker (real worker, instant null models) and report the slope
    of its resident memory in MB per hour, fitted after the first fifth of the run."""
    import asyncio
    import tempfile

    from streamdetect.bench.local_broker import Broker
    from streamdetect.bench.soak import soak

    settings_from_context(ctx)
    with tempfile.TemporaryDirectory(prefix="streamdetect-soak-") as tmp:
        with Broker(Path(tmp) / "kafka", external=_explicit_bootstrap(ctx) or "") as broker:
            result = asyncio.run(soak(broker.bootstrap, Path(tmp), minutes, rate))
    click.echo(json.dumps(result, indent=2))
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=2) + "\n")
