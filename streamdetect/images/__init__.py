"""Resolving an image reference to decoded RGB pixels, safely: ``fetch`` (data:, s3://, https://,
file:// with limits; file:// only for regular files inside ``file_root``), ``http_guard`` (the SSRF
guard, which refuses non-public addresses before connecting, and the whole-request deadline),
``decode`` (Pillow with a pixel limit), ``policy`` (what is allowed). Knows nothing about models or
Kafka; its calls block, so run them off the event loop.
"""

from __future__ import annotations

from PIL import Image

from streamdetect.images.decode import decode_image
from streamdetect.images.fetch import fetch_bytes, shorten
from streamdetect.images.policy import REASONS, ImageError, ImagePolicy

__all__ = ["REASONS", "ImageError", "ImagePolicy", "decode_image", "fetch_bytes", "fetch_image", "load_image"]


def load_image(ref: str, policy: ImagePolicy) -> Image.Image:
    """Fetch and decode ``ref``; raises :class:`ImageError`."""
    return fetch_image(ref, policy)[0]


def fetch_image(ref: str, policy: ImagePolicy) -> tuple[Image.Image, bytes]:
    """Fetch and decode ``ref``: the pixels, and the bytes they were decoded from."""
    data = fetch_bytes(ref, policy)
    try:
        return decode_image(data, policy), data
    except ImageError as e:
        raise ImageError(e.reason, f"{shorten(ref)}: {e.detail}") from e
