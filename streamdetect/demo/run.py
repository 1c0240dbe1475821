"""``streamdetect demo``: the whole path once, on the local broker, in about a minute.

Prepares the uploads (demo_inputs.py: with the trained ``mini`` profile, a threshold fitted on
clean scenes and PGD-attacked copies of test scenes), applies the topics, starts a worker
process, submits the uploads, prints every verdict, dead letter and alert as it arrives, and
stops the worker. Exit 0 only if every upload was accounted for; a worker that dies ends the
demo at once with its error.
"""

from __future__ import annotations

import asyncio
import os
import signal
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from streamdetect.settings import Settings
from streamdetect.demo.inputs import (TINY_DEMO_THRESHOLD, DemoError, DemoUpload, bad_uploads, mini_uploads,
                                      tiny_uploads)
from streamdetect.events import Upload, now_iso
from streamdetect.stream.admin import apply_topics
from streamdetect.stream.clients import follow, publish_uploads, reference_for
from streamdetect.events.topic_specs import load_specs

async def run_demo(settings: Settings, timeout_s: float, run_dir: Path = Path(".run")) -> int:
    folder = run_dir / "demo"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    env = _env(settings)
    try:
        uploads, worker_args = _prepare(settings, folder, env)
    except DemoError as exc:
        print(f"FAILED: {exc}")
        return 1
    uploads += bad_uploads(folder, settings)
    worker_args += ["--evidence-store", str((folder / "evidence").resolve())]
    for change in await apply_topics(settings.bootstrap, load_specs(), settings.topic_prefix):
        print(f"topic {change.topic}: {change.action} {change.detail}")
    worker_log = run_dir / "demo-worker.log"
    worker = _start_worker(env, worker_args, worker_log)
    print(f"worker started (pid {worker.pid}, log {worker_log}); it loads models and joins the group")
    try:
        code = await _submit_and_watch(settings, uploads, timeout_s, worker, worker_log)
        _print_metrics(settings)
        print(f"pictures: {folder} (attack/grid.png: input | regeneration | attacked | regeneration)"
              if settings.profile.startswith("mini") else f"pictures: {folder}")
        print(f"review the alerts in the moderator console: `make console` (or `streamdetect console "
              f"--evidence-store {(folder / 'evidence').resolve()}`), then open http://127.0.0.1:8471/ in a browser")
        return code
    finally:
        _stop(worker)
        print(f"worker stopped (exit code {worker.returncode})")


def _prepare(settings: Settings, folder: Path, env: dict[str, str]) -> tuple[list[DemoUpload], list[str]]:
    args = ["--max-wait-ms", "50"]
    if settings.profile.startswith("mini"):
        uploads, threshold_file = mini_uploads(folder, env)
        return uploads, [*args, "--threshold-file", str(threshold_file)]
    if settings.profile == "tiny":
        # Random weights score everything alike (~0.95-0.99); a threshold inside that band makes
        # the alert path visible. The flags mean nothing about the images: see README.
        return tiny_uploads(folder), [*args, "--threshold", str(TINY_DEMO_THRESHOLD)]
    return tiny_uploads(folder), args  # real weights: the configured threshold


def _env(settings: Settings) -> dict[str, str]:
    return {**os.environ, "KAFKA_BOOTSTRAP": settings.bootstrap, "STREAMDETECT_TOPIC_PREFIX": settings.topic_prefix,
            "STREAMDETECT_PROFILE": settings.profile, "STREAMDETECT_MODEL_DIR": str(settings.model_dir)}


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


def _start_worker(env: dict[str, str], args: list[str], log_path: Path) -> subprocess.Popen:
    log = open(log_path, "w")
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


async def _submit_and_watch(settings: Settings, demo: list[DemoUpload], timeout_s: float,
                            worker: subprocess.Popen, worker_log: Path) -> int:
    uploads = [Upload(upload_id=f"demo-{int(time.time())}-{i}", image=_reference(d.target), caption=d.caption,
                      submitted_at=now_iso()) for i, d in enumerate(demo)]
    labels = [d.label for d in demo]
    outcomes: asyncio.Queue = asyncio.Queue()
    watchers = [asyncio.create_task(_collect(settings, name, outcomes)) for name in ("audit", "dlq", "alerts")]
    watchers.append(asyncio.create_task(_watch_worker(worker, worker_log, outcomes)))
    await publish_uploads(settings.bootstrap, settings.topic("uploads"), uploads, labels)
    print(f"submitted {len(uploads)} uploads: " + ", ".join(labels))
    pending = {u.upload_id: label for u, label in zip(uploads, labels)}
    done = await _await_outcomes(outcomes, pending, timeout_s)
    for watcher in watchers:
        watcher.cancel()
    if pending:
        print(f"FAILED: no verdict or dead letter for {sorted(pending.values())}")
        return 1
    print(f"done: {done['audit']} verdicts ({done['alerts']} flagged), {done['dlq']} dead letters, nothing lost")
    return 0


def _reference(target: str) -> str:
    return target if target.startswith(("https:", "file:")) else reference_for(target)


async def _watch_worker(worker: subprocess.Popen, log_path: Path, outcomes: asyncio.Queue) -> None:
    """A worker that dies (bad settings, models missing) ends the wait now, not at the timeout."""
    while worker.poll() is None:
        await asyncio.sleep(0.5)
    tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-5:])
    await outcomes.put(("error", {"error": f"the worker exited with code {worker.returncode}; "
                                           f"the end of {log_path}:\n{tail}"}))


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
            print(f"  ALERT     {labels[upload_id]:28} score {event['score']:.3f} < threshold {event['threshold']:.3f}")
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
