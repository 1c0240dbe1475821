"""`streamdetect dlq redrive`: send dead letters back to uploads once their cause is fixed."""

from __future__ import annotations

import asyncio
from datetime import datetime

import click

from streamdetect.cli.context import settings_from_context
from streamdetect.cli.stream import TIME_FORMATS, require_topic, utc
from streamdetect.images import REASONS

DEAD_LETTER_REASONS = ("bad_schema", *REASONS, "model_error", "deadline", "internal")


@click.group()
def dlq() -> None:
    """Work with the dead-letter topic (read it with `streamdetect replay --topic dlq`)."""


@dlq.command("redrive")
@click.option("--reason", "reasons", multiple=True, type=click.Choice(DEAD_LETTER_REASONS),
              help="Only dead letters with this reason (repeatable; default any).")
@click.option("--upload-id", "upload_ids", multiple=True, help="Only this upload (repeatable).")
@click.option("--since", type=click.DateTime(formats=TIME_FORMATS), help="Only dead letters written at or after this "
                                                                        "time (UTC unless a zone is given).")
@click.option("--until", type=click.DateTime(formats=TIME_FORMATS), help="Only dead letters written before this time.")
@click.option("--max-rounds", type=click.IntRange(min=1), default=3, show_default=True,
              help="Leave an upload that was already redriven this many times and failed again.")
@click.option("--dry-run", is_flag=True, help="Print what would go, by reason, and send nothing.")
@click.pass_context
def redrive(ctx: click.Context, reasons: tuple[str, ...], upload_ids: tuple[str, ...], since: datetime | None,
            until: datetime | None, max_rounds: int, dry_run: bool) -> None:
    """Send the chosen dead letters' original payloads back to uploads, where workers judge them
    again. Dead letters stay in dlq; a redriven upload that fails again makes a new one that
    counts its rounds. Payloads cut by dead_letter_payload_max_bytes cannot be sent back.

    \b
    streamdetect dlq redrive --reason unreachable --reason model_error --dry-run
    streamdetect dlq redrive --reason not_found --since 2026-12-01T08:00:00
    """
    from streamdetect.stream.redrive import Selection, plan_redrive, send_back

    settings = settings_from_context(ctx)
    require_topic(settings, "dlq")
    require_topic(settings, "uploads")
    selection = Selection(frozenset(reasons), frozenset(upload_ids), utc(since), utc(until), max_rounds)
    plan = asyncio.run(plan_redrive(settings.bootstrap, settings.topic("dlq"), selection))
    click.echo(plan.histogram())
    if dry_run:
        click.echo("dry run: nothing sent")
        return
    sent = asyncio.run(send_back(settings.bootstrap, settings.topic("uploads"), plan))
    click.echo(f"sent {sent} to {settings.topic('uploads')}")

