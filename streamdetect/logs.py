"""Structured logs (structlog): one event name and key-value fields per line, JSON if asked.

Configured once, at start, by the CLI. Logs go to stderr so stdout stays for command output
(verdicts, JSON lines) that users pipe elsewhere. The standard library's loggers (faust,
aiokafka, warnings) go through the same renderer (``stdlib_config``, which the worker hands to
faust), so with ``log_json`` every line the worker writes is one JSON object; and a message
that repeats (a broker outage makes aiokafka log the same error many times a second) is let
through once per window with a count of those held back.
"""

from __future__ import annotations

import logging
import logging.config
import sys
import time
from typing import Any

import structlog

REPEAT_WINDOW_S = 10.0
_SHARED = [structlog.contextvars.merge_contextvars, structlog.processors.add_log_level,
           structlog.processors.TimeStamper(fmt="iso", utc=True), structlog.processors.format_exc_info]


def _renderer(json: bool) -> Any:
    return structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)


def configure(level: str = "info", json: bool = False) -> None:
    numeric = getattr(logging, level.upper())
    structlog.configure(
        processors=[*_SHARED, _renderer(json)],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.config.dictConfig(stdlib_config(max(numeric, logging.WARNING), json))
    logging.captureWarnings(True)


def stdlib_config(level: int, json: bool) -> dict[str, Any]:
    """A logging.config.dictConfig for the standard library's loggers: one line per record,
    rendered like structlog's, repeats held back."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"streamdetect": {"()": stdlib_formatter, "json": json}},
        "filters": {"repeats": {"()": RepeatLimiter}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr",
                                "formatter": "streamdetect", "filters": ["repeats"]}},
        "root": {"level": level, "handlers": ["stderr"]},
    }


def stdlib_formatter(json: bool) -> logging.Formatter:
    return structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, _renderer(json)],
        foreign_pre_chain=[*_SHARED, structlog.stdlib.add_logger_name],
    )


class RepeatLimiter(logging.Filter):
    """Lets a warning or error through once per ``window_s`` per (logger, message); the next one
    let through says how many were held back. Bounded: it forgets everything past 1000 kinds."""

    def __init__(self, window_s: float = REPEAT_WINDOW_S) -> None:
        super().__init__()
        self.window_s = window_s
        self._seen: dict[tuple[str, str], list[float]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key, now = (record.name, str(record.msg)[:200]), time.monotonic()
        entry = self._seen.get(key)
        if entry is not None and now - entry[0] < self.window_s:
            entry[1] += 1
            return False
        if entry is not None and entry[1]:
            record.msg = f"{record.msg} [and {int(entry[1])} more like it in {self.window_s:.0f}s, held back]"
        if len(self._seen) >= 1000:
            self._seen.clear()
        self._seen[key] = [now, 0]
        return True
