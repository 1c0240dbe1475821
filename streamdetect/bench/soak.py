"""`streamdetect bench-soak`: stream uploads through one worker for a while and report how its
memory grows (the slope of its resident set size in MB per hour, fitted after a warm-up).

The worker is the real one on instant null models, so what is measured is what lives as long as
the worker: the stream layer, the handler, the pipeline's queues and bookkeeping. Nothing
long-lived may grow with the number of uploads.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from streamdetect.bench.run import bench_images, data_uri
from streamdetect.bench.stream_contenders import create_topics, start_worker
from streamdetect.events import Upload, encode

SAMPLE_EVERY_S = 5.0
WARMUP_SHARE = 0.2  # the first fifth (imports, first batches, allocator growth) is not fitted


def rss_mb(pid: int) -> float:
    """Resident set size of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def slope_mb_per_hour(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB) samples, in MB per hour."""
    n = len(samples)
    mean_t, mean_m = sum(t for t, _ in samples) / n, sum(m for _, m in samples) / n
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    return 0.0 if var == 0 else 3600 * sum((t - mean_t) * (m - mean_m) for t, m in samples) / var


async def soak(bootstrap: str, log_dir: Path, minutes: float, rate: float) -> dict[str, Any]:
    prefix = f"soak-{uuid.uuid4().hex[:8]}-"
    await create_topics(bootstrap, [prefix])
    worker = start_worker("soak", bootstrap, prefix, {}, log_dir, null_models=True)
    try:
        await worker.wait_ready()
        samples, sent = await _stream(bootstrap, prefix, minutes * 60, rate, worker.proc.pid)
    finally:
        worker.stop()
    fitted = samples[int(len(samples) * WARMUP_SHARE):]
    return {"minutes": minutes, "uploads_sent": sent, "rate_per_s": rate, "rss_start_mb": round(samples[0][1], 1),
            "rss_end_mb": round(samples[-1][1], 1), "samples": len(samples),
            "rss_slope_mb_per_hour": round(slope_mb_per_hour(fitted), 2)}


async def _stream(bootstrap: str, prefix: str, duration_s: float, rate: float,
                  pid: int) -> tuple[list[tuple[float, float]], int]:
    images = [data_uri(image) for image in bench_images(16)]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    samples: list[tuple[float, float]] = []
    try:
        start, sent, next_sample = time.monotonic(), 0, 0.0
        while (elapsed := time.monotonic() - start) < duration_s:
            if elapsed >= next_sample:
                samples.append((elapsed, rss_mb(pid)))
                next_sample += SAMPLE_EVERY_S
            key = f"{prefix}{sent:08d}"
            await producer.send(f"{prefix}uploads", encode(Upload(key, images[sent % len(images)]).to_dict()),
                                key=key.encode())
            sent += 1
            await asyncio.sleep(max(0.0, start + sent / rate - time.monotonic()))
        await producer.flush()
    finally:
        await producer.stop()
    return samples, sent
