"""The connections an http(s) image fetch opens: an SSRF guard and one whole-request deadline.

SSRF guard. An upload's ``https://`` reference is chosen by whoever uploads. Without a guard, a
worker would fetch ``https://169.254.169.254/...`` (cloud metadata), ``https://10.0.0.5/admin``
or ``https://localhost:...`` for them. The host is resolved first and refused before any
connection when any of its addresses is not public: a refusal made after connecting would tell an
open port from a closed one, and dead letters would then scan internal hosts for whoever reads
them. The connection goes to the address that was checked, and the socket's actual peer is
checked again before a byte is sent (defence in depth against DNS rebinding). Every redirect hop
opens a new connection through the same handlers, so it is checked the same way.

Through an HTTPS proxy (``https_proxy``) the proxy resolves the target; the connection to the
proxy itself is not checked, and guarding the target is then the proxy's job.

Deadline. Socket timeouts bound each read, not the request: a server trickling one header byte
at a time held a fetch for a minute. :class:`Deadline` bounds the whole request, connect,
status line, headers, redirects and body; at the deadline a watchdog thread shuts the fetch's
sockets down, which wakes a thread blocked reading them. Name resolution (``getaddrinfo``) cannot
be interrupted; it is bounded by the system resolver's own timeouts and checked against the
deadline when it returns.
"""

from __future__ import annotations

import functools
import http.client
import ipaddress
import socket
import threading
import time
import urllib.request
from typing import Any


class PrivateAddressError(OSError):
    """The URL's host is, or resolved to, an address that is not publicly routable."""

    def __init__(self, host: str, address: str) -> None:
        super().__init__(f"{host} resolves to {address}, which is not a public address")
        self.host, self.address = host, address


class DeadlineExceeded(TimeoutError):
    """The fetch's whole-request deadline passed."""


def is_public_address(address: str) -> bool:
    """Globally routable unicast only: loopback, RFC 1918, link-local (cloud metadata),
    CGNAT, unique-local, multicast and reserved ranges are not public."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:  # ::ffff:127.0.0.1, NAT64 64:ff9b::a00:5, 6to4 2002:7f00:1::: IPv4 inside
            return is_public_address(str(embedded))
    return ip.is_global and not ip.is_multicast


_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # well-known prefix: the IPv4 address is the last 32 bits
_LOCAL_NAT64 = ipaddress.ip_network("64:ff9b:1::/48")  # local-use (RFC 8215): a site's own translator


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries and routes to (mapped, NAT64, 6to4, Teredo)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _LOCAL_NAT64:
        return ipaddress.IPv4Address("10.0.0.0")  # where it leads is the site's choice: never public
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return ip.sixtofour
    return ip.teredo[1] if ip.teredo is not None else None


class Deadline:
    """One fetch's time limit, used as a context manager around the whole fetch.

    Sockets are registered with :meth:`watch`; when the time is up a watchdog shuts them down.
    It shuts down a duplicate of each socket's descriptor: ``ssl`` detaches the socket object it
    wraps, and shutdown (unlike close) wakes a reader blocked in another thread on Linux.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self.end = time.monotonic() + seconds  # (monotonic) set first, so the timer fires at or after it
        self._lock = threading.Lock()
        self._watched: list[socket.socket] = []
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.name, self._timer.daemon = "streamdetect-fetch-deadline", True

    def __enter__(self) -> Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        self._timer.join()  # a cancelled timer ends at once; no watchdog outlives its fetch
        with self._lock:
            for dup in self._watched:
                dup.close()
            self._watched.clear()

    @property
    def passed(self) -> bool:
        return self.expired or time.monotonic() >= self.end

    def remaining(self) -> float:
        """Seconds left; raises :class:`DeadlineExceeded` when none are."""
        left = self.end - time.monotonic()
        if self.expired or left <= 0:
            raise DeadlineExceeded(f"timed out after {self.seconds:g}s")
        return left

    def watch(self, sock: socket.socket) -> None:
        """Shut ``sock`` down at the deadline; raises :class:`DeadlineExceeded` if it has passed."""
        with self._lock:
            if self.expired:
                raise DeadlineExceeded(f"timed out after {self.seconds:g}s")
            self._watched.append(sock.dup())

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for dup in self._watched:
                try:
                    dup.shutdown(socket.SHUT_RDWR)
                except OSError:  # already closed by its peer: nothing is blocked on it
                    pass


def _refuse_private(host: str, address: str) -> None:
    if not is_public_address(address):
        raise PrivateAddressError(host, address)


def _connect_first(addresses: list[tuple[Any, ...]], deadline: Deadline,
                   source_address: tuple[str, int] | None) -> socket.socket:
    """Connect to the first of the resolved addresses that answers, within the deadline."""
    error: OSError = OSError("the host name resolved to no address")
    for sockaddr in addresses:
        try:
            return socket.create_connection(sockaddr[:2], deadline.remaining(), source_address)
        except DeadlineExceeded:
            raise
        except OSError as e:
            error = e
    raise error


class _Connector:
    """What a fetch's connections share: its deadline and whether only public peers are allowed."""

    def __init__(self, deadline: Deadline, public_only: bool) -> None:
        self.deadline, self.public_only = deadline, public_only

    def connect(self, address: tuple[str, int], timeout: object = None,
                source_address: tuple[str, int] | None = None, *, check: bool = True) -> socket.socket:
        """Stands in for socket.create_connection; ``timeout`` is ignored for the deadline's."""
        host, port = address
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        self.deadline.remaining()  # resolution cannot be interrupted: at least notice it ran late
        check = check and self.public_only
        for info in infos if check else ():
            _refuse_private(host, info[4][0])  # before connecting: open and closed ports look alike
        sock = _connect_first([info[4] for info in infos], self.deadline, source_address)
        try:
            if check:
                _refuse_private(host, sock.getpeername()[0])  # what was actually reached
            self.deadline.watch(sock)
        except OSError:
            sock.close()
            raise
        return sock


class _Guarded:
    """Mixed into http.client connections: connect through the fetch's connector."""

    _tunnel_host: str | None

    def __init__(self, *args: Any, connector: _Connector, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]
        self._connector = connector

    def connect(self) -> None:
        def create(address: tuple[str, int], timeout: object = None, source: Any = None) -> socket.socket:
            # Through a CONNECT proxy the peer is the proxy; the target is the proxy's to guard.
            return self._connector.connect(address, timeout, source, check=self._tunnel_host is None)

        self._create_connection = create
        super().connect()  # type: ignore[misc]


class _GuardedHTTPConnection(_Guarded, http.client.HTTPConnection):
    pass


class _GuardedHTTPSConnection(_Guarded, http.client.HTTPSConnection):
    pass


class _GuardedOpen:
    """Opens every connection through the connector: the deadline, and the guard when it is on."""

    connection: Any

    def __init__(self, connector: _Connector) -> None:
        super().__init__()
        self._connector = connector

    def do_open(self, http_class: Any, req: Any, **kwargs: Any) -> Any:
        return super().do_open(functools.partial(self.connection, connector=self._connector), req, **kwargs)  # type: ignore[misc]


class GuardedHTTPHandler(_GuardedOpen, urllib.request.HTTPHandler):
    connection = _GuardedHTTPConnection


class GuardedHTTPSHandler(_GuardedOpen, urllib.request.HTTPSHandler):
    connection = _GuardedHTTPSConnection


def guarded_handlers(deadline: Deadline, public_only: bool) -> list[urllib.request.BaseHandler]:
    """Handlers for urllib.request.build_opener that replace the default http and https ones:
    every connection is within ``deadline`` and, when ``public_only``, to public addresses."""
    connector = _Connector(deadline, public_only)
    return [GuardedHTTPHandler(connector), GuardedHTTPSHandler(connector)]
