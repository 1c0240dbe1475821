"""`streamdetect console`: the moderators' web page for alerts, evidence and decisions."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import click

from streamdetect.cli.context import settings_from_context
from streamdetect.cli.options import setting_options
from streamdetect.cli.stream import TIME_FORMATS, require_topic, utc

CONSOLE_SETTINGS = ("console_host", "console_port", "console_token_file", "moderator", "claim_timeout_s",
                    "evidence_store", "s3_endpoint")


@click.command()
@setting_options(*CONSOLE_SETTINGS)
@click.option("--since", type=click.DateTime(formats=TIME_FORMATS),
              help="Show verdicts, decisions and claims written since this time (UTC unless a zone is given). "
                   "[default: 24 hours ago]")
@click.pass_context
def console(ctx: click.Context, since: datetime | None, **overrides: Any) -> None:
    """Serve the moderator console: alerts live from `alerts` and older ones from `audit`, each
    with its input (blurred until clicked) and regeneration from the evidence store, the score
    against the threshold, and Confirm / Dismiss buttons that publish a decision to `labels`.
    Opening an alert claims it for --claim-timeout-s on `claims`, so other consoles show it as
    claimed rather than undecided.

    Listens on 127.0.0.1 unless --console-host says otherwise; off loopback a token is required
    (STREAMDETECT_CONSOLE_TOKEN or --console-token-file) and every request must carry it. The
    address printed at start carries the token once; the page keeps it in a cookie.
    """
    settings = settings_from_context(ctx, **overrides)
    from streamdetect.console.feed import FeedTopics
    from streamdetect.console.serve import ConsoleError, ServeOptions, read_token, serve
    from streamdetect.evidence import open_store

    for name in ("alerts", "audit", "labels", "claims"):
        require_topic(settings, name)
    try:
        token = read_token(settings.console_token.get_secret_value(), settings.console_token_file)
        store = open_store(settings.evidence_store, settings.s3_endpoint, settings.s3_region) \
            if settings.evidence_store else None
        options = ServeOptions(
            bootstrap=settings.bootstrap, host=settings.console_host, port=settings.console_port,
            topics=FeedTopics(audit=settings.topic("audit"), alerts=settings.topic("alerts"),
                              labels=settings.topic("labels"), claims=settings.topic("claims")),
            moderator=settings.moderator, claim_timeout_s=settings.claim_timeout_s,
            since=utc(since) or datetime.now(timezone.utc) - timedelta(hours=24), token=token, store=store)
        if store is None:
            click.echo("console: no --evidence-store: alerts are shown without their images", err=True)
        serve(options, on_ready=lambda url: click.echo(f"console: open {url} (moderator {settings.moderator}); "
                                                       "Ctrl-C to stop", err=True))
    except (ConsoleError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
