"""`streamdetect bench`: reference vs engine vs stream vs bare Kafka, as ratios in one run."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from streamdetect.cli.context import settings_from_context
from streamdetect.cli.options import setting_options


@click.command("bench")
@click.option("--images", "n_images", type=click.IntRange(min=2), default=100, show_default=True,
              help="Images per mode.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the results as JSON to this file.")
@setting_options("profile", "model_dir", "device", "max_batch")
@click.pass_context
def bench(ctx: click.Context, n_images: int, json_path: Path | None, **overrides: Any) -> None:
    """Measure the reference design, the engine, the stream path, the stream path on null models
    and a bare Kafka loop, on the same models and images, and print images/s, p50/p95/p99 latency
    and the ratios engine/reference, stream/engine and stream_null/bare_kafka.

    Uses the broker from --bootstrap or KAFKA_BOOTSTRAP if set; otherwise starts a throwaway one
    on free loopback ports (deploy/kafka/kafka.sh) and stops it afterwards."""
    settings = settings_from_context(ctx, **overrides)
    from streamdetect.bench.run import format_report, run_bench

    result = run_bench(settings, n_images, _explicit_bootstrap(ctx))
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
