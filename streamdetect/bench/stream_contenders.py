"""The broker half of `streamdetect bench`: start the processes under test, send a burst of
uploads, and time each one's arrival on the output topic.

Every mode is measured the same way: the processes are started and ready (worker: /readyz;
bare loop: ``ready`` on stdout) and warmed with a few uploads first; then, at t0, the whole burst
is sent, and an upload's latency is the time from t0 to its record's arrival on ``audit`` in
this process (same clock, same reader for every mode).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streamdetect import events
from streamdetect.events import Upload
from streamdetect.stream.admin import apply_topics
from streamdetect.bench.local_broker import free_port
from streamdetect.events.topic_specs import MAX_MESSAGE_BYTES, load_specs

READY_TIMEOUT_S = 180
WARMUP = 4


@dataclass
class Contender:
    """One process under test, consuming ``{prefix}uploads`` and producing to ``{prefix}audit``."""

    name: str
    prefix: str
    proc: subprocess.Popen
    metrics_port: int | None  # workers say they are ready on /readyz; the bare loop on stdout

    async def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bench: {self.name} exited with {self.proc.returncode} before it was ready")
            if await asyncio.to_thread(self._ready):
                return
            await asyncio.sleep(0.5)
        raise TimeoutError(f"bench: {self.name} not ready after {READY_TIMEOUT_S}s")

    def _ready(self) -> bool:
        if self.metrics_port is None:
            return self.proc.stdout is not None and self.proc.stdout.readline().strip() == b"ready"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/readyz", timeout=2) as reply:
                return reply.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_worker(name: str, bootstrap: str, prefix: str, env: dict[str, str], log_dir: Path,
                 null_models: bool) -> Contender:
    port = free_port()
    env = {**os.environ, **env, "KAFKA_BOOTSTRAP": bootstrap, "STREAMDETECT_TOPIC_PREFIX": prefix,
           "STREAMDETECT_GROUP_ID": f"{prefix}workers", "STREAMDETECT_METRICS_PORT": str(port),
           "STREAMDETECT_METRICS_HOST": "127.0.0.1", "STREAMDETECT_LOG_JSON": "true"}
    args = ["-m", "streamdetect.bench.procs", "null-worker"] if null_models else ["-m", "streamdetect.cli", "worker"]
    log = open(log_dir / f"{name}.log", "wb")
    proc = subprocess.Popen([sys.executable, *args], env=env, stdout=log, stderr=subprocess.STDOUT)
    return Contender(name, prefix, proc, port)


def start_ceiling(bootstrap: str, prefix: str, env: dict[str, str], log_dir: Path) -> Contender:
    """The worker's per-upload work in a bare loop batched per poll (bench/ceiling.py); it says
    ``ready`` on stdout, like the bare loop, and logs to stderr."""
    env = {**os.environ, **env, "KAFKA_BOOTSTRAP": bootstrap, "STREAMDETECT_TOPIC_PREFIX": prefix,
           "STREAMDETECT_GROUP_ID": f"{prefix}workers", "STREAMDETECT_METRICS_PORT": "0",
           "STREAMDETECT_LOG_JSON": "true"}
    log = open(log_dir / "stream_ceiling.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "streamdetect.bench.procs", "ceiling"], env=env,
                            stdout=subprocess.PIPE, stderr=log)
    return Contender("stream_ceiling", prefix, proc, None)


def start_bare(bootstrap: str, prefix: str, log_dir: Path) -> Contender:
    log = open(log_dir / "bare_kafka.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamdetect.bench.procs", "bare", bootstrap, f"{prefix}uploads", f"{prefix}audit",
         f"{prefix}bare"], stdout=subprocess.PIPE, stderr=log)
    return Contender("bare_kafka", prefix, proc, None)


async def create_topics(bootstrap: str, prefixes: list[str]) -> None:
    for prefix in prefixes:
        await apply_topics(bootstrap, load_specs(), prefix)


async def measure(bootstrap: str, contender: Contender, images: list[str], run_id: str,
                  timeout_s: float = 300) -> tuple[list[float], float]:
    """Warm up, then send the burst; return (per-upload latency in s from t0, seconds to the last)."""
    await _round(bootstrap, contender.prefix, images[:WARMUP], f"{run_id}-warm", timeout_s)
    return await _round(bootstrap, contender.prefix, images, run_id, timeout_s)


async def _round(bootstrap: str, prefix: str, images: list[str], run_id: str,
                 timeout_s: float) -> tuple[list[float], float]:
    payloads = [(f"{run_id}-{i}".encode(), _encoded(f"{run_id}-{i}", image)) for i, image in enumerate(images)]
    wanted = {key for key, _ in payloads}
    reader = await _reader(bootstrap, f"{prefix}audit")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=MAX_MESSAGE_BYTES)
    await producer.start()
    try:
        t0 = time.perf_counter()
        sends = [await producer.send(f"{prefix}uploads", value, key=key) for key, value in payloads]
        arrivals = await asyncio.wait_for(_arrivals(reader, wanted, t0), timeout_s)
        await asyncio.gather(*sends)
    except TimeoutError as exc:
        raise TimeoutError(f"bench: not every upload of {run_id} came out on {prefix}audit in {timeout_s}s") from exc
    finally:
        await producer.stop()
        await reader.stop()
    latencies = [arrivals[key] for key, _ in payloads]
    return latencies, max(latencies)


def _encoded(upload_id: str, image: str) -> bytes:
    event = Upload(upload_id=upload_id, image=image, submitted_at=events.now_iso()).to_dict()
    events.validate("upload", event)
    return events.encode(event)


async def _reader(bootstrap: str, topic: str) -> AIOKafkaConsumer:
    """Positioned at the current end of every partition, so only this round's records count."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="latest", fetch_max_wait_ms=50)
    await consumer.start()
    for _ in range(40):
        if consumer.assignment():
            break
        await asyncio.sleep(0.25)
    for tp in consumer.assignment():
        await consumer.position(tp)  # resolve "latest" now, before anything is sent
    return consumer


async def _arrivals(reader: AIOKafkaConsumer, wanted: set[bytes], t0: float) -> dict[bytes, float]:
    arrivals: dict[bytes, float] = {}
    while len(arrivals) < len(wanted):
        batch = await reader.getmany(timeout_ms=100)
        now = time.perf_counter() - t0
        for records in batch.values():
            for record in records:
                if record.key in wanted and record.key not in arrivals:  # a replay counts once
                    arrivals[record.key] = now
    return arrivals
