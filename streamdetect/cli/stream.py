"""`streamdetect worker | submit | alerts | replay`: the commands that talk to the broker."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone
from typing import Any, Coroutine

import click

from streamdetect.cli.context import settings_from_context, warn_if_tiny
from streamdetect.cli.options import WORKER_SETTINGS, setting_options
from streamdetect.settings import ConfigError, Settings

TIME_FORMATS = ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S%z"]


@click.command()
@setting_options(*WORKER_SETTINGS)
@click.pass_context
def worker(ctx: click.Context, **overrides: Any) -> None:
    """Consume uploads, judge each with MirrorCheck, publish verdicts to audit (and alerts when
    flagged) and anything that cannot be judged to dlq. Runs until SIGINT or SIGTERM.

    Offsets are committed only after an upload's verdict or dead letter is on the broker, so a
    crash re-judges the uploads in flight and those published since the last commit
    (at-least-once, keyed by upload_id).
    Without --threshold-file (or an explicit --threshold) the threshold is not calibrated for
    the models: the worker says so at start and in every verdict (threshold_source).
    """
    settings = settings_from_context(ctx, **overrides)
    warn_if_tiny(settings)
    from streamdetect.app.wiring import build_handler
    from streamdetect.stream.admin import MissingTopics
    from streamdetect.stream.worker import check_topics, run_worker

    try:
        asyncio.run(check_topics(settings))  # before loading models: fail in a second, not a minute
        handler = build_handler(settings)
    except (MissingTopics, ConfigError) as exc:
        raise click.ClickException(str(exc)) from exc
    except (ValueError, OSError) as exc:  # a model that cannot load: missing files, no CUDA, bad spec
        raise click.ClickException(f"could not load the {settings.profile} models: {exc}") from exc
    run_worker(settings, handler)


@click.command()
@click.argument("targets", nargs=-1, required=True)
@click.option("--caption", help="The platform's own VLM caption for these images; skips the caption stage.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per upload instead of text.")
@click.pass_context
def submit(ctx: click.Context, targets: tuple[str, ...], caption: str | None, as_json: bool) -> None:
    """Publish one upload per TARGET: a local image file (sent inline) or a reference
    (s3://bucket/key, https://..., data:image/...;base64,..., file:///... if the worker allows it).
    Prints each upload id with where it landed."""
    settings = settings_from_context(ctx)
    from streamdetect.stream.clients import submit as submit_uploads

    require_topic(settings, "uploads")
    try:
        sent = asyncio.run(submit_uploads(settings.bootstrap, settings.topic("uploads"), list(targets), caption))
    except FileNotFoundError as exc:
        raise click.UsageError(str(exc)) from exc
    for s in sent:
        if as_json:
            click.echo(json.dumps({"upload_id": s.upload_id, "target": s.target, "partition": s.partition,
                                   "offset": s.offset}))
        else:
            click.echo(f"{s.upload_id}  {s.target[:80]}  -> partition {s.partition} offset {s.offset}")


@click.command()
@click.option("--from-beginning", is_flag=True, help="Start with the oldest alert kept, not the next new one.")
@click.option("--json", "as_json", is_flag=True, help="Print each alert as one JSON line.")
@click.option("--idle-timeout", type=float, help="Exit after this many seconds without an alert (default: follow forever).")
@click.pass_context
def alerts(ctx: click.Context, from_beginning: bool, as_json: bool, idle_timeout: float | None) -> None:
    """Follow the alert topic and print each flagged upload as it arrives (Ctrl-C to stop)."""
    settings = settings_from_context(ctx)
    from streamdetect.stream.clients import follow

    require_topic(settings, "alerts")
    async def run() -> None:
        async for alert in follow(settings.bootstrap, settings.topic("alerts"), from_beginning, idle_timeout):
            click.echo(json.dumps(alert, sort_keys=True) if as_json else format_verdict(alert))

    _run_until_interrupted(run())


@click.command()
@click.option("--since", type=click.DateTime(formats=TIME_FORMATS),
              help="Only verdicts written at or after this time (UTC unless a zone is given).")
@click.option("--until", type=click.DateTime(formats=TIME_FORMATS), help="Only verdicts written before this time.")
@click.option("--topic", "which", type=click.Choice(["audit", "alerts", "dlq", "labels", "claims"]), default="audit",
              show_default=True,
              help="Which log to read.")
@click.pass_context
def replay(ctx: click.Context, since: datetime | None, until: datetime | None, which: str) -> None:
    """Print the audit log (every verdict) as JSON lines, oldest first per partition, and exit at
    its current end. Verdicts are keyed by upload_id: a replayed upload may appear twice."""
    settings = settings_from_context(ctx)
    from streamdetect.stream.clients import replay as replay_topic

    require_topic(settings, which)
    async def run() -> None:
        async for event in replay_topic(settings.bootstrap, settings.topic(which), utc(since), utc(until)):
            click.echo(json.dumps(event, sort_keys=True))

    _run_until_interrupted(run())


def require_topic(settings: Settings, name: str) -> None:
    """Say at once, in one line, when the topic a command needs is missing (not after a 40 s wait)."""
    from streamdetect.stream.admin import MissingTopics, require_topics

    try:
        asyncio.run(require_topics(settings.bootstrap, [settings.topic(name)], settings.topic_prefix))
    except MissingTopics as exc:
        raise click.ClickException(str(exc)) from exc


def format_verdict(event: dict[str, Any]) -> str:
    """One line a moderator can act on: what was judged, whose it is, and where the evidence is."""
    mark = "FLAGGED" if event.get("flagged") else "ok     "
    line = (f"{mark} {event.get('upload_id')}  score={event.get('score', float('nan')):.3f} "
            f"threshold={event.get('threshold')}  caption[{event.get('caption_source')}]={event.get('caption')!r}")
    image = event.get("image") or {}
    if image:
        line += f"  image={image.get('reference') or 'inline sha256:' + str(image.get('sha256', ''))[:12]}"
    if event.get("metadata"):
        line += f"  metadata={json.dumps(event['metadata'], sort_keys=True)[:200]}"
    regenerated = (event.get("evidence") or {}).get("regenerated") or {}
    if regenerated.get("key"):
        line += f"  evidence={event['evidence']['store'].rstrip('/')}/{regenerated['key']}"
    return line


def utc(moment: datetime | None) -> datetime | None:
    return None if moment is None else (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc))


def _run_until_interrupted(coro: Coroutine[Any, Any, None]) -> None:
    try:
        asyncio.run(coro)
    except KeyboardInterrupt:
        pass
    except LookupError as exc:
        raise click.ClickException(str(exc)) from exc
