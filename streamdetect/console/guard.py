"""The console's gate, as ASGI middleware: a token for every request (when one is set; always
when bound off loopback), a same-origin rule for every change, and headers that keep the page
from running or loading anything but its own files.

The browser gets the token once, in the address it is given (``/?token=...``); the gate turns it
into an HttpOnly, SameSite=Strict cookie and redirects to the address without it, so the token
is not left in the history or sent to any other site. Scripts and API clients may send
``Authorization: Bearer <token>`` instead.
"""

from __future__ import annotations

import hmac
from http.cookies import SimpleCookie
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qs

COOKIE = "streamdetect_console"
CHANGE_HEADER = "x-streamdetect-console"  # a cross-site form cannot set it: every POST must carry it
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                                 b"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
]
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class Guard:
    def __init__(self, app: Any, token: str | None) -> None:
        self.app, self.token = app, token or None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if self.token is not None:
            given = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [None])[0]
            if given is not None and scope["method"] == "GET" and scope["path"] == "/":
                await self._login(given, send)
                return
            if not self._authorised(headers):
                await _plain(send, 401, "a console token is needed: open the address the console printed, "
                                        "or send Authorization: Bearer <token>")
                return
        if scope["method"] not in ("GET", "HEAD") and not _same_origin(headers):
            await _plain(send, 403, f"changes need the {CHANGE_HEADER} header and a same-origin request")
            return
        await self.app(scope, receive, _with_headers(send))

    def _authorised(self, headers: dict[str, str]) -> bool:
        bearer = headers.get("authorization", "")
        candidates = [bearer[7:]] if bearer.lower().startswith("bearer ") else []
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # noqa: BLE001 - a malformed cookie header is simply no token
            pass
        if COOKIE in cookie:
            candidates.append(cookie[COOKIE].value)
        return any(hmac.compare_digest(c.encode(), self.token.encode()) for c in candidates if self.token)

    async def _login(self, given: str, send: Send) -> None:
        assert self.token is not None
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            await _plain(send, 401, "wrong console token")
            return
        cookie = f"{COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/"
        await send({"type": "http.response.start", "status": 303,
                    "headers": [(b"location", b"/"), (b"set-cookie", cookie.encode()), *SECURITY_HEADERS]})
        await send({"type": "http.response.body", "body": b""})


def _same_origin(headers: dict[str, str]) -> bool:
    """A change must carry the console's own header, and an Origin (when sent) naming this host."""
    if headers.get(CHANGE_HEADER) != "1":
        return False
    origin = headers.get("origin")
    return origin is None or origin.split("://", 1)[-1] == headers.get("host")


def _with_headers(send: Send) -> Send:
    async def sending(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
        await send(message)
    return sending


async def _plain(send: Send, status: int, text: str) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"), *SECURITY_HEADERS]})
    await send({"type": "http.response.body", "body": text.encode()})
