"""`streamdetect models prepare`: make a profile's models ready to load offline."""

from __future__ import annotations

from typing import Any

import click

from streamdetect.cli.context import settings_from_context
from streamdetect.cli.options import setting_options


@click.group()
def models() -> None:
    """Prepare and inspect model weights."""


@models.command("prepare")
@setting_options("profile", "model_dir")
@click.pass_context
def models_prepare(ctx: click.Context, **overrides: Any) -> None:
    """Make the models of a profile ready to load offline, and show what the profile loads:
    tiny builds random-weight models from configs into the model folder, standard-shapes the
    standard profile's architectures at real size with random weights (minutes, about 4.3 GB;
    for GPU throughput); mini ships with the package; paper and standard read the Hugging Face
    cache (HF_HOME) or local folders."""
    settings = settings_from_context(ctx, **overrides)
    from streamdetect.app.wiring import prepare_models

    click.echo(prepare_models(settings))
