"""The worker's HTTP endpoint: /metrics (Prometheus), /healthz (alive), /readyz (ready to judge).

A small threaded server of its own, off the event loop, so a scrape never competes with Kafka
heartbeats; liveness still tracks the loop through Health's heartbeat, so a wedged loop turns
/healthz red even though this thread keeps answering.
"""

from __future__ import annotations

import errno
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streamdetect.stream.metrics import Health, WorkerMetrics

log = structlog.get_logger(__name__)


class MetricsServer:
    def __init__(self, metrics: WorkerMetrics, health: Health, host: str, port: int) -> None:
        self._server = ThreadingHTTPServer((host, port), _handler(metrics, health))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics-http", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def start_metrics_server(metrics: WorkerMetrics, health: Health, host: str, port: int) -> MetricsServer | None:
    """Serve on host:port; port 0 means off. A port in use is logged, not fatal: several local
    workers on one host should not crash each other over an observability endpoint."""
    if port == 0:
        return None
    try:
        server = MetricsServer(metrics, health, host, port).start()
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        log.error("metrics.port_in_use", host=host, port=port,
                  hint="set metrics_port (STREAMDETECT_METRICS_PORT) to a free port, or 0 for none")
        return None
    log.info("metrics.serving", url=f"http://{host}:{server.address[1]}/metrics")
    return server


def _handler(metrics: WorkerMetrics, health: Health) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._reply(200, generate_latest(metrics.registry), CONTENT_TYPE_LATEST)
            elif path in ("/healthz", "/readyz"):
                ok, detail = health.alive() if path == "/healthz" else health.ready()
                self._reply(200 if ok else 503, (detail + "\n").encode(), "text/plain; charset=utf-8")
            else:
                self._reply(404, b"not found: try /metrics, /healthz or /readyz\n", "text/plain; charset=utf-8")

        def _reply(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - scrapes are not events
            return

    return Handler
