"""Settings: one frozen object, read once at start from defaults, a TOML file, the environment
(``STREAMDETECT_<NAME>``; ``KAFKA_BOOTSTRAP`` too) and command-line flags, in that order of
precedence (flags win). A bad value stops start-up with an error naming the setting."""

from __future__ import annotations

import dataclasses
import os
import socket
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

ENV_PREFIX = "STREAMDETECT_"


class ConfigError(ValueError):
    """A setting has a bad value; the message names it and says what is accepted."""


def _default_cache() -> Path:
    return Path(os.environ.get("STREAMDETECT_CACHE", Path.home() / ".cache" / "streamdetect"))


@dataclass(frozen=True)
class Settings:
    # Kafka
    bootstrap: str = "127.0.0.1:19092"
    topic_prefix: str = ""
    group_id: str = "streamdetect"
    # Models and decision
    profile: str = "tiny"
    model_dir: Path = field(default_factory=lambda: _default_cache() / "models")
    device: str = "cpu"
    dtype: str = "fp32"
    threshold: float = 0.5
    seed: int = 0
    # Batching and flow control
    max_batch: int = 8
    max_wait_ms: float = 20.0
    max_in_flight: int = 64
    # Image references
    max_image_bytes: int = 10 * 1024 * 1024
    max_image_pixels: int = 4096 * 4096
    allow_file: bool = False
    allow_http: bool = False
    fetch_timeout_s: float = 10.0
    s3_endpoint: str | None = None
    s3_region: str | None = None
    # Operations
    worker_name: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    log_level: str = "info"
    log_json: bool = False

    def __post_init__(self) -> None:
        _check(self.threshold, -1.0 <= self.threshold <= 1.0, "threshold", "a cosine similarity in [-1, 1]")
        for name in ("max_batch", "max_in_flight", "max_image_bytes", "max_image_pixels"):
            _check(getattr(self, name), getattr(self, name) >= 1, name, "an integer >= 1")
        _check(self.max_wait_ms, self.max_wait_ms >= 0, "max_wait_ms", "a number >= 0")
        _check(self.fetch_timeout_s, self.fetch_timeout_s > 0, "fetch_timeout_s", "a number > 0")
        _check(self.device, self.device == "cpu" or self.device.startswith("cuda"), "device", "cpu or cuda[:N]")
        _check(self.dtype, self.dtype in ("fp32", "fp16", "bf16"), "dtype", "fp32, fp16 or bf16")
        _check(self.log_level, self.log_level in ("debug", "info", "warning", "error"), "log_level",
               "debug, info, warning or error")
        _check(self.bootstrap, bool(self.bootstrap.strip()), "bootstrap", "host:port[,host:port...]")

    def topic(self, name: str) -> str:
        """The full name of one of the project's topics (uploads, alerts, audit, dlq)."""
        return f"{self.topic_prefix}{name}"

    @classmethod
    def load(
        cls,
        config_file: Path | None = None,
        env: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> Settings:
        """Merge file < environment < overrides (flags); ``None`` overrides are ignored."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        if config_file is not None:
            values.update(_read_file(config_file))
        values.update(_read_env(env))
        values.update({k: v for k, v in (overrides or {}).items() if v is not None})
        return cls(**{name: _coerce(name, value) for name, value in values.items()})

    def as_dict(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(self).items()}


def _check(value: Any, ok: bool, name: str, expected: str) -> None:
    if not ok:
        raise ConfigError(f"setting {name}={value!r} is invalid: expected {expected}")


_FIELDS = {f.name: f for f in fields(Settings)}


def _read_file(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise ConfigError(f"config file {path} has unknown settings {unknown}; known: {sorted(_FIELDS)}")
    return data


def _read_env(env: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if env.get("KAFKA_BOOTSTRAP"):
        values["bootstrap"] = env["KAFKA_BOOTSTRAP"]
    for name in _FIELDS:
        key = ENV_PREFIX + name.upper()
        if key in env:
            values[name] = env[key]
    return values


def _coerce(name: str, value: Any) -> Any:
    """Turn a string from the environment into the field's type, or fail naming the field."""
    if name not in _FIELDS:
        raise ConfigError(f"unknown setting {name!r}; known: {sorted(_FIELDS)}")
    kind = str(_FIELDS[name].type)
    if not isinstance(value, str) or kind == "str":
        return Path(value) if kind == "Path" and isinstance(value, str) else value
    try:
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "bool":
            return _parse_bool(value)
        if kind == "Path":
            return Path(value)
        if kind == "str | None":
            return value or None
    except ValueError as exc:
        raise ConfigError(f"setting {name}={value!r} is invalid: expected {kind}") from exc
    return value


def _parse_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(value)
