"""The worker's /metrics, /healthz and /readyz: unit checks of the parts, and a scrape of a real
worker after it judged uploads from a real broker."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from streamdetect.events import Upload
from streamdetect.stream.admin import apply_topics
from streamdetect.stream.clients import publish_uploads
from streamdetect.stream.handler import Record
from streamdetect.stream.metrics import Health, WorkerMetrics
from streamdetect.stream.metrics_server import start_metrics_server
from streamdetect.events.topic_specs import load_specs
from tests.kafka_support import WorkerProcess, free_port, read_until, wait_until
from tests.test_stream_e2e import inline, png


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def samples(text: str) -> dict[str, float]:
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line and not line.startswith("#")}


def test_readiness_needs_models_and_an_assignment_and_liveness_needs_a_beating_loop() -> None:
    health = Health(stale_after_s=0.2)
    assert health.ready() == (False, "models loading")
    health.models_loaded = True
    assert not health.ready()[0]
    health.set_assignment([])  # more workers than partitions: still ready
    assert health.ready()[0]
    health.set_assignment(None)  # mid-rebalance
    assert not health.ready()[0]
    assert health.alive()[0]  # loop not started yet
    health.heartbeat()
    assert health.alive()[0]
    time.sleep(0.3)
    assert not health.alive()[0]


def test_published_records_are_counted_by_outcome_and_reason() -> None:
    metrics = WorkerMetrics()
    topics = dict(audit="a", alerts="al", dlq="d")
    metrics.count_published([Record("a", b"1", b"{}"), Record("al", b"1", b"{}")], **topics)
    metrics.count_published([Record("a", b"2", b"{}")], **topics)
    metrics.count_published([Record("d", b"3", json.dumps({"reason": "deadline"}).encode())], **topics)
    value = metrics.registry.get_sample_value
    assert value("streamdetect_verdicts_total", {"outcome": "flagged"}) == 1
    assert value("streamdetect_verdicts_total", {"outcome": "clean"}) == 1
    assert value("streamdetect_dead_letters_total", {"reason": "deadline"}) == 1


def test_server_answers_and_port_zero_is_off() -> None:
    metrics, health = WorkerMetrics(), Health(models_loaded=True)
    assert start_metrics_server(metrics, health, "127.0.0.1", 0) is None
    server = start_metrics_server(metrics, health, "127.0.0.1", free_port())
    assert server is not None
    try:
        port = server.address[1]
        assert get(port, "/readyz")[0] == 503
        health.set_assignment(["uploads/0"])
        assert get(port, "/readyz") == (200, "ok, 1 partitions\n")
        assert get(port, "/healthz")[0] == 200
        assert "streamdetect_uploads_in_flight" in get(port, "/metrics")[1]
        assert get(port, "/nope")[0] == 404
        # A second server on a taken port is logged and skipped, not fatal.
        assert start_metrics_server(metrics, health, "127.0.0.1", port) is None
    finally:
        server.stop()


@pytest.mark.kafka
async def test_worker_serves_real_values_after_judging_uploads(
    kafka_bootstrap: str, tiny_models: Path, tmp_path: Path
) -> None:
    prefix = f"m{uuid.uuid4().hex[:8]}-"
    await apply_topics(kafka_bootstrap, load_specs(), prefix)
    good = [Upload(upload_id=f"m-good-{i}", image=inline(png((40 * i, 100, 200)))) for i in range(6)]
    bad = [Upload(upload_id="m-bad", image=inline(b"\x89PNG\r\n\x1a\nnot a picture"))]
    await publish_uploads(kafka_bootstrap, prefix + "uploads", good + bad, [u.upload_id for u in good + bad])
    port = free_port()
    env = {**os.environ, "KAFKA_BOOTSTRAP": kafka_bootstrap, "STREAMDETECT_TOPIC_PREFIX": prefix,
           "STREAMDETECT_GROUP_ID": f"{prefix}workers", "STREAMDETECT_MODEL_DIR": str(tiny_models),
           "STREAMDETECT_METRICS_PORT": str(port), "STREAMDETECT_LOG_JSON": "true"}
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        await read_until(kafka_bootstrap, prefix + "audit", lambda e: len(e) >= len(good), 240)
        await read_until(kafka_bootstrap, prefix + "dlq", lambda e: len(e) >= 1, 60)
        # The lag gauge is refreshed every 2 s: wait until all six partitions report it.
        assert wait_until(lambda: sum("streamdetect_consumer_lag{" in k for k in samples(get(port, "/metrics")[1])) == 6,
                          20), worker.log_tail()
        status, text = get(port, "/metrics")
        ready, healthy = get(port, "/readyz"), get(port, "/healthz")
    finally:
        worker.terminate()
    assert status == 200 and ready[0] == 200 and healthy[0] == 200, (ready, healthy)
    m = samples(text)
    assert m['streamdetect_verdicts_total{outcome="clean"}'] + m.get('streamdetect_verdicts_total{outcome="flagged"}',
                                                                      0) == len(good)
    assert m['streamdetect_dead_letters_total{reason="undecodable"}'] == 1
    for stage in ("caption", "generate", "embed"):
        assert m[f'streamdetect_batch_size_sum{{stage="{stage}"}}'] == len(good)
        assert m[f'streamdetect_batch_seconds_sum{{stage="{stage}"}}'] > 0
        assert m[f'streamdetect_stage_queue_depth{{stage="{stage}"}}'] == 0
    assert m["streamdetect_uploads_in_flight"] == 0
    assert m["streamdetect_upload_seconds_count"] == len(good) + len(bad)
    # Uploads waiting on the broker are taken as batches (one acknowledgement wait each), not one by one.
    assert m["streamdetect_taken_batch_uploads_sum"] == len(good) + len(bad)
    assert m["streamdetect_taken_batch_uploads_count"] < len(good) + len(bad)
    lags = {k: v for k, v in m.items() if k.startswith("streamdetect_consumer_lag{")}
    assert len(lags) == 6 and all(v == 0 for v in lags.values()), lags
    # Structured JSON logs carry the upload ids.
    logged = [json.loads(line) for line in worker.log_path.read_text().splitlines() if line.startswith("{")]
    assert {e.get("upload_id") for e in logged if e.get("event") == "upload.judged"} == {u.upload_id for u in good}
