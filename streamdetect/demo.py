"""``streamdetect demo``: the whole path once, on the local broker, in about a minute.

Applies the topics, starts a worker process, submits a handful of generated images (one with
its own caption, so captioning is skipped) and three bad uploads (undecodable bytes, an
unreachable URL, a refused file:// reference), prints every verdict, dead letter and alert as
it arrives, and stops the worker. Exit 0 only if every upload was accounted for.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from PIL import Image, ImageDraw

from streamdetect.config import Settings
from streamdetect.events import Upload, now_iso
from streamdetect.stream.admin import apply_topics
from streamdetect.stream.clients import follow, publish_uploads, reference_for
from streamdetect.topic_specs import load_specs

TINY_DEMO_THRESHOLD = 0.97
SHAPES = [("red", "circle"), ("blue", "square"), ("green", "triangle"), ("yellow", "circle"), ("white", "square")]


def demo_images(folder: Path) -> list[tuple[str, str | None]]:
    """(target, caption) pairs: five drawn scenes, then three uploads that cannot be judged."""
    targets: list[tuple[str, str | None]] = []
    for i, (colour, shape) in enumerate(SHAPES):
        path = folder / f"{colour}-{shape}.png"
        _draw(colour, shape).save(path)
        # The last one carries the platform's own caption, so the worker skips captioning it.
        targets.append((str(path), f"a {colour} {shape}" if i == len(SHAPES) - 1 else None))
    corrupt = folder / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    targets += [(str(corrupt), None), ("https://127.0.0.1:9/unreachable.png", None), ("file:///etc/hostname", None)]
    return targets


def _draw(colour: str, shape: str) -> Image.Image:
    image = Image.new("RGB", (64, 64), "gray")
    draw = ImageDraw.Draw(image)
    box = (16, 16, 48, 48)
    {"circle": draw.ellipse, "square": draw.rectangle}.get(shape, lambda b, fill: draw.polygon(
        [(32, 12), (52, 50), (12, 50)], fill=fill))(box, fill=colour)
    return image


async def run_demo(settings: Settings, timeout_s: float) -> int:
    for change in await apply_topics(settings.bootstrap, load_specs(), settings.topic_prefix):
        print(f"topic {change.topic}: {change.action} {change.detail}")
    run_dir = Path(".run")
    run_dir.mkdir(exist_ok=True)
    worker_log = run_dir / "demo-worker.log"
    worker = _start_worker(settings, worker_log)
    print(f"worker started (pid {worker.pid}, log {worker_log}); it loads models and joins the group")
    try:
        code = await _submit_and_watch(settings, timeout_s)
        _print_metrics(settings)
        return code
    finally:
        _stop(worker)
        print(f"worker stopped (exit code {worker.returncode})")


SHOWN_METRICS = ("streamdetect_verdicts_total", "streamdetect_dead_letters_total",
                 "streamdetect_batch_size_count", "streamdetect_uploads_in_flight")


def _print_metrics(settings: Settings) -> None:
    """Scrape the worker's Prometheus endpoint once, as a monitoring system would."""
    url = f"http://{settings.metrics_host}:{settings.metrics_port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            lines = response.read().decode().splitlines()
    except OSError as exc:
        print(f"metrics: could not scrape {url}: {exc}")
        return
    print(f"metrics from {url}:")
    for line in lines:
        if line.startswith(SHOWN_METRICS):
            print(f"  {line}")


def _start_worker(settings: Settings, log_path: Path) -> subprocess.Popen:
    env = {**os.environ, "KAFKA_BOOTSTRAP": settings.bootstrap, "STREAMDETECT_TOPIC_PREFIX": settings.topic_prefix,
           "STREAMDETECT_PROFILE": settings.profile, "STREAMDETECT_MODEL_DIR": str(settings.model_dir)}
    log = open(log_path, "w")
    args = ["--max-wait-ms", "50"]
    if settings.profile == "tiny":
        # Random weights score everything alike (~0.95-0.99); a threshold inside that band makes
        # the alert path visible. The flags mean nothing about the images: see README.
        args += ["--threshold", str(TINY_DEMO_THRESHOLD)]
    return subprocess.Popen([sys.executable, "-m", "streamdetect.cli", "worker", *args],
                            stdout=log, stderr=subprocess.STDOUT, env=env)


def _stop(worker: subprocess.Popen) -> None:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


async def _submit_and_watch(settings: Settings, timeout_s: float) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        targets = demo_images(Path(tmp))
        uploads = [Upload(upload_id=f"demo-{int(time.time())}-{i}", image=_reference(t), caption=c,
                          submitted_at=now_iso()) for i, (t, c) in enumerate(targets)]
    labels = [Path(t).name if not t.startswith(("https:", "file:")) else t for t, _ in targets]
    outcomes: asyncio.Queue = asyncio.Queue()
    watchers = [asyncio.create_task(_collect(settings, name, outcomes)) for name in ("audit", "dlq", "alerts")]
    await publish_uploads(settings.bootstrap, settings.topic("uploads"), uploads, labels)
    print(f"submitted {len(uploads)} uploads: " + ", ".join(labels))
    pending = {u.upload_id: label for u, label in zip(uploads, labels)}
    done = await _await_outcomes(outcomes, pending, timeout_s)
    for watcher in watchers:
        watcher.cancel()
    if pending:
        print(f"FAILED: no verdict or dead letter within {timeout_s:.0f}s for {sorted(pending.values())}")
        return 1
    print(f"done: {done['audit']} verdicts ({done['alerts']} flagged), {done['dlq']} dead letters, nothing lost")
    return 0


def _reference(target: str) -> str:
    return target if target.startswith(("https:", "file:")) else reference_for(target)


async def _collect(settings: Settings, name: str, outcomes: asyncio.Queue) -> None:
    # From the beginning, filtered by upload id later: no race with the worker's first verdicts.
    try:
        async for event in follow(settings.bootstrap, settings.topic(name), from_beginning=True):
            await outcomes.put((name, event))
    except Exception as exc:  # noqa: BLE001 - reported to the waiting loop instead of lost in a task
        await outcomes.put(("error", {"error": f"reading {settings.topic(name)}: {exc}"}))


async def _await_outcomes(outcomes: asyncio.Queue, pending: dict[str, str], timeout_s: float) -> dict[str, int]:
    """Print each outcome for our uploads as it arrives, until every upload has one and every
    flagged verdict's alert has arrived too, or time is up."""
    labels = dict(pending)
    counts = {"audit": 0, "dlq": 0, "alerts": 0}
    flagged: set[str] = set()
    alerted: set[str] = set()
    deadline = time.monotonic() + timeout_s
    while (pending or flagged - alerted) and time.monotonic() < deadline:
        try:
            name, event = await asyncio.wait_for(outcomes.get(), timeout=deadline - time.monotonic())
        except TimeoutError:
            break
        if name == "error":
            print(f"FAILED: {event['error']}")
            break
        upload_id = event.get("upload_id")
        if upload_id not in labels or (name != "alerts" and upload_id not in pending):
            continue  # someone else's upload, or a replayed duplicate
        counts[name] += 1
        if name == "alerts":
            alerted.add(upload_id)
            print(f"  ALERT     {labels[upload_id]:28} score {event['score']:.3f} < threshold {event['threshold']}")
            continue
        pending.pop(upload_id)
        if name == "audit":
            if event["flagged"]:
                flagged.add(upload_id)
            print(f"  verdict   {labels[upload_id]:28} flagged={event['flagged']!s:5} score={event['score']:.3f} "
                  f"caption[{event['caption_source']}]={event['caption']!r}")
        else:
            print(f"  dead      {labels[upload_id]:28} reason={event['reason']}: {event['detail']}")
    if flagged - alerted:
        pending.update({u: f"alert for {labels[u]}" for u in flagged - alerted})
    return counts
