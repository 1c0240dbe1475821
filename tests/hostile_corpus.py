"""Builds the messages of the hostile-upload corpus (tests/corpus/*.jsonl) from their one-line
descriptions. A case is one JSON line: ``id``, ``expect`` ("verdict" or "dlq:<reason>") and
either ``raw`` (a named message built below, for bytes that are not an upload at all) or
``upload`` (fields merged into a good upload; null removes a field). String values that start
with ``@`` are expanded: ``@str:C:N`` (C repeated N times), ``@img:FMT:MODE:W:H`` (an inline
image), ``@blob:NAME`` (inline bytes named below), ``@inline_bytes:N`` (an inline payload of N
bytes), ``@file:NAME`` (a file:// reference below the corpus root), ``@http:PATH`` (the test's
loopback HTTP server), and ``@port`` / ``@closed`` inside a string (an open and a closed
loopback port)."""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

CORPUS = Path(__file__).parent / "corpus"
MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "TIFF": "image/tiff", "BMP": "image/bmp",
        "GIF": "image/gif"}


@dataclass(frozen=True)
class Case:
    id: str
    expect: str
    key: bytes
    value: bytes | None


@dataclass(frozen=True)
class Places:
    """Where references of the corpus point: a file root, loopback ports, the HTTP server."""

    root: Path
    open_port: int
    closed_port: int
    http: str = ""


def load(name: str, places: Places) -> list[Case]:
    cases = []
    for line in (CORPUS / name).read_text().splitlines():
        if line.strip():
            spec = json.loads(line)
            value = RAW[spec["raw"]](spec["id"]) if "raw" in spec else _upload(spec["id"], spec["upload"], places)
            cases.append(Case(spec["id"], spec["expect"], spec["id"].encode(), value))
    return cases


def good(upload_id: str) -> Case:
    return Case(upload_id, "verdict", upload_id.encode(), json.dumps(_base(upload_id)).encode())


def _base(upload_id: str) -> dict[str, Any]:
    return {"schema_version": 1, "upload_id": upload_id, "image": image_uri("PNG", "RGB", 8, 8)}


def _upload(case_id: str, fields: dict[str, Any], places: Places) -> bytes:
    event = _base(case_id)
    for name, value in fields.items():
        if value is None:
            event.pop(name, None)
        else:
            event[name] = _expand(value, places)
    return json.dumps(event).encode()


def _expand(value: Any, places: Places) -> Any:
    if not isinstance(value, str) or not value.startswith("@"):
        return value.replace("@port", str(places.open_port)).replace("@closed", str(places.closed_port)) \
            if isinstance(value, str) else value
    kind, _, rest = value[1:].partition(":")
    if kind == "str":
        char, count = rest.rsplit(":", 1)
        return char * int(count)
    if kind == "img":
        fmt, mode, width, height = rest.split(":")
        return image_uri(fmt, mode, int(width), int(height))
    if kind == "blob":
        return "data:image/png;base64," + base64.b64encode(BLOBS[rest]()).decode()
    if kind == "inline_bytes":
        return "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n".ljust(int(rest), b"\0")).decode()
    if kind == "file":
        return f"file://{places.root}/{rest}"
    if kind == "http":
        return places.http + rest
    raise ValueError(f"unknown corpus placeholder {value[:40]!r}")


def image_uri(fmt: str, mode: str, width: int, height: int) -> str:
    buffer = io.BytesIO()
    image = Image.new(mode, (width, height), _colour(mode))
    options = {"transparency": 0} if mode == "P" else {}
    image.save(buffer, format=fmt, **options)
    return f"data:{MIME[fmt]};base64,{base64.b64encode(buffer.getvalue()).decode()}"


def _colour(mode: str) -> Any:
    return {"RGB": (200, 40, 40), "CMYK": (0, 200, 200, 0), "LA": (120, 128), "P": 3, "I;16": 40000}.get(mode, 128)


def _png(width: int, height: int, mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


def _bomb_png() -> bytes:
    """A 1x1 PNG whose header says 100000 x 100000: nothing may be decompressed for it."""
    data = bytearray(_png(1, 1))
    ihdr = struct.pack(">II", 100_000, 100_000) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    return bytes(data)


def _animated_gif() -> bytes:
    buffer = io.BytesIO()
    frames = [Image.new("P", (8, 8), i) for i in (1, 2, 3)]
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    return buffer.getvalue()


BLOBS = {
    "truncated_png": lambda: _png(8, 8, "RGB")[:40],
    "svg": lambda: b'<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"><rect width="8" height="8"/></svg>',
    "pdf": lambda: b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n",
    "eps": lambda: b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n",
    "bomb_png": _bomb_png,
    "over_pixels_png": lambda: _png(4097, 4096),
    "animated_gif": _animated_gif,
}


def _good_json(case_id: str, tail: str) -> bytes:
    image = image_uri("PNG", "RGB", 8, 8)
    return f'{{"schema_version": 1, "upload_id": "{case_id}", "image": "{image}"{tail}}}'.encode()


RAW = {
    "not_json": lambda cid: b"{not json",
    "empty": lambda cid: b"",
    "null_value": lambda cid: None,
    "deep_array": lambda cid: b"[" * 100_000 + b"]" * 100_000,
    "deep_metadata": lambda cid: _good_json(cid, ', "metadata": ' + '{"a": ' * 100_000 + "1" + "}" * 100_000),
    "huge_int": lambda cid: _good_json(cid, ', "metadata": {"n": ' + "9" * 5000 + "}"),
    "nan_literal": lambda cid: _good_json(cid, ', "metadata": {"v": NaN}'),
    "infinity_literal": lambda cid: _good_json(cid, ', "metadata": {"v": -Infinity}'),
    "duplicate_keys": lambda cid: _good_json(cid, f', "upload_id": "{cid}-again"'),
    "invalid_utf8": lambda cid: b'{"schema_version": 1, "upload_id": "\xff\xfe", "image": "x"}',
    "bom": lambda cid: b"\xef\xbb\xbf" + _good_json(cid, ""),
    "top_array": lambda cid: b"[1, 2, 3]",
    "top_string": lambda cid: b'"an upload"',
    "lone_surrogate_id": lambda cid: _good_json(cid + "\\ud800", ""),
}
