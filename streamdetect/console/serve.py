"""`streamdetect console`: the feed, the state and the web app, served by uvicorn until SIGINT.

Bound to 127.0.0.1 by default. Bound anywhere else it refuses to start without a token, and
every request must then carry it: a console that publishes decisions must not be open to the
network.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, AsyncIterator

import structlog
import uvicorn

from streamdetect.console.app import ConsoleConfig, Hub, build_app
from streamdetect.console.feed import Feed, FeedTopics, new_console_id
from streamdetect.console.state import ReviewState
from streamdetect.evidence import EvidenceStore

log = structlog.get_logger(__name__)


class ConsoleError(ValueError):
    """The console cannot start as configured; the message says what to change."""


@dataclass(frozen=True)
class ServeOptions:
    bootstrap: str
    topics: FeedTopics
    host: str
    port: int
    moderator: str
    claim_timeout_s: float
    since: datetime
    token: str | None = None
    store: EvidenceStore | None = None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def read_token(value: str, file: Path | None) -> str | None:
    """The token from the setting (environment) or from the first line of a file; None when neither."""
    if value:
        return value
    if file is None:
        return None
    try:
        token = file.read_text().strip().splitlines()[0].strip() if file.read_text().strip() else ""
    except OSError as exc:
        raise ConsoleError(f"cannot read the console token file {file}: {exc.strerror}") from exc
    if len(token) < 16:
        raise ConsoleError(f"the console token in {file} is shorter than 16 characters")
    return token


def check_exposure(host: str, token: str | None) -> None:
    if not is_loopback(host) and token is None:
        raise ConsoleError(f"the console is bound to {host}, not loopback: set a token with "
                           "STREAMDETECT_CONSOLE_TOKEN or --console-token-file (e.g. "
                           f"`python -c 'import secrets; print(secrets.token_urlsafe(32))' > token`), "
                           "or bind to 127.0.0.1")


def address(options: ServeOptions, port: int | None = None) -> str:
    host = options.host if ":" not in options.host else f"[{options.host}]"
    base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '[::]') else host}:{port or options.port}/"
    return base + (f"?token={options.token}" if options.token else "")


def allowed_hosts(host: str) -> list[str]:
    """Host headers the console answers: its own name, and loopback names when it is on loopback
    (a page elsewhere that rebinds its DNS name to 127.0.0.1 is refused by name)."""
    if host in ("0.0.0.0", "::"):
        return ["*"]
    names = {host, f"[{host}]" if ":" in host else host}
    if is_loopback(host):
        names |= {"127.0.0.1", "localhost", "[::1]"}
    return sorted(names)


def build(options: ServeOptions, on_started: Any = lambda: None) -> tuple[Any, Feed]:
    state = ReviewState(new_console_id())
    hub = Hub()
    feed = Feed(options.bootstrap, options.topics, state, options.since, on_change=hub.publish)
    config = ConsoleConfig(options.moderator, options.claim_timeout_s, options.token, allowed_hosts(options.host))
    app = build_app(feed, hub, options.store, config)

    @asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        await feed.start()
        log.info("console.started", console=state.console, moderator=options.moderator)
        on_started()
        try:
            yield
        finally:
            await feed.stop()

    app.router.lifespan_context = lifespan
    return app, feed


def serve(options: ServeOptions, on_ready: Any = lambda url: None) -> None:
    """Serve until interrupted; ``on_ready(url)`` is called once the port is bound (port 0 picks one)."""
    check_exposure(options.host, options.token)
    family = socket.AF_INET6 if ":" in options.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((options.host, options.port))
        sock.listen(128)  # connections wait in the backlog until uvicorn serves, never refused
    except OSError as exc:
        sock.close()
        raise ConsoleError(f"cannot listen on {options.host}:{options.port}: {exc.strerror}") from exc
    url = address(options, sock.getsockname()[1])
    app, _ = build(options, on_started=lambda: on_ready(url))
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", server_header=False)
    uvicorn.Server(config).run(sockets=[sock])


def new_token() -> str:
    return secrets.token_urlsafe(32)
