"""Evidence: the verdict names what was judged (never inline bytes) and carries its evidence;
the images go to a folder or a real S3-compatible server under content-hash keys, are read
back only by such keys, and a store that fails costs the pictures, never the verdict."""

from __future__ import annotations

import base64
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from PIL import Image

from streamdetect import events
from streamdetect.events import Source
from streamdetect.evidence import EvidenceError, LocalStore, S3Store, open_store, png_bytes
from streamdetect.images import ImagePolicy
from streamdetect.stream.handler import Evidence, Topics, UploadHandler

SOURCE = Source("uploads", 0, 3)
TOPICS = Topics(alerts="alerts", audit="audit", dlq="dlq")


@dataclass
class Judged:
    score: float
    regenerated: Image.Image

    def as_dict(self) -> dict:
        return {"upload_id": "u1", "flagged": self.score < 0.5, "score": self.score, "threshold": 0.5,
                "scores": {"enc": self.score}, "caption": "a red square", "caption_source": "model", "seed": 1,
                "models": {"captioner": "c", "generator": "g", "encoders": ["enc"]}}


def judge(score: float):
    async def run(*, upload_id, image, caption, seed, deadline):
        return Judged(score, Image.new("RGB", (8, 8), "blue"))
    return run


def red_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buffer, format="PNG")
    return buffer.getvalue()


def upload(image: str) -> bytes:
    return json.dumps({"schema_version": 1, "upload_id": "u1", "image": image,
                       "metadata": {"user": "u-42", "tags": ["a"]}}).encode()


async def verdict_of(score: float, image: str, evidence: Evidence) -> dict:
    handler = UploadHandler(judge(score), ImagePolicy(), TOPICS, "w", evidence=evidence)
    records = await handler.handle(upload(image), SOURCE)
    assert records[0].topic == "audit", records[0].value
    verdict = json.loads(records[0].value)
    events.validate("verdict", verdict)
    return verdict


async def test_a_flagged_verdict_names_the_upload_and_keeps_both_images(tmp_path: Path) -> None:
    data = red_png()
    inline = "data:image/png;base64," + base64.b64encode(data).decode()
    store = LocalStore(tmp_path / "evidence")
    verdict = await verdict_of(0.2, inline, Evidence(store))
    assert verdict["schema_version"] == 2 and verdict["metadata"] == {"user": "u-42", "tags": ["a"]}
    assert verdict["image"] == {"reference": None, "inline": True, "sha256": hashlib.sha256(data).hexdigest(),
                                "size": len(data)}
    assert base64.b64encode(data).decode() not in json.dumps(verdict)  # the bytes never ride along
    evidence = verdict["evidence"]
    assert evidence["store"] == str((tmp_path / "evidence").resolve())
    assert (evidence["caption"], evidence["scores"], evidence["threshold"]) == ("a red square", {"enc": 0.2}, 0.5)
    for kind, colour in (("input", (255, 0, 0)), ("regenerated", (0, 0, 255))):
        stored = evidence[kind]
        body = store.get(stored["key"])
        assert hashlib.sha256(body).hexdigest() == stored["sha256"] and len(body) == stored["size"]
        assert Image.open(io.BytesIO(body)).getpixel((0, 0)) == colour


async def test_a_clean_verdict_records_hashes_only_unless_every_verdict_is_kept(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "evidence")
    inline = "data:image/png;base64," + base64.b64encode(red_png()).decode()
    clean = await verdict_of(0.9, inline, Evidence(store))
    assert clean["evidence"]["input"]["key"] is None and len(clean["evidence"]["regenerated"]["sha256"]) == 64
    assert not (tmp_path / "evidence").exists()
    kept = await verdict_of(0.9, inline, Evidence(store, of_all=True))
    assert store.get(kept["evidence"]["regenerated"]["key"]) == png_bytes(Image.new("RGB", (8, 8), "blue"))
    nowhere = await verdict_of(0.2, inline, Evidence())
    assert nowhere["evidence"]["store"] is None and nowhere["evidence"]["input"]["key"] is None


async def test_evidence_goes_to_s3_and_a_reference_is_recorded_as_given(s3_server: str) -> None:
    s3 = boto3.client("s3", endpoint_url=s3_server)
    s3.create_bucket(Bucket="evidence-test")
    s3.create_bucket(Bucket="uploads-test")
    s3.put_object(Bucket="uploads-test", Key="pics/red.png", Body=red_png())
    store = open_store("s3://evidence-test/alerts/", s3_endpoint=s3_server)
    policy = ImagePolicy(s3_endpoint=s3_server)
    handler = UploadHandler(judge(0.1), policy, TOPICS, "w", evidence=Evidence(store))
    verdict = json.loads((await handler.handle(upload("s3://uploads-test/pics/red.png"), SOURCE))[0].value)
    assert verdict["image"]["reference"] == "s3://uploads-test/pics/red.png" and verdict["image"]["inline"] is False
    assert verdict["evidence"]["store"] == "s3://evidence-test/alerts/"
    key = verdict["evidence"]["regenerated"]["key"]
    assert s3.get_object(Bucket="evidence-test", Key=f"alerts/{key}")["ContentType"] == "image/png"
    assert store.get(key) == png_bytes(Image.new("RGB", (8, 8), "blue"))


async def test_a_failing_store_costs_the_pictures_not_the_alert(s3_server: str) -> None:
    store = S3Store("no-such-bucket", "x", endpoint=s3_server)
    inline = "data:image/png;base64," + base64.b64encode(red_png()).decode()
    handler = UploadHandler(judge(0.1), ImagePolicy(), TOPICS, "w", evidence=Evidence(store))
    records = await handler.handle(upload(inline), SOURCE)
    assert [r.topic for r in records] == ["audit", "alerts"]
    evidence = json.loads(records[0].value)["evidence"]
    assert evidence["input"]["key"] is None and "could not store" in evidence["error"]


def test_only_keys_of_the_stores_own_form_are_read(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "ev")
    (tmp_path / "secret").write_text("no")
    for key in ("../secret", "input/../../secret", "input/abc.png", "other/" + "a" * 64 + ".png", "/etc/passwd"):
        with pytest.raises(EvidenceError, match="not an evidence key"):
            store.get(key)
    with pytest.raises(EvidenceError, match="is not in"):
        store.get("input/" + "0" * 64 + ".png")
    with pytest.raises(ValueError):
        open_store("https://example.com/x")


async def test_the_alerts_command_line_says_what_whose_and_where_the_evidence_is(tmp_path: Path) -> None:
    from streamdetect.cli.stream import format_verdict

    inline = "data:image/png;base64," + base64.b64encode(red_png()).decode()
    verdict = await verdict_of(0.2, inline, Evidence(LocalStore(tmp_path / "ev")))
    line = format_verdict(verdict)
    assert line.startswith("FLAGGED u1") and "image=inline sha256:" + verdict["image"]["sha256"][:12] in line
    assert '"user": "u-42"' in line and f"evidence={tmp_path / 'ev'}/regenerated/" in line
