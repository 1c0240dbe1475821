"""`streamdetect topics apply`: the project's topics, from the specs shipped in events/topics/."""

from __future__ import annotations

import asyncio

import click

from streamdetect.cli.context import settings_from_context


@click.group()
def topics() -> None:
    """Manage the project's topics (specs in streamdetect/events/topics/*.yaml)."""


@topics.command("apply")
@click.option("--allow-drift", is_flag=True, help="Exit 0 even when a topic differs from its spec in a way apply "
                                                  "cannot fix (fewer partitions wanted, another replication factor).")
@click.pass_context
def topics_apply(ctx: click.Context, allow_drift: bool) -> None:
    """Create missing topics, raise partition counts and set configs to match the specs, keeping
    config overrides set by hand. Idempotent. Differences it cannot fix (a spec with fewer
    partitions, another replication factor) are reported and make it exit 1."""
    settings = settings_from_context(ctx)
    from streamdetect.events.topic_specs import load_specs
    from streamdetect.stream.admin import apply_topics

    changes = asyncio.run(apply_topics(settings.bootstrap, load_specs(), settings.topic_prefix))
    for change in changes:
        click.echo(f"{change.topic:30} {change.action:17} {change.detail}")
    drift = [c for c in changes if c.is_drift]
    if drift and not allow_drift:
        raise click.ClickException(f"{len(drift)} difference(s) from the specs that apply cannot fix (above); "
                                   "fix them on the cluster, or pass --allow-drift")
