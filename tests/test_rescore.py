"""`streamdetect rescore`: audit verdicts made by the real handler on the mini models come back to
their recorded score from their evidence (local folder or S3) or their reference; a tampered score
is a mismatch, and a record whose input cannot be found says so and the run goes on."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from PIL import Image

from streamdetect.app.wiring import build_handler, load_profile_models
from streamdetect.cli.main import main
from streamdetect.events import Source
from streamdetect.mini.domain import make_item
from streamdetect.settings import Settings


@pytest.fixture(scope="module")
def mini_models() -> Any:
    """The mini profile's models, loaded once: every handler here judges with them."""
    return load_profile_models(Settings(profile="mini"))


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _inline_upload(upload_id: str, image: Image.Image) -> bytes:
    data = "data:image/png;base64," + base64.b64encode(_png(image)).decode()
    return json.dumps({"schema_version": 1, "upload_id": upload_id, "image": data}).encode()


def _judge(settings: Settings, models: Any, uploads: list[bytes]) -> list[dict[str, Any]]:
    """The audit verdicts the real handler publishes for ``uploads`` (one at a time)."""
    async def run() -> list[dict[str, Any]]:
        handler = build_handler(settings, models)
        try:
            records = [await handler.handle(raw, Source("uploads", 0, i)) for i, raw in enumerate(uploads)]
        finally:
            handler.close()
        return [json.loads(next(r for r in rs if r.topic == settings.topic("audit")).value) for rs in records]

    return asyncio.run(run())


def _scenes(n: int) -> list[Image.Image]:
    return [make_item(0, "test", i)[0] for i in range(n)]


def _write(path: Path, verdicts: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(v) + "\n" for v in verdicts))
    return path


def _rescore(*args: str) -> Any:
    return CliRunner().invoke(main, ["rescore", *args, "--profile", "mini"])


def _json_lines(stdout: str) -> dict[str, dict[str, Any]]:
    return {r["upload_id"]: r for r in map(json.loads, stdout.splitlines())}


def test_verdicts_from_a_local_evidence_store_rescore_to_their_number(mini_models: Any, tmp_path: Path) -> None:
    settings = Settings(profile="mini", evidence_store=str(tmp_path / "ev"), evidence_of="all")
    verdicts = _judge(settings, mini_models, [_inline_upload(f"u{i}", im) for i, im in enumerate(_scenes(2))])
    assert all(v["evidence"]["input"]["key"] and v["evidence"]["regenerated"]["key"] for v in verdicts)
    result = _rescore(str(_write(tmp_path / "audit.jsonl", verdicts)), "--json")
    assert result.exit_code == 0, result.output
    rows = _json_lines(result.stdout)
    for verdict in verdicts:
        row = rows[verdict["upload_id"]]
        assert row["status"] == "match" and row["image_from"] == "evidence"
        assert row["recomputed_score"] == pytest.approx(verdict["score"], abs=1e-5)
        assert row["regenerated_sha256"] == {"recorded": verdict["evidence"]["regenerated"]["sha256"],
                                             "recomputed": verdict["evidence"]["regenerated"]["sha256"]}
    assert "rescored 2 of 2 records: 2 match, 0 mismatch, 0 cannot be rescored" in result.stderr


def test_a_tampered_score_is_a_mismatch_and_unfindable_inputs_say_why(mini_models: Any, tmp_path: Path) -> None:
    store = tmp_path / "ev"
    settings = Settings(profile="mini", evidence_store=str(store), evidence_of="all", allow_file=True,
                        file_root=tmp_path)
    scenes = _scenes(3)
    (tmp_path / "ref.png").write_bytes(_png(scenes[2]))
    uploads = [_inline_upload("kept", scenes[0]), _inline_upload("lost", scenes[1]),
               json.dumps({"schema_version": 1, "upload_id": "by-ref", "image": f"file://{tmp_path}/ref.png"}).encode()]
    kept, lost, by_ref = _judge(settings, mini_models, uploads)
    tampered = {**kept, "upload_id": "tampered", "score": kept["score"] + 0.01}
    for verdict in (lost, by_ref):  # their stored inputs are gone; only by-ref has a reference to fall back on
        (store / verdict["evidence"]["input"]["key"]).unlink()
    v1 = {k: v for k, v in kept.items() if k not in ("image", "metadata", "evidence")} | {"schema_version": 1,
                                                                                          "upload_id": "v1"}
    foreign = {**kept, "upload_id": "foreign", "models": {**kept["models"], "generator": "mini-t2i:/elsewhere"}}
    audit = _write(tmp_path / "audit.jsonl", [kept, tampered, lost, by_ref, v1, foreign])
    result = CliRunner().invoke(main, ["rescore", str(audit), "--profile", "mini", "--allow-file",
                                       "--file-root", str(tmp_path)])
    assert result.exit_code == 1, result.output
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[:-1]}
    assert " match " in lines["kept"] and "(image from evidence)" in lines["kept"]
    assert "regeneration same" in lines["kept"]
    assert "MISMATCH" in lines["tampered"] and "diff -1.00e-02" in lines["tampered"]
    assert "cannot rescore: no input image: stored input unreadable" in lines["lost"]
    assert "the upload was inline, and a verdict never carries its pixels" in lines["lost"]
    assert " match " in lines["by-ref"] and "(image from reference)" in lines["by-ref"]
    assert "cannot rescore: no input image: a schema v1 verdict keeps no evidence" in lines["v1"]
    assert "cannot rescore: made with mini-t2i:/elsewhere, not loaded by profile mini" in lines["foreign"]
    assert result.stdout.splitlines()[-1] == ("rescored 3 of 6 records: 2 match, 1 mismatch (tampered), "
                                              "3 cannot be rescored (lost, v1, foreign)")


def test_verdicts_with_evidence_in_s3_rescore_through_the_endpoint(mini_models: Any, s3_server: str,
                                                                   tmp_path: Path) -> None:
    import boto3

    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").create_bucket(Bucket="rescore-evidence")
    settings = Settings(profile="mini", evidence_store="s3://rescore-evidence/prefix", evidence_of="all",
                        s3_endpoint=s3_server, s3_region="us-east-1")
    verdicts = _judge(settings, mini_models, [_inline_upload("s3-upload", _scenes(1)[0])])
    assert verdicts[0]["evidence"]["store"] == "s3://rescore-evidence/prefix/"
    audit = _write(tmp_path / "audit.jsonl", verdicts)
    result = _rescore(str(audit), "--json", "--s3-endpoint", s3_server, "--s3-region", "us-east-1")
    assert result.exit_code == 0, result.output
    row = _json_lines(result.stdout)["s3-upload"]
    assert row["matches"] and row["image_from"] == "evidence" and row["regeneration_matches"] is True
    assert row["difference"] == pytest.approx(0, abs=1e-5)


def test_rescore_needs_one_source() -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["rescore"])
    assert result.exit_code == 2 and "give FILE (or - for stdin), or --from-topic" in result.output
    result = runner.invoke(main, ["rescore", "-", "--since", "2026-01-01"], input="")
    assert result.exit_code == 2 and "use them with --from-topic" in result.output


def test_from_topic_reads_the_audit_topic_in_the_cli_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    """The topic is read by the CLI (a real broker is covered by replay's own tests) and its
    events go through the same per-record path; a v1 verdict of an inline upload says why."""
    import streamdetect.cli.offline as offline_cli

    from streamdetect.app.detector_config import settings_zoo

    asked: list = []
    zoo = settings_zoo(Settings(profile="mini"))
    v1 = {"schema_version": 1, "upload_id": "old", "score": 0.9, "caption": "c", "seed": 1, "scores": {"e": 0.9},
          "models": {"captioner": None, "generator": zoo.generators[0], "encoders": list(zoo.encoders)}}
    monkeypatch.setattr(offline_cli, "topic_events", lambda settings, which, since, until: asked.append(
        (which, since, until)) or [v1])
    result = _rescore("--from-topic", "--since", "2026-11-01")
    assert result.exit_code == 1, result.output
    assert asked[0][0] == "audit" and asked[0][1].isoformat().startswith("2026-11-01")
    assert "old  cannot rescore: no input image: a schema v1 verdict keeps no evidence" in result.stdout
    assert "0 of 1 records" in result.stdout


@pytest.mark.parametrize("first_stage", ["agreement", "margin"])
def test_verdicts_the_cascade_decided_rescore_to_their_first_stage_score(mini_models: Any, tmp_path: Path,
                                                                         first_stage: str) -> None:
    settings = Settings(profile="mini", evidence_store=str(tmp_path / "ev"), evidence_of="all", cascade=first_stage,
                        cascade_exit_threshold=-1.0)  # every upload exits at the first stage
    verdicts = _judge(settings, mini_models, [_inline_upload(f"c{i}", im) for i, im in enumerate(_scenes(2))])
    assert all(v["decided_by"] == "first_stage" and v["evidence"]["regenerated"] is None for v in verdicts)
    result = _rescore(str(_write(tmp_path / "audit.jsonl", verdicts)), "--json")
    assert result.exit_code == 0, result.output
    for verdict in verdicts:
        row = _json_lines(result.stdout)[verdict["upload_id"]]
        assert row["status"] == "match" and row["recomputed_score"] == pytest.approx(verdict["score"], abs=1e-5)
