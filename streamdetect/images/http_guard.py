"""Refuse to fetch user-supplied URLs from addresses that are not public (SSRF guard).

An upload's ``https://`` reference is chosen by whoever uploads. Without a guard, a worker
would fetch ``https://169.254.169.254/...`` (cloud metadata), ``https://10.0.0.5/admin`` or
``https://localhost:...`` for them. The check runs on the socket's actual peer address, after
connecting and before a byte is sent, so a hostname that resolves to a public address when
checked and a private one when used (DNS rebinding) is still caught, and every redirect hop
is checked the same way because it opens a new connection through the same handlers.

Through an HTTPS proxy (``https_proxy``) the proxy resolves the target; the connection to the
proxy itself is not checked, and guarding the target is then the proxy's job.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import urllib.request
from typing import Any


class PrivateAddressError(OSError):
    """The URL's host is, or resolved to, an address that is not publicly routable."""

    def __init__(self, host: str, address: str) -> None:
        super().__init__(f"{host} is at {address}, which is not a public address")
        self.host, self.address = host, address


def is_public_address(address: str) -> bool:
    """Globally routable unicast only: loopback, RFC 1918, link-local (cloud metadata),
    CGNAT, unique-local, multicast and reserved ranges are not public."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is loopback
    return ip.is_global and not ip.is_multicast


def _connect_public(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
    sock = socket.create_connection(address, *args, **kwargs)
    peer = sock.getpeername()[0]
    if not is_public_address(peer):
        sock.close()
        raise PrivateAddressError(address[0], peer)
    return sock


class _PublicOnly:
    """Mixed into http.client connections: connect through the checking function."""

    _tunnel_host: str | None

    def connect(self) -> None:
        if self._tunnel_host is None:  # direct, not through a CONNECT proxy
            self._create_connection = _connect_public  # type: ignore[attr-defined]
        super().connect()  # type: ignore[misc]


class _PublicHTTPConnection(_PublicOnly, http.client.HTTPConnection):
    pass


class _PublicHTTPSConnection(_PublicOnly, http.client.HTTPSConnection):
    pass


class PublicHTTPHandler(urllib.request.HTTPHandler):
    def do_open(self, http_class: Any, req: Any, **kwargs: Any) -> Any:
        return super().do_open(_PublicHTTPConnection, req, **kwargs)


class PublicHTTPSHandler(urllib.request.HTTPSHandler):
    def do_open(self, http_class: Any, req: Any, **kwargs: Any) -> Any:
        return super().do_open(_PublicHTTPSConnection, req, **kwargs)


def public_only_handlers() -> list[urllib.request.BaseHandler]:
    """Handlers for urllib.request.build_opener that replace the default http and https ones."""
    return [PublicHTTPHandler(), PublicHTTPSHandler()]
