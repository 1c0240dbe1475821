"""Evidence stores: content-addressed PNGs under ``<kind>/<sha256>.png``.

Keys are made here from the image's own hash, never from the upload id or anything else a
producer chose, so a key is always safe as an S3 key and as a path below the store's folder, and
the same picture is stored once however often it is judged. ``get`` accepts only keys of that
form (``KEY_PATTERN``): the console passes on what a browser asked for, and a key like
``../../etc/passwd`` or ``input/x.png`` is refused before the store is touched.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

KINDS = ("input", "regenerated")
KEY_PATTERN = re.compile(r"^(input|regenerated)/[0-9a-f]{64}\.png$")


class EvidenceError(RuntimeError):
    """The store could not write or read an object (or the key is not one this part makes)."""


@dataclass(frozen=True)
class StoredImage:
    """One image of a verdict's evidence: its key in the store (None when not stored), hash and size."""

    key: str | None
    sha256: str
    size: int

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "sha256": self.sha256, "size": self.size, "media_type": "image/png"}


class EvidenceStore(Protocol):
    location: str  # s3://bucket/prefix or the folder's absolute path, recorded in every verdict

    def put(self, kind: str, data: bytes) -> StoredImage: ...

    def get(self, key: str) -> bytes: ...


def png_bytes(image: Image.Image) -> bytes:
    """The image as PNG: lossless, so the evidence is the very pixels the detector saw."""
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def describe(kind: str, data: bytes) -> tuple[str, StoredImage]:
    """The key the bytes would be stored under, and their description without a key."""
    if kind not in KINDS:
        raise ValueError(f"evidence kind must be one of {KINDS}, not {kind!r}")
    digest = hashlib.sha256(data).hexdigest()
    return f"{kind}/{digest}.png", StoredImage(None, digest, len(data))


def check_key(key: str) -> str:
    if not isinstance(key, str) or not KEY_PATTERN.match(key):
        raise EvidenceError(f"not an evidence key: {key[:80]!r}" if isinstance(key, str) else "not an evidence key")
    return key


class LocalStore:
    """A folder; files are written to a temporary name and renamed, so a reader never sees half of one."""

    def __init__(self, root: Path) -> None:
        self.root = root.expanduser().resolve()
        self.location = str(self.root)

    def put(self, kind: str, data: bytes) -> StoredImage:
        key, image = describe(kind, data)
        path = self.root / key
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        return StoredImage(key, image.sha256, image.size)

    def get(self, key: str) -> bytes:
        path = self.root / check_key(key)
        try:
            return path.read_bytes()
        except OSError as exc:
            raise EvidenceError(f"evidence {key} is not in {self.location}: {exc.strerror}") from exc


class S3Store:
    """A bucket and a key prefix, through boto3 (any S3-compatible server with ``endpoint``)."""

    def __init__(self, bucket: str, prefix: str = "", endpoint: str | None = None, region: str | None = None,
                 timeout_s: float = 10.0) -> None:
        self.bucket, self.prefix = bucket, prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.location = f"s3://{bucket}/{self.prefix}"
        self._endpoint, self._region, self._timeout_s = endpoint, region, timeout_s
        self._client: Any = None
        self._lock = threading.Lock()

    def put(self, kind: str, data: bytes) -> StoredImage:
        key, image = describe(kind, data)
        try:
            self.client().put_object(Bucket=self.bucket, Key=self.prefix + key, Body=data, ContentType="image/png")
        except Exception as exc:  # noqa: BLE001 - boto3 raises many types; all mean "not stored"
            raise EvidenceError(f"could not store {key} in {self.location}: {type(exc).__name__}: {exc}") from exc
        return StoredImage(key, image.sha256, image.size)

    def get(self, key: str) -> bytes:
        full = self.prefix + check_key(key)
        try:
            response = self.client().get_object(Bucket=self.bucket, Key=full)
            return response["Body"].read()
        except Exception as exc:  # noqa: BLE001 - not found, forbidden, unreachable: all "cannot show it"
            raise EvidenceError(f"could not read {key} from {self.location}: {type(exc).__name__}: {exc}") from exc

    def client(self) -> Any:
        """One client, built on first use under a lock (boto3 sessions are not thread-safe)."""
        with self._lock:
            if self._client is None:
                import boto3
                from botocore.config import Config

                config = Config(connect_timeout=self._timeout_s, read_timeout=self._timeout_s,
                                retries={"mode": "standard", "max_attempts": 3})
                self._client = boto3.session.Session().client("s3", endpoint_url=self._endpoint,
                                                              region_name=self._region, config=config)
            return self._client


def open_store(location: str, s3_endpoint: str | None = None, s3_region: str | None = None) -> EvidenceStore:
    """``s3://bucket/prefix`` or a local folder (created when first written)."""
    if location.lower().startswith("s3://"):
        bucket, _, prefix = location[5:].partition("/")
        if not bucket:
            raise ValueError(f"evidence store {location!r} must be s3://bucket[/prefix]")
        return S3Store(bucket, prefix, s3_endpoint, s3_region)
    if "://" in location:
        raise ValueError(f"evidence store {location!r} must be s3://bucket[/prefix] or a local folder")
    return LocalStore(Path(location))
