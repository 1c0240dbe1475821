"""End to end on a real Apache Kafka broker and a real S3-compatible server: uploads in,
verdicts and dead letters out, through `streamdetect worker` processes with the tiny models."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import uuid
from collections import Counter
from pathlib import Path

import boto3
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from PIL import Image

from streamdetect import events
from streamdetect.events import Upload
from streamdetect.stream.admin import apply_topics
from streamdetect.stream.clients import publish_uploads
from streamdetect.events.topic_specs import load_specs
from tests.kafka_support import WorkerProcess, read_until

pytestmark = pytest.mark.kafka


def png(colour: str, size: int = 48) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def inline(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


@pytest.fixture
def prefix() -> str:
    """Each test gets its own topics and consumer group on the shared broker."""
    return f"t{uuid.uuid4().hex[:8]}-"


@pytest.fixture
def worker_env(kafka_bootstrap: str, s3_server: str, tiny_models: Path, prefix: str) -> dict[str, str]:
    return {
        **os.environ,
        "KAFKA_BOOTSTRAP": kafka_bootstrap,
        "STREAMDETECT_TOPIC_PREFIX": prefix,
        "STREAMDETECT_GROUP_ID": f"{prefix}workers",
        "STREAMDETECT_MODEL_DIR": str(tiny_models),
        "STREAMDETECT_PROFILE": "tiny",
        "STREAMDETECT_S3_ENDPOINT": s3_server,
        "STREAMDETECT_LOG_JSON": "true",
    }


def start_worker(env: dict[str, str], tmp_path: Path, name: str, *args: str) -> WorkerProcess:
    return WorkerProcess(env, tmp_path / f"{name}.log", *args)


async def send_raw(bootstrap: str, topic: str, key: bytes, value: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


async def test_topics_apply_is_idempotent(kafka_bootstrap: str, prefix: str) -> None:
    first = await apply_topics(kafka_bootstrap, load_specs(), prefix)
    second = await apply_topics(kafka_bootstrap, load_specs(), prefix)
    assert {c.topic: c.action for c in first} == {prefix + n: "created" for n in
                                                  ("uploads", "alerts", "audit", "dlq", "labels", "claims")}
    assert {c.action for c in second} == {"unchanged"}


async def dead_letter_headers(bootstrap: str, topic: str, count: int) -> dict[bytes, dict[str, bytes]]:
    """The Kafka headers of the first ``count`` records of ``topic``, by record key (the latest wins)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    found: dict[bytes, dict[str, bytes]] = {}
    seen = 0
    try:
        while seen < count:
            batch = await asyncio.wait_for(consumer.getmany(timeout_ms=1000), 30)
            for records in batch.values():
                found.update({r.key: dict(r.headers) for r in records})
                seen += len(records)
    finally:
        await consumer.stop()
    return found


async def test_good_uploads_get_verdicts_and_bad_ones_dead_letters(
    kafka_bootstrap: str, s3_server: str, worker_env: dict[str, str], prefix: str, tmp_path: Path
) -> None:
    await apply_topics(kafka_bootstrap, load_specs(), prefix)
    s3 = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    s3.create_bucket(Bucket=f"{prefix}uploads")
    s3.put_object(Bucket=f"{prefix}uploads", Key="blue.png", Body=png("blue"))
    s3.put_object(Bucket=f"{prefix}uploads", Key="green.png", Body=png("green"))
    good = [
        Upload(upload_id="good-inline-red", image=inline(png("red"))),
        Upload(upload_id="good-inline-white", image=inline(png("white"))),
        Upload(upload_id="good-s3-blue", image=f"s3://{prefix}uploads/blue.png"),
        Upload(upload_id="good-s3-green", image=f"s3://{prefix}uploads/green.png"),
        Upload(upload_id="good-own-caption", image=inline(png("yellow")), caption="a yellow square"),
    ]
    bad = [
        Upload(upload_id="bad-corrupt", image=inline(b"\x89PNG\r\n\x1a\nnot a picture at all")),
        Upload(upload_id="bad-missing-s3", image=f"s3://{prefix}uploads/nowhere.png"),
    ]
    await publish_uploads(kafka_bootstrap, prefix + "uploads", good + bad, [u.upload_id for u in good + bad])
    # Not an upload at all: a wrong schema, sent raw as a buggy producer would.
    await send_raw(kafka_bootstrap, prefix + "uploads", b"bad-schema", json.dumps({"upload_id": "bad-schema"}).encode())

    worker = start_worker(worker_env, tmp_path, "worker")
    try:
        audit = await read_until(kafka_bootstrap, prefix + "audit", lambda e: len(e) >= len(good), 240)
        dlq = await read_until(kafka_bootstrap, prefix + "dlq", lambda e: len(e) >= 3, 60)
        # Give a stray duplicate the chance to show up before counting exactly.
        await asyncio.sleep(3)
        audit = await read_until(kafka_bootstrap, prefix + "audit", lambda e: False, 3)
        dlq = await read_until(kafka_bootstrap, prefix + "dlq", lambda e: False, 3)
    finally:
        exit_code = worker.terminate()
    assert sorted(v["upload_id"] for v in audit) == sorted(u.upload_id for u in good), worker.log_tail()
    reasons = {d["upload_id"]: d["reason"] for d in dlq}
    assert reasons == {"bad-corrupt": "undecodable", "bad-missing-s3": "not_found", "bad-schema": "bad_schema"}
    for verdict in audit:
        events.validate("verdict", verdict)
    for dead in dlq:
        events.validate("dead_letter", dead)
        assert json.loads(dead["payload"])["upload_id"] == dead["upload_id"]  # the original payload, intact
    headers = await dead_letter_headers(kafka_bootstrap, prefix + "dlq", 3)
    assert {key: h["dlq.reason"] for key, h in headers.items()} == {
        k.encode(): v.encode() for k, v in reasons.items()}  # routable from the headers alone
    by_id = {v["upload_id"]: v for v in audit}
    assert by_id["good-own-caption"]["caption_source"] == "upload"
    assert by_id["good-own-caption"]["caption"] == "a yellow square"
    assert by_id["good-own-caption"]["models"]["captioner"] is None
    assert by_id["good-inline-red"]["caption_source"] == "model"
    flagged = {v["upload_id"] for v in audit if v["flagged"]}
    alerts = await read_until(kafka_bootstrap, prefix + "alerts", lambda e: len(e) >= len(flagged), 10)
    assert {a["upload_id"] for a in alerts} == flagged
    assert exit_code == 0, worker.log_tail()
    not_json = [line for line in worker.log_path.read_text().splitlines() if line.strip() and not _is_json(line)]
    assert not not_json, f"with log_json, {len(not_json)} worker lines are not JSON, e.g. {not_json[:3]}"


def _is_json(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


async def test_worker_killed_mid_stream_loses_nothing(
    kafka_bootstrap: str, worker_env: dict[str, str], prefix: str, tmp_path: Path
) -> None:
    await apply_topics(kafka_bootstrap, load_specs(), prefix)
    uploads = [Upload(upload_id=f"u{i:03d}", image=inline(png((i * 40 % 256, 90, 200)))) for i in range(60)]
    await publish_uploads(kafka_bootstrap, prefix + "uploads", uploads, [u.upload_id for u in uploads])
    # Small batches and few uploads in flight keep the first worker busy long enough to die mid-stream.
    slow = ("--max-batch", "2", "--max-in-flight", "4")
    first = start_worker(worker_env, tmp_path, "first", *slow)
    try:
        before = await read_until(kafka_bootstrap, prefix + "audit", lambda e: len(e) >= 5, 240)
    finally:
        first.kill()
    assert len(before) >= 5, first.log_tail()
    judged_before_kill = {v["upload_id"] for v in await read_until(kafka_bootstrap, prefix + "audit", lambda e: False, 3)}
    assert len(judged_before_kill) < len(uploads), "the worker finished before it was killed: nothing was tested"

    second = start_worker(worker_env, tmp_path, "second")
    try:
        wanted = {u.upload_id for u in uploads}
        after = await read_until(kafka_bootstrap, prefix + "audit",
                                 lambda e: wanted <= {v["upload_id"] for v in e}, 240)
    finally:
        second.terminate()
    counts = Counter(v["upload_id"] for v in after)
    assert set(counts) == wanted, second.log_tail()
    duplicates = sum(n - 1 for n in counts.values())
    print(f"killed after {len(judged_before_kill)} verdicts; {duplicates} duplicate verdicts after restart")


async def test_dead_letters_are_redriven_once_their_cause_is_fixed(
    kafka_bootstrap: str, s3_server: str, worker_env: dict[str, str], prefix: str, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from streamdetect.cli.main import main

    await apply_topics(kafka_bootstrap, load_specs(), prefix)
    s3 = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    s3.create_bucket(Bucket=f"{prefix}uploads")
    later, never = (Upload(upload_id=f"redrive-{name}", image=f"s3://{prefix}uploads/{name}.png")
                    for name in ("later", "never"))
    await publish_uploads(kafka_bootstrap, prefix + "uploads", [later, never], ["later", "never"])

    def redrive(*args: str) -> str:
        result = CliRunner().invoke(main, ["--bootstrap", kafka_bootstrap, "--topic-prefix", prefix, "dlq", "redrive",
                                           *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return " ".join(result.output.split())

    worker = start_worker(worker_env, tmp_path, "worker")
    try:
        first = await read_until(kafka_bootstrap, prefix + "dlq", lambda e: len(e) >= 2, 240)
        assert {d["reason"] for d in first} == {"not_found"}, worker.log_tail()
        assert "not_found 2 to redrive 2 dry run: nothing sent" in await asyncio.to_thread(
            redrive, "--reason", "not_found", "--dry-run")
        s3.put_object(Bucket=f"{prefix}uploads", Key="later.png", Body=png("blue"))  # the cause, fixed
        assert "sent 2" in await asyncio.to_thread(redrive, "--reason", "not_found", "--max-rounds", "1")
        audit = await read_until(kafka_bootstrap, prefix + "audit", lambda e: len(e) >= 1, 120)
        dlq = await read_until(kafka_bootstrap, prefix + "dlq", lambda e: len(e) >= 3, 60)
        # The one that failed again counts its round; with --max-rounds 1 it is not sent a second time.
        again = await asyncio.to_thread(redrive, "--upload-id", "redrive-never", "--max-rounds", "1")
    finally:
        exit_code = worker.terminate()
    assert [v["upload_id"] for v in audit] == ["redrive-later"], worker.log_tail()
    assert [d["upload_id"] for d in dlq].count("redrive-never") == 2
    headers = await dead_letter_headers(kafka_bootstrap, prefix + "dlq", 3)
    assert headers[b"redrive-never"]["streamdetect.redrive.count"] == b"1"  # the latest letter of that key
    assert "to redrive 0 skipped: max_rounds 1 sent 0" in again
    assert exit_code == 0, worker.log_tail()


async def test_topics_apply_keeps_hand_set_overrides_and_reports_drift_it_cannot_fix(
    kafka_bootstrap: str, prefix: str
) -> None:
    from dataclasses import replace

    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
    from click.testing import CliRunner

    from streamdetect.cli.main import main

    await apply_topics(kafka_bootstrap, load_specs(), prefix)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:  # an operator's own override, set the way Kafka's tools set it
        audit = prefix + "audit"
        (current,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, audit)])
        overrides = {e[0]: e[1] for r in current.resources for e in r[4] if e[3] == 1}
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, audit,
                                                  configs={**overrides, "max.compaction.lag.ms": "86400000"})])
        specs = [replace(s, config={**s.config, "retention.bytes": "1073741824"}) if s.name == "audit" else s
                 for s in load_specs()]
        changes = {c.topic: c for c in await apply_topics(kafka_bootstrap, specs, prefix)}
        (after,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, audit)])
        values = {e[0]: e[1] for r in after.resources for e in r[4]}
    finally:
        await admin.close()
    assert changes[audit].action == "config" and "kept max.compaction.lag.ms" in changes[audit].detail
    assert values["max.compaction.lag.ms"] == "86400000" and values["retention.bytes"] == "1073741824"
    drifted = [replace(s, replication_factor=3) for s in load_specs()]
    assert {c.action for c in await apply_topics(kafka_bootstrap, drifted, prefix)} == {"replication_drift"}
    result = await asyncio.to_thread(CliRunner().invoke, main, ["--bootstrap", kafka_bootstrap, "--topic-prefix",
                                                                 prefix, "topics", "apply"])
    assert result.exit_code == 0, result.output  # the shipped specs match the topics again
