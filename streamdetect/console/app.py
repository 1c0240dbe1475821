"""The console's web app (Starlette): the page, its JSON API, live updates as server-sent
events, and the evidence images.

Images are served only by evidence key, only for keys of alerts this console holds, and only
from the configured store: the browser never names a URL or a path to fetch. Everything a
verdict says reaches the page as JSON and is put on it as text (console.js never uses
innerHTML), so an upload's caption or metadata cannot become markup.
"""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, AsyncIterator

import structlog
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from streamdetect.console.feed import Feed, claim_event, label_event
from streamdetect.console.guard import Guard
from streamdetect.console.state import STATES, Filters
from streamdetect.events import parse_time
from streamdetect.evidence import KEY_PATTERN, EvidenceError, EvidenceStore

log = structlog.get_logger(__name__)
STATIC = Path(__file__).resolve().parent / "static"
DECISIONS = ("confirmed", "dismissed")
MAX_NOTE = 2000


@dataclass(frozen=True)
class ConsoleConfig:
    moderator: str
    claim_timeout_s: float
    token: str | None
    allowed_hosts: list[str]


class Hub:
    """Fans changes out to every open page; a slow page loses updates, never blocks the feed
    (the page reloads its list on each one anyway)."""

    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[tuple[str, Any]]] = set()

    def publish(self, kind: str, data: Any) -> None:
        for queue in list(self._queues):
            if queue.qsize() < queue.maxsize:
                queue.put_nowait((kind, data))

    async def listen(self) -> AsyncIterator[tuple[str, Any]]:
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(maxsize=100)
        self._queues.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._queues.discard(queue)


def build_app(feed: Feed, hub: Hub, store: EvidenceStore | None, config: ConsoleConfig) -> Starlette:
    state = feed.state

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    async def me(request: Request) -> Response:
        return JSONResponse({"moderator": config.moderator, "console": state.console,
                             "claim_timeout_s": config.claim_timeout_s, "threshold": state.threshold,
                             "caught_up": feed.caught_up.is_set(), "evidence_store": store.location if store else None})

    async def alerts(request: Request) -> Response:
        try:
            filters = _filters(request.query_params)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"alerts": state.alerts(filters, _now())})

    async def histogram(request: Request) -> Response:
        return JSONResponse(state.histogram())

    async def stream(request: Request) -> Response:
        async def changes() -> AsyncIterator[dict[str, str]]:
            yield {"event": "hello", "data": json.dumps({"console": state.console})}
            async for kind, data in hub.listen():
                yield {"event": kind, "data": json.dumps(data)}
        return EventSourceResponse(changes(), ping=10)

    async def claim(request: Request) -> Response:
        upload_id, body = await _upload_id(request)
        if upload_id is None:
            return JSONResponse({"error": "upload_id is required"}, status_code=400)
        if state.alert(upload_id) is None:
            return JSONResponse({"error": "no such alert"}, status_code=404)
        conflict = _conflict(upload_id)
        if conflict is not None:
            return conflict
        await feed.publish("claim", claim_event(state, upload_id, config.moderator, config.claim_timeout_s))
        return _conflict(upload_id) or JSONResponse(state.view(upload_id, _now()))

    async def decide(request: Request) -> Response:
        upload_id, body = await _upload_id(request)
        decision, note = body.get("decision"), body.get("note") or ""
        if upload_id is None or decision not in DECISIONS or not isinstance(note, str) or len(note) > MAX_NOTE:
            return JSONResponse({"error": f"send upload_id, decision ({' or '.join(DECISIONS)}) and an optional "
                                          f"note of at most {MAX_NOTE} characters"}, status_code=400)
        verdict = state.alert(upload_id)
        if verdict is None:
            return JSONResponse({"error": "no such alert"}, status_code=404)
        conflict = _conflict(upload_id)
        if conflict is not None:
            return conflict
        await feed.publish("label", label_event(verdict, decision, config.moderator, note, state.console))
        return JSONResponse(state.view(upload_id, _now()))

    async def evidence(request: Request) -> Response:
        key = f"{request.path_params['kind']}/{request.path_params['name']}"
        if store is None or not KEY_PATTERN.match(key) or state.keys[key] <= 0:
            return Response("no such evidence", status_code=404, media_type="text/plain")
        try:
            data = await run_in_threadpool(store.get, key)
        except EvidenceError as exc:
            log.warning("console.evidence_unreadable", key=key, error=str(exc)[:300])
            return Response("evidence unreadable", status_code=502, media_type="text/plain")
        return Response(data, media_type="image/png")

    def _conflict(upload_id: str) -> Response | None:
        """Someone else holds the alert: it is theirs to decide until their claim expires."""
        holder = state.holder(upload_id, _now())
        if holder is not None and holder.console != state.console:
            return JSONResponse({"error": f"claimed by {holder.moderator} until {holder.expires_at.isoformat()}",
                                 **state.view(upload_id, _now())}, status_code=409)
        return None

    routes = [
        Route("/", index), Route("/api/me", me), Route("/api/alerts", alerts), Route("/api/histogram", histogram),
        Route("/api/events", stream), Route("/api/claim", claim, methods=["POST"]),
        Route("/api/decision", decide, methods=["POST"]),
        Route("/evidence/{kind}/{name}", evidence),
        Route("/favicon.ico", lambda request: Response(status_code=204)),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=config.allowed_hosts),
                  Middleware(Guard, token=config.token)]
    return Starlette(routes=routes, middleware=middleware)


async def _upload_id(request: Request) -> tuple[str | None, dict[str, Any]]:
    try:
        body = await request.json()
    except ValueError:
        return None, {}
    if not isinstance(body, dict):
        return None, {}
    upload_id = body.get("upload_id")
    return (upload_id if isinstance(upload_id, str) and upload_id else None), body


def _filters(params: Any) -> Filters:
    state = params.get("state") or None
    if state not in (None, "open", *STATES):
        raise ValueError(f"state must be one of open, {', '.join(STATES)}")
    return Filters(since=_time(params.get("since")), until=_time(params.get("until")),
                   min_score=_number(params.get("min_score")), max_score=_number(params.get("max_score")), state=state)


def _time(text: str | None) -> datetime | None:
    return parse_time(text) if text else None


def _number(text: str | None) -> float | None:
    if not text:
        return None
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("score bounds must be finite numbers")
    return value


def _now() -> datetime:
    return datetime.now(timezone.utc)
