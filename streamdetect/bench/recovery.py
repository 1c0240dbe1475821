"""`streamdetect bench-recovery`: how long a killed worker's partitions sit idle, and how many
uploads are judged twice, measured on the real broker.

Two workers (the real worker on instant null models, so only the stream layer is measured)
share one group. Uploads are sent at a steady rate; one worker is SIGKILLed mid-stream and
uploads keep coming. Reported: the worst and median time from sending an upload to its first
verdict among those sent after the kill (the worst is the takeover time of the killed worker's
partitions), how many uploads got more than one verdict, and every upload's fate (none may be
lost). The bound the worker promises is "in flight plus published since the last commit".
"""

from __future__ import annotations

import asyncio
import signal
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streamdetect.bench.stream_contenders import create_topics, start_worker
from streamdetect.bench.run import bench_images, data_uri
from streamdetect.events import Upload, encode


async def measure_recovery(bootstrap: str, log_dir: Path, rate: float = 20.0, before_s: float = 6.0,
                           after_s: float = 20.0, env: dict[str, str] | None = None) -> dict[str, Any]:
    prefix = f"recovery-{uuid.uuid4().hex[:8]}-"
    await create_topics(bootstrap, [prefix])
    workers = [start_worker(name, bootstrap, prefix, env or {}, log_dir, null_models=True) for name in ("a", "b")]
    try:
        await asyncio.gather(*(w.wait_ready() for w in workers))
        await asyncio.sleep(3)  # let the group settle on both members before the clock starts
        arrivals: dict[str, list[float]] = {}
        reader = asyncio.create_task(_collect(bootstrap, f"{prefix}audit", arrivals))
        sent, killed_at = await _stream(bootstrap, prefix, rate, before_s, after_s, workers[0].proc)
        await _wait_all(arrivals, sent, timeout_s=120)
        reader.cancel()
    finally:
        for worker in workers:
            worker.stop()
    after = [arrivals[key][0] - at for key, at in sent.items() if at >= killed_at and key in arrivals]
    return {
        "uploads": len(sent), "lost": sum(1 for key in sent if key not in arrivals),
        "judged_twice_or_more": sum(1 for key in sent if len(arrivals.get(key, [])) > 1),
        "worst_latency_after_kill_s": round(max(after), 2), "median_latency_after_kill_s": round(
            statistics.median(after), 2), "rate_per_s": rate, "killed_after_s": before_s,
    }


async def _stream(bootstrap: str, prefix: str, rate: float, before_s: float, after_s: float,
                  victim: Any) -> tuple[dict[str, float], float]:
    """Send uploads at ``rate`` per second; SIGKILL ``victim`` after ``before_s``. Returns send times."""
    image = data_uri(bench_images(1)[0])
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    sent: dict[str, float] = {}
    killed_at = float("inf")
    try:
        start, i = time.monotonic(), 0
        while time.monotonic() - start < before_s + after_s:
            if killed_at == float("inf") and time.monotonic() - start >= before_s:
                victim.send_signal(signal.SIGKILL)
                killed_at = time.monotonic()
            key = f"{prefix}{i:06d}"
            await producer.send_and_wait(f"{prefix}uploads", encode(Upload(key, image).to_dict()), key=key.encode())
            sent[key] = time.monotonic()
            i += 1
            await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
    finally:
        await producer.stop()
    return sent, killed_at


async def _collect(bootstrap: str, topic: str, arrivals: dict[str, list[float]]) -> None:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    try:
        while True:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                now = time.monotonic()
                for record in records:
                    arrivals.setdefault(record.key.decode(), []).append(now)
    finally:
        await consumer.stop()


async def _wait_all(arrivals: dict[str, list[float]], sent: dict[str, float], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(key not in arrivals for key in sent):
        await asyncio.sleep(0.5)
    await asyncio.sleep(3)  # late duplicates still count
