"""Real Apache Kafka for tests: one broker per session, started and stopped by
deploy/kafka/kafka.sh (or the broker named by KAFKA_BOOTSTRAP), and worker processes."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from streamdetect.stream.clients import follow

REPO = Path(__file__).resolve().parents[1]
KAFKA_SH = REPO / "deploy" / "kafka" / "kafka.sh"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """A broker on free loopback ports with its own data folder, or the external one."""

    def __init__(self, run_dir: Path) -> None:
        self.external = os.environ.get("KAFKA_BOOTSTRAP")
        port = free_port()
        self.env = {**os.environ, "KAFKA_PORT": str(port), "KAFKA_CONTROLLER_PORT": str(free_port()),
                    "KAFKA_RUN_DIR": str(run_dir)}
        self.bootstrap = self.external or f"127.0.0.1:{port}"

    def start(self) -> None:
        if not self.external:
            subprocess.run([str(KAFKA_SH), "start"], env=self.env, check=True, timeout=180)

    def stop(self) -> None:
        if not self.external:
            subprocess.run([str(KAFKA_SH), "stop"], env=self.env, check=True, timeout=60)


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
