"""Fetching the bytes an image reference names, within the policy's limits.

A reference is one of ``data:image/...;base64,...`` (or ``base64:...``), ``s3://bucket/key``,
``https://...`` (``http://`` and ``file://`` only when the policy allows them; ``file://`` only
for regular files inside ``file_root``). An http(s) fetch is within one deadline and, unless
``allow_private_hosts``, refused before connecting to a non-public address (http_guard.py).
Every failure is an :class:`ImageError` whose ``reason`` becomes the dead-letter reason and
whose ``detail`` names the reference. This module knows nothing about models or Kafka; its calls block, so run
them off the event loop.
"""

from __future__ import annotations

import base64
import binascii
import http.client
import os
import re
import stat
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Protocol
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, ParamValidationError

from streamdetect.images.policy import ImageError, ImagePolicy
from streamdetect.images.http_guard import Deadline, PrivateAddressError, guarded_handlers

_CHUNK = 64 * 1024

_DATA_URI = re.compile(r"data:(?P<type>[^;,]*)(?P<params>(;[^;,]*)*),(?P<payload>.*)", re.S | re.I)


def fetch_bytes(ref: str, policy: ImagePolicy) -> bytes:
    """Return at most ``policy.max_bytes`` bytes named by ``ref``; raises :class:`ImageError`."""
    if not isinstance(ref, str) or not ref.strip():
        raise ImageError(
            "bad_reference", f"image reference {shorten(ref)} is empty or not a string; send a data:, s3:// or https:// reference"
        )
    scheme = ref.split(":", 1)[0].lower() if ":" in ref else ""
    if scheme in ("data", "base64"):
        return _fetch_inline(ref, policy)
    if scheme == "s3":
        return _fetch_s3(ref, policy)
    if scheme in ("https", "http"):
        return _fetch_http(ref, scheme, policy)
    if scheme == "file":
        return _fetch_file(ref, policy)
    raise ImageError(
        "bad_reference",
        f"image reference {shorten(ref)} has no supported scheme; use data:image/...;base64, s3://bucket/key or https://",
    )


def shorten(ref: str) -> str:
    """The reference as it may appear in logs and dead letters: inline payloads and URL
    passwords are cut out, since a dead letter should name the input, not copy it."""
    if not isinstance(ref, str):
        return repr(ref)[:200]
    lowered = ref[:7].lower()
    if lowered.startswith(("data:", "base64:")):
        comma = ref.find(",", 0, 100)
        cut = comma + 1 if lowered.startswith("data:") and comma >= 0 else min(len(ref), 40)
        return repr(f"{ref[:cut]}{ref[cut:cut + 16]}... ({len(ref)} chars)")
    if "@" in ref and "://" in ref:
        parts = urlsplit(ref)
        if parts.password:
            ref = ref.replace(f":{parts.password}@", ":***@", 1)
    return repr(ref if len(ref) <= 300 else f"{ref[:300]}... ({len(ref)} chars)")


def _too_large(ref: str, size: int | str, policy: ImagePolicy) -> ImageError:
    return ImageError(
        "too_large",
        f"image {shorten(ref)} is {size} bytes, over the limit of {policy.max_bytes}; send a smaller or recompressed image",
    )


def _fetch_inline(ref: str, policy: ImagePolicy) -> bytes:
    if ref[:5].lower() == "data:":
        m = _DATA_URI.fullmatch(ref)
        if m is None or ";base64" not in m["params"].lower() or not (m["type"] == "" or m["type"].lower().startswith("image/")):
            raise ImageError(
                "bad_reference",
                f"inline reference {shorten(ref)} is not of the form data:image/<type>;base64,<data>",
            )
        payload = m["payload"]
    else:
        payload = ref[len("base64:"):]
    # Decoding costs memory; base64 is 4 chars per 3 bytes, plus slack for MIME line breaks.
    limit = 4 * -(-policy.max_bytes // 3)
    if len(payload) > limit + limit // 38 + 4:
        raise _too_large(ref, f"about {len(payload) * 3 // 4}", policy)
    try:
        data = base64.b64decode(re.sub(r"\s+", "", payload), validate=True)
    except (binascii.Error, ValueError) as e:
        raise ImageError("bad_reference", f"inline reference {shorten(ref)} is not valid base64 ({e})") from e
    if len(data) > policy.max_bytes:
        raise _too_large(ref, len(data), policy)
    return data


class _Readable(Protocol):
    def read(self, amt: int = ..., /) -> bytes: ...


def _timed_out(ref: str, policy: ImagePolicy) -> ImageError:
    return ImageError(
        "unreachable",
        f"fetching {shorten(ref)} timed out after {policy.timeout_s:g}s (the limit covers the whole request); "
        "the source is too slow, retry later",
    )


def _read_capped(stream: _Readable, ref: str, policy: ImagePolicy, deadline: float) -> bytes:
    """Read until EOF, but never more than ``max_bytes + 1`` bytes or past ``deadline``
    (a time.monotonic() value)."""
    # read1 returns what has arrived instead of waiting for a full chunk, so a server that
    # trickles bytes meets the deadline check rather than holding the thread.
    read = getattr(stream, "read1", stream.read)
    buf = bytearray()
    while len(buf) <= policy.max_bytes:
        chunk = read(min(_CHUNK, policy.max_bytes + 1 - len(buf)))
        # Checked at EOF too: the http watchdog ends a late body with an EOF, not an error.
        if time.monotonic() >= deadline:
            raise _timed_out(ref, policy)
        if not chunk:
            return bytes(buf)
        buf += chunk
    raise _too_large(ref, f"more than {policy.max_bytes}", policy)


# -- http(s)


class _PolicyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects only to schemes the policy allows (no https -> http downgrade)."""

    def __init__(self, policy: ImagePolicy) -> None:
        super().__init__()
        self._policy = policy

    def _follow(self, req: Any, fp: Any, code: int, msg: str, headers: Any) -> Any:
        # urllib reads a redirect's whole body before following it, with no size limit: a server
        # could stream gigabytes into memory. Close it unread (a closed response reads as b"").
        fp.close()
        return urllib.request.HTTPRedirectHandler.http_error_302(self, req, fp, code, msg, headers)

    http_error_301 = http_error_302 = http_error_303 = http_error_307 = http_error_308 = _follow

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
        scheme = urlsplit(newurl).scheme.lower()
        if scheme != "https" and not (scheme == "http" and self._policy.allow_http):
            raise ImageError(
                "not_allowed",
                f"{shorten(req.full_url)} redirects to {shorten(newurl)}, whose scheme the image policy does not allow",
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _http_error(ref: str, e: urllib.error.HTTPError) -> ImageError:
    if e.code in (404, 410):
        return ImageError("not_found", f"{shorten(ref)} answered HTTP {e.code}: no image there; check the URL")
    if 300 <= e.code < 400:
        location = e.headers.get("Location", "?")
        if urlsplit(location).scheme.lower() in ("", "http", "https"):  # urllib gave up: a loop, or too many hops
            return ImageError("bad_reference", f"{shorten(ref)} redirects in a loop or more than "
                                               f"{_PolicyRedirects.max_redirections} times; send the final URL")
        # urllib refuses redirects to schemes other than http(s)/ftp itself
        return ImageError("not_allowed", f"{shorten(ref)} redirects to {shorten(location)}, which the image policy "
                                         "does not allow")
    if e.code in (401, 403, 407):
        return ImageError("forbidden", f"{shorten(ref)} answered HTTP {e.code}: access denied; make it readable or send a signed URL")
    return ImageError("unreachable", f"{shorten(ref)} answered HTTP {e.code} {e.reason}; retry later")


def _check_url(ref: str) -> None:
    try:
        parts = urlsplit(ref)
        if not parts.hostname or parts.port == 0:
            raise ValueError("no host or port")
        if parts.username is not None:
            raise ValueError("credentials in the URL are not supported; send a signed URL instead")
        if any(ord(c) < 0x21 or ord(c) == 0x7F for c in ref):
            raise ValueError("control characters or spaces; percent-encode them")
        parts.hostname.encode("idna")  # a host no resolver can be asked about (e.g. a lone surrogate)
    except (ValueError, UnicodeError) as e:
        raise ImageError("bad_reference", f"URL {shorten(ref)} is malformed: {e}") from e


def _fetch_http(ref: str, scheme: str, policy: ImagePolicy) -> bytes:
    if scheme == "http" and not policy.allow_http:
        raise ImageError("not_allowed", f"plain http reference {shorten(ref)} is not allowed by the image policy; use https://")
    _check_url(ref)
    request = urllib.request.Request(ref, headers={"User-Agent": "streamdetect-images/1"})
    with Deadline(policy.timeout_s) as deadline:
        opener = urllib.request.build_opener(
            _PolicyRedirects(policy), *guarded_handlers(deadline, public_only=not policy.allow_private_hosts)
        )
        try:
            with opener.open(request, timeout=policy.timeout_s) as resp:
                length = resp.headers.get("Content-Length")
                if length is not None and length.isdigit() and int(length) > policy.max_bytes:
                    raise _too_large(ref, int(length), policy)
                return _read_capped(resp, ref, policy, deadline.end)
        except urllib.error.HTTPError as e:
            e.close()
            raise _http_error(ref, e) from e
        except ImageError:
            raise
        except (OSError, ValueError, http.client.HTTPException) as e:  # URLError, timeouts, resets, bad responses
            raise _http_failure(ref, e, deadline.passed, policy) from e


def _http_failure(ref: str, e: Exception, late: bool, policy: ImagePolicy) -> ImageError:
    """The error for a fetch that got no HTTP status. A refused private target says the same
    whatever its port would have answered: the guard refused it before connecting."""
    reason = e.reason if isinstance(e, urllib.error.URLError) else e
    if isinstance(reason, PrivateAddressError):
        return ImageError("not_allowed", f"{shorten(ref)}: {reason}; the image policy fetches from public "
                                         "addresses only (allow_private_hosts)")
    if late or isinstance(reason, TimeoutError):  # the watchdog's shutdown reads as a reset or EOF
        return _timed_out(ref, policy)
    return ImageError("unreachable", f"could not fetch {shorten(ref)}: {reason}; retry later")


# -- file


def _fetch_file(ref: str, policy: ImagePolicy) -> bytes:
    path = _file_path(ref, policy)
    fd = _open_regular(ref, path)
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > policy.max_bytes:
            raise _too_large(ref, size, policy)
        try:
            return _read_capped(f, ref, policy, time.monotonic() + policy.timeout_s)
        except OSError as e:
            raise ImageError("unreachable", f"could not read file {shorten(ref)}: {e}; retry later") from e


def _file_path(ref: str, policy: ImagePolicy) -> str:
    """The real path (symlinks followed) ``ref`` names, refused unless inside ``file_root``."""
    if not policy.allow_file:
        raise ImageError("not_allowed", f"file reference {shorten(ref)} is not allowed by the image policy; upload the image instead")
    if policy.file_root is None:
        raise ImageError("not_allowed", f"file reference {shorten(ref)} is refused: allow_file is on but file_root is "
                                        "unset; set file_root to the folder file:// references may read")
    parts = urlsplit(ref)
    if parts.netloc not in ("", "localhost") or not parts.path:
        raise ImageError("bad_reference", f"file reference {shorten(ref)} must be file:///absolute/path")
    try:
        # url2pathname decodes %-escapes itself; decoding twice would turn %252e into '.'.
        path = os.path.realpath(urllib.request.url2pathname(parts.path))
        root = os.path.realpath(policy.file_root)
        inside = os.path.commonpath([path, root]) == root
    except ValueError as e:  # a NUL byte in the path
        raise ImageError("bad_reference", f"file reference {shorten(ref)} is not a usable path ({e})") from e
    if not inside:
        raise ImageError("not_allowed", f"file {shorten(ref)} resolves outside file_root {str(root)!r}; "
                                        "only files inside it may be referenced")
    return path


def _open_regular(ref: str, path: str) -> int:
    """Open ``path`` for reading only if it is a regular file. FIFOs, devices and sockets are
    refused without blocking: stat before opening (opening some devices has side effects),
    O_NONBLOCK so a FIFO swapped in meanwhile opens at once, fstat on what was opened."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise _not_regular(ref)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError) as e:
        raise ImageError("not_found", f"file {shorten(ref)} does not exist; check the path") from e
    except PermissionError as e:
        raise ImageError("forbidden", f"file {shorten(ref)} is not readable by this service; fix its permissions") from e
    except OSError as e:  # ELOOP: the last component became a symlink after realpath
        raise ImageError("unreachable", f"could not open file {shorten(ref)}: {e}; retry later") from e
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _not_regular(ref)
    return fd


def _not_regular(ref: str) -> ImageError:
    return ImageError("not_allowed", f"file {shorten(ref)} is not a regular file (a folder, FIFO, device or socket); "
                                     "only regular files are read")


# -- s3

_s3_clients: dict[tuple[str | None, str | None, float], Any] = {}
_s3_lock = threading.Lock()


def _s3_client(policy: ImagePolicy) -> Any:
    """One client per endpoint/region/timeout: clients are thread-safe and costly to build;
    sessions are not thread-safe, so each client gets its own, built under the lock."""
    key = (policy.s3_endpoint, policy.s3_region, policy.timeout_s)
    with _s3_lock:
        client = _s3_clients.get(key)
        if client is None:
            config = Config(
                connect_timeout=policy.timeout_s,
                read_timeout=policy.timeout_s,
                retries={"mode": "standard", "max_attempts": 3},
            )
            client = boto3.session.Session().client(
                "s3", endpoint_url=policy.s3_endpoint, region_name=policy.s3_region, config=config
            )
            _s3_clients[key] = client
        return client


def _parse_s3(ref: str) -> tuple[str, str]:
    # Keys may contain '?', '#' and '%' literally, so this is not parsed as a URL.
    bucket, _, key = ref[len("s3://"):].partition("/") if ref[:5].lower() == "s3://" else ("", "", "")
    if not bucket or not key:
        raise ImageError("bad_reference", f"S3 reference {shorten(ref)} must be s3://bucket/key")
    return bucket, key


# Credential problems (some arrive as HTTP 400) are not the upload's fault, so not bad_reference.
_S3_FORBIDDEN = {"AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                 "ExpiredToken", "InvalidToken", "TokenRefreshRequired", "403"}
_S3_BAD_REFERENCE = {"InvalidBucketName", "KeyTooLongError", "InvalidURI", "InvalidArgument"}


def _s3_error(ref: str, e: Exception) -> ImageError:
    if isinstance(e, ClientError):
        code = str(e.response.get("Error", {}).get("Code", ""))
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        # Some servers (moto for bucket-policy denials, any HEAD) send no error body: go by status too.
        if code in ("NoSuchKey", "NoSuchBucket", "404") or status == 404:
            return ImageError("not_found", f"S3 object {shorten(ref)} does not exist ({code}); check bucket and key")
        if code in _S3_FORBIDDEN or status in (401, 403):
            return ImageError("forbidden", f"S3 object {shorten(ref)} is not readable with this service's credentials ({code})")
        if code in _S3_BAD_REFERENCE:
            return ImageError("bad_reference", f"S3 rejected {shorten(ref)} as invalid ({code})")
        return ImageError("unreachable", f"S3 failed to serve {shorten(ref)} ({code}, HTTP {status}); retry later")
    if isinstance(e, NoCredentialsError):
        return ImageError("forbidden", f"no AWS credentials are configured to read {shorten(ref)}")
    if isinstance(e, ParamValidationError):
        return ImageError("bad_reference", f"S3 reference {shorten(ref)} is invalid: {e}")
    return ImageError("unreachable", f"could not reach S3 for {shorten(ref)}: {e}; retry later")


def _fetch_s3(ref: str, policy: ImagePolicy) -> bytes:
    bucket, key = _parse_s3(ref)
    started = time.monotonic()
    try:
        response = _s3_client(policy).get_object(Bucket=bucket, Key=key)
        body = response["Body"]
        try:
            if response.get("ContentLength", 0) > policy.max_bytes:
                raise _too_large(ref, response["ContentLength"], policy)
            return _read_capped(body, ref, policy, started + policy.timeout_s)
        finally:
            body.close()  # drops the connection rather than draining an oversize body
    except ImageError:
        raise
    except (ClientError, BotoCoreError, OSError) as e:
        raise _s3_error(ref, e) from e
