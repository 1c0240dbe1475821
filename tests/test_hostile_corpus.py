"""The hostile-upload corpus on the real broker: every case in tests/corpus/ ends as exactly the
outcome its line expects (a verdict, or a dead letter with that reason), the worker never stops
or restarts, and the good uploads between the cases are all judged. A new case is one line in
tests/corpus/hostile_uploads.jsonl (tests/hostile_corpus.py says how lines are read)."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from streamdetect.events.topic_specs import MAX_MESSAGE_BYTES, load_specs
from streamdetect.stream.admin import apply_topics
from tests.hostile_corpus import Case, Places, good, image_uri, load
from tests.kafka_support import WorkerProcess, read_until

pytestmark = pytest.mark.kafka


@pytest.fixture
def places(tmp_path: Path) -> Places:
    import base64

    root = tmp_path / "root"
    (root / "subdir").mkdir(parents=True)
    (root / "good.png").write_bytes(base64.b64decode(image_uri("PNG", "RGB", 8, 8).split(",", 1)[1]))
    os.mkfifo(root / "fifo")
    (root / "passwd-link").symlink_to("/etc/passwd")
    (root / "zero-link").symlink_to("/dev/zero")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    yield Places(root, listener.getsockname()[1], closed_port)
    listener.close()


async def publish(bootstrap: str, topic: str, cases: list[Case]) -> dict[tuple[int, int], Case]:
    """Send every case in order; where each landed (partition, offset)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=MAX_MESSAGE_BYTES)
    await producer.start()
    try:
        futures = [await producer.send(topic, case.value, key=case.key) for case in cases]
        landed = [await future for future in futures]
    finally:
        await producer.stop()
    return {(m.partition, m.offset): case for m, case in zip(landed, cases)}


def interleaved(cases: list[Case], every: int = 4) -> list[Case]:
    out: list[Case] = []
    for i, case in enumerate(cases):
        out.append(case)
        if i % every == every - 1:
            out.append(good(f"good-after-{case.id}"))
    return out


def outcomes(audit: list[dict], dlq: list[dict]) -> dict[tuple[int, int], list[str]]:
    found: dict[tuple[int, int], list[str]] = {}
    for event, outcome in [(v, "verdict") for v in audit] + [(d, f"dlq:{d['reason']}") for d in dlq]:
        found.setdefault((event["source"]["partition"], event["source"]["offset"]), []).append(outcome)
    return found


async def test_every_hostile_upload_gets_its_expected_outcome_and_the_worker_keeps_going(
    kafka_bootstrap: str, tiny_models: Path, places: Places, tmp_path: Path
) -> None:
    prefix = f"h{uuid.uuid4().hex[:8]}-"
    await apply_topics(kafka_bootstrap, load_specs(), prefix)
    cases = interleaved(load("hostile_uploads.jsonl", places))
    assert len(cases) >= 60
    sent = await publish(kafka_bootstrap, prefix + "uploads", cases)
    env = {**os.environ, "KAFKA_BOOTSTRAP": kafka_bootstrap, "STREAMDETECT_TOPIC_PREFIX": prefix,
           "STREAMDETECT_GROUP_ID": f"{prefix}workers", "STREAMDETECT_MODEL_DIR": str(tiny_models),
           "STREAMDETECT_PROFILE": "tiny", "STREAMDETECT_ALLOW_FILE": "true", "STREAMDETECT_FILE_ROOT": str(places.root),
           "STREAMDETECT_METRICS_PORT": "0", "STREAMDETECT_FETCH_RETRIES": "1", "STREAMDETECT_RETRY_BACKOFF_S": "0.1",
           "STREAMDETECT_LOG_JSON": "true"}
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        total = lambda a, d: len(a) + len(d)  # noqa: E731
        audit, dlq = [], []
        for _ in range(60):  # read both logs until every case has an outcome (or 5 minutes pass)
            audit = await read_until(kafka_bootstrap, prefix + "audit", lambda e: False, 2)
            dlq = await read_until(kafka_bootstrap, prefix + "dlq", lambda e: False, 2)
            if total(audit, dlq) >= len(cases) or worker.proc.poll() is not None:
                break
            await asyncio.sleep(3)
        still_running = worker.proc.poll() is None
    finally:
        exit_code = worker.terminate()
    got = outcomes(audit, dlq)
    wrong = {case.id: (case.expect, got.get(where)) for where, case in sent.items() if got.get(where) != [case.expect]}
    assert not wrong, f"{len(wrong)} of {len(cases)} cases ended otherwise (expected, got): {wrong}\n{worker.log_tail()}"
    assert still_running and exit_code == 0, worker.log_tail()


class _SlowServer:
    """A loopback HTTP server with the references of tests/corpus/slow_references.jsonl."""

    def __init__(self, png: bytes) -> None:
        import http.server
        import threading

        stop = threading.Event()

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def trickle(self, data: bytes) -> None:
                try:
                    for byte in data:
                        if stop.wait(0.5):
                            return
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the worker gave up at its deadline, as it should

            def do_GET(self) -> None:  # noqa: N802 - the http.server interface
                routes = {"/png": (200, {"Content-Type": "image/png"}, png), "/missing": (404, {}, b""),
                          "/forbidden": (403, {}, b""), "/html": (200, {"Content-Type": "text/html"}, b"<html/>"),
                          "/huge-length": (200, {"Content-Length": "100000000000"}, b""),
                          "/redirect-file": (302, {"Location": "file:///etc/passwd"}, b""),
                          "/redirect-loop": (302, {"Location": "/redirect-loop"}, b"")}
                if self.path == "/trickle-status":
                    return self.trickle(b"HTTP/1.1 200 OK\r\n" * 4)
                if self.path == "/trickle-headers":
                    self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                    return self.trickle(b"X-Slow: " + b"a" * 40)
                if self.path == "/trickle-body":
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(png)))
                    self.end_headers()
                    return self.trickle(png)
                if self.path == "/silent":
                    stop.wait(30)
                    return None
                status, headers, body = routes[self.path]
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                if "Content-Length" not in headers:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return None

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.stop = stop
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


async def test_slow_references_time_out_alone_and_do_not_hold_back_other_uploads(
    kafka_bootstrap: str, tiny_models: Path, places: Places, tmp_path: Path
) -> None:
    import base64
    from dataclasses import replace

    png = base64.b64decode(image_uri("PNG", "RGB", 8, 8).split(",", 1)[1])
    server = _SlowServer(png)
    prefix = f"s{uuid.uuid4().hex[:8]}-"
    try:
        await apply_topics(kafka_bootstrap, load_specs(), prefix)
        cases = interleaved(load("slow_references.jsonl", replace(places, http=server.url)), every=2)
        sent = await publish(kafka_bootstrap, prefix + "uploads", cases)
        env = {**os.environ, "KAFKA_BOOTSTRAP": kafka_bootstrap, "STREAMDETECT_TOPIC_PREFIX": prefix,
               "STREAMDETECT_GROUP_ID": f"{prefix}workers", "STREAMDETECT_MODEL_DIR": str(tiny_models),
               "STREAMDETECT_PROFILE": "tiny", "STREAMDETECT_ALLOW_HTTP": "true",
               "STREAMDETECT_ALLOW_PRIVATE_HOSTS": "true", "STREAMDETECT_FETCH_TIMEOUT_S": "3",
               "STREAMDETECT_FETCH_RETRIES": "0", "STREAMDETECT_METRICS_PORT": "0"}
        worker = WorkerProcess(env, tmp_path / "worker.log")
        try:
            audit = await read_until(kafka_bootstrap, prefix + "audit",
                                     lambda e: len(e) >= sum(c.expect == "verdict" for c in cases), 240)
            dlq = await read_until(kafka_bootstrap, prefix + "dlq",
                                   lambda e: len(e) >= sum(c.expect != "verdict" for c in cases), 60)
            still_running = worker.proc.poll() is None
        finally:
            exit_code = worker.terminate()
    finally:
        server.close()
    got = outcomes(audit, dlq)
    wrong = {case.id: (case.expect, got.get(where)) for where, case in sent.items() if got.get(where) != [case.expect]}
    assert not wrong, f"{len(wrong)} cases ended otherwise (expected, got): {wrong}\n{worker.log_tail()}"
    slowest = [d["failed_at"] for d in dlq if d["upload_id"] in ("http-never-answers", "http-status-line-trickled")]
    good_done = [v["decided_at"] for v in audit if v["upload_id"].startswith("good-after-")]
    assert max(good_done) < min(slowest), "a slow reference held back uploads queued after it"
    assert still_running and exit_code == 0, worker.log_tail()
