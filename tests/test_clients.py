"""The user's commands: uploads are typed by their content, and a command whose topic is missing
says so at once, in one line, with the command that creates it."""

from __future__ import annotations

import io
import time
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from streamdetect.cli.main import main
from streamdetect.stream.clients import reference_for, sniff_image_type


@pytest.mark.parametrize("fmt, mime", [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("GIF", "image/gif"),
                                       ("BMP", "image/bmp"), ("TIFF", "image/tiff"), ("WEBP", "image/webp")])
def test_images_are_typed_by_their_bytes(fmt: str, mime: str) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), "red").save(buffer, format=fmt)
    assert sniff_image_type(buffer.getvalue()) == mime
    assert sniff_image_type(b"not an image") is None


def test_a_png_without_an_extension_is_sent_as_a_png(tmp_path: Path) -> None:
    path = tmp_path / "photo"
    Image.new("RGB", (4, 4), "red").save(path, format="PNG")
    assert reference_for(str(path)).startswith("data:image/png;base64,")


@pytest.mark.kafka
@pytest.mark.parametrize("command", [["submit", "s3://b/k"], ["alerts", "--idle-timeout", "1"], ["replay"]])
def test_a_missing_topic_is_one_line_at_once(kafka_bootstrap: str, command: list[str]) -> None:
    prefix = f"missing-{uuid.uuid4().hex[:8]}-"
    started = time.monotonic()
    result = CliRunner().invoke(main, ["--bootstrap", kafka_bootstrap, "--topic-prefix", prefix, *command])
    assert result.exit_code == 1, result.output
    assert "do not exist" in result.output and f"streamdetect --topic-prefix {prefix} topics apply" in result.output
    assert len(result.output.strip().splitlines()) == 1 and time.monotonic() - started < 15
