"""What image references may be resolved and how big they may be, and the error every failure
becomes (its ``reason`` is the dead-letter reason)."""

from __future__ import annotations

from dataclasses import dataclass

REASONS = ("bad_reference", "not_allowed", "not_found", "forbidden", "unreachable", "too_large", "undecodable")


class ImageError(Exception):
    """An image could not be resolved; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown image error reason {reason!r}; expected one of {REASONS}")
        super().__init__(reason, detail)  # both in args so the error pickles across processes
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


@dataclass(frozen=True)
class ImagePolicy:
    """What references may be resolved, and how big they may be.

    ``timeout_s`` bounds connecting, each read, and (checked between chunks) the whole download,
    so a server that trickles bytes cannot hold a worker thread indefinitely.
    """

    max_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 4096 * 4096
    allow_file: bool = False
    allow_http: bool = False
    # Fetch http(s) references from loopback, private and link-local addresses (http_guard.py).
    allow_private_hosts: bool = False
    timeout_s: float = 10.0
    s3_endpoint: str | None = None
    s3_region: str | None = None
