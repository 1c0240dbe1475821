"""Settings for a CLI command: the root group's --config and flags, plus the command's own."""

from __future__ import annotations

from typing import Any

import click

from streamdetect.settings import ConfigError, Settings

TINY_WARNING = ("profile tiny: random-weight models for tests and plumbing; their scores mean nothing. "
                "Use --profile mini (the default) for verdicts that mean something on a CPU.")
SHAPES_WARNING = ("profile standard-shapes: the standard profile's architectures with random weights, for "
                  "throughput only; their scores mean nothing.")


def settings_from_context(ctx: click.Context, **overrides: Any) -> Settings:
    """Read settings once (file < env < flags), configure logs, and turn a bad value into a usage error."""
    root = ctx.find_root()
    try:
        settings = Settings.load(root.obj["config"], overrides={**root.obj["overrides"], **overrides})
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    from streamdetect import logs

    logs.configure(settings.log_level, settings.log_json)
    return settings


def warn_if_tiny(settings: Settings) -> None:
    """Say so when a command that judges images runs on the random-weight models (a log line, so
    it is JSON too when logs are)."""
    warnings = {"tiny": TINY_WARNING, "standard-shapes": SHAPES_WARNING}
    if settings.profile in warnings:
        import structlog

        structlog.get_logger(__name__).warning(f"profile.{settings.profile}", detail=warnings[settings.profile])
