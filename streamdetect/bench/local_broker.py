"""A throwaway Apache Kafka broker on free loopback ports, started and stopped by
deploy/kafka/kafka.sh, for the tests and `streamdetect bench`; or the broker named by
KAFKA_BOOTSTRAP, which is then left alone."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
KAFKA_SH = REPO / "deploy" / "kafka" / "kafka.sh"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """A broker on free loopback ports with its own data folder, or the external one."""

    def __init__(self, run_dir: Path, external: str | None = None) -> None:
        self.external = external if external is not None else os.environ.get("KAFKA_BOOTSTRAP")
        port = free_port()
        self.env = {**os.environ, "KAFKA_PORT": str(port), "KAFKA_CONTROLLER_PORT": str(free_port()),
                    "KAFKA_RUN_DIR": str(run_dir)}
        self.env.pop("KAFKA_BOOTSTRAP", None)  # kafka.sh does nothing when it is set
        self.bootstrap = self.external or f"127.0.0.1:{port}"

    def start(self) -> None:
        if self.external:
            return
        if not KAFKA_SH.is_file():
            raise FileNotFoundError(f"{KAFKA_SH} not found: starting a local broker needs a source checkout; "
                                    "set KAFKA_BOOTSTRAP to use a running broker")
        subprocess.run([str(KAFKA_SH), "start"], env=self.env, check=True, timeout=180)

    def stop(self) -> None:
        if not self.external:
            subprocess.run([str(KAFKA_SH), "stop"], env=self.env, check=True, timeout=60)

    def __enter__(self) -> Broker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
