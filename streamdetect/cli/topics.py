"""`streamdetect topics apply`: the project's topics, from the specs shipped in events/topics/."""

from __future__ import annotations

import asyncio

import click

from streamdetect.cli.context import settings_from_context


@click.group()
def topics() -> None:
    """Manage the project's topics (specs in streamdetect/events/topics/*.yaml)."""


@topics.command("apply")
@click.pass_context
def topics_apply(ctx: click.Context) -> None:
    """Create missing topics, raise partition counts and set configs to match the specs. Idempotent."""
    settings = settings_from_context(ctx)
    from streamdetect.events.topic_specs import load_specs
    from streamdetect.stream.admin import apply_topics

    changes = asyncio.run(apply_topics(settings.bootstrap, load_specs(), settings.topic_prefix))
    for change in changes:
        click.echo(f"{change.topic:30} {change.action:14} {change.detail}")
