"""`streamdetect demo`: calibrate, attack, run a worker, submit uploads, show what arrives."""

from __future__ import annotations

import asyncio
import sys

import click

from streamdetect.cli.context import settings_from_context, warn_if_tiny
from streamdetect.cli.options import setting_option


@click.command()
@click.option("--timeout", type=float, default=300, show_default=True, help="Seconds to wait for every verdict.")
@setting_option("profile")
@click.pass_context
def demo(ctx: click.Context, timeout: float, profile: str | None) -> None:
    """Calibrate a threshold on clean scenes, attack a few, start a worker, submit clean, attacked
    and three bad uploads, print verdicts, dead letters and alerts as they arrive, stop the worker.
    Needs a broker (make demo starts one). Pictures and the threshold file stay in .run/demo/."""
    settings = settings_from_context(ctx, profile=profile)
    warn_if_tiny(settings)
    from streamdetect.demo.run import run_demo

    sys.exit(asyncio.run(run_demo(settings, timeout)))
