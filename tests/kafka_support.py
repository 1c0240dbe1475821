"""Real Apache Kafka for tests: one broker per session, started and stopped by
deploy/kafka/kafka.sh (or the broker named by KAFKA_BOOTSTRAP), and worker processes."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from streamdetect.stream.clients import follow
from streamdetect.bench.local_broker import KAFKA_SH, REPO, Broker, free_port

__all__ = ["KAFKA_SH", "REPO", "Broker", "WorkerProcess", "free_port", "read_until", "wait_until"]


class WorkerProcess:
    """``streamdetect worker`` as a real child process, logging to a file."""

    def __init__(self, env: dict[str, str], log_path: Path, *args: str) -> None:
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "streamdetect.cli", "worker", *args],
                                     env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def terminate(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


async def read_until(bootstrap: str, topic: str, done: Any, timeout_s: float) -> list[dict]:
    """Read ``topic`` from the beginning until ``done(events)`` holds or time runs out."""
    seen: list[dict] = []

    async def reader() -> None:
        async for event in follow(bootstrap, topic, from_beginning=True):
            seen.append(event)
            if done(seen):
                return

    try:
        await asyncio.wait_for(reader(), timeout_s)
    except TimeoutError:
        pass
    return seen


def wait_until(predicate: Any, timeout_s: float, interval_s: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return False
