"""What image references may be resolved and how big they may be, and the error every failure
becomes (its ``reason`` is the dead-letter reason)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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

    ``timeout_s`` bounds a whole http(s) request (connect, status line, headers, redirects and
    body: http_guard.Deadline), so a server that trickles bytes cannot hold a worker thread; for
    file:// and s3:// it bounds each read and, checked between chunks, the download.
    ``file_root`` is the folder file:// references must resolve inside; without it, none is read.
    """

    max_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 4096 * 4096
    allow_file: bool = False
    allow_http: bool = False
    # Fetch http(s) references from loopback, private and link-local addresses (http_guard.py).
    allow_private_hosts: bool = False
    file_root: Path | None = None
    timeout_s: float = 10.0
    s3_endpoint: str | None = None
    s3_region: str | None = None
