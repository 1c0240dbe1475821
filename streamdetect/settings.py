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
    cpu_threads: int = 1  # torch intra-op threads; 0 = torch's default (see models/_torch.py)
    dtype: str = "fp32"
    threshold: float = 0.5
    seed: int = 0
    # MirrorCheck mode: vanilla (one generator, the whole encoder ensemble) or stochastic (per
    # request: a generator from generator_zoo, encoders_per_request encoders from encoder_zoo and
    # a one-time weight perturbation of scale noise_scale; see detector/stochastic.py).
    mode: str = "vanilla"
    encoder_zoo: str = ""  # comma-separated encoder specs; empty = the profile's (models/zoo.py)
    generator_zoo: str = ""  # comma-separated generator specs; empty = the profile's
    encoders_per_request: int = 0  # k; 0 = the whole encoder zoo
    noise_scale: float = 5e-4  # std of the weight noise (paper: 5e-6 .. 1e-3); 0 = none
    # Written by `streamdetect calibrate`; when set, its threshold replaces `threshold`.
    threshold_file: str | None = None
    # Batching and flow control
    max_batch: int = 8
    max_wait_ms: float = 20.0
    max_in_flight: int = 64
    # Per-stage batch size; 0 = max_batch. Batches per stage handed to the device at once (the
    # next one forms while one runs).
    caption_max_batch: int = 0
    generate_max_batch: int = 0
    embed_max_batch: int = 0
    batches_in_flight: int = 2
    # Offsets: how often acked offsets are committed, and the longest gap between polls before
    # the broker evicts the worker (must exceed the longest wait for one upload to finish).
    commit_interval_s: float = 2.8
    max_poll_interval_s: float = 1000.0
    # Image references
    max_image_bytes: int = 10 * 1024 * 1024
    max_image_pixels: int = 4096 * 4096
    allow_file: bool = False
    allow_http: bool = False
    allow_private_hosts: bool = False  # SSRF guard off: fetch http(s) from private addresses too
    fetch_timeout_s: float = 10.0
    s3_endpoint: str | None = None
    s3_region: str | None = None
    # Operations
    worker_name: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    log_level: str = "info"
    log_json: bool = False
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9464  # /metrics, /healthz, /readyz; 0 = off

    def __post_init__(self) -> None:
        _check(self.threshold, -1.0 <= self.threshold <= 1.0, "threshold", "a cosine similarity in [-1, 1]")
        for name in ("max_batch", "max_in_flight", "max_image_bytes", "max_image_pixels"):
            _check(getattr(self, name), getattr(self, name) >= 1, name, "an integer >= 1")
        _check(self.max_wait_ms, self.max_wait_ms >= 0, "max_wait_ms", "a number >= 0")
        _check(self.cpu_threads, self.cpu_threads >= 0, "cpu_threads", "an integer >= 0 (0 = torch's default)")
        _check(self.fetch_timeout_s, self.fetch_timeout_s > 0, "fetch_timeout_s", "a number > 0")
        _check(self.device, self.device == "cpu" or self.device.startswith("cuda"), "device", "cpu or cuda[:N]")
        _check(self.dtype, self.dtype in ("fp32", "fp16", "bf16"), "dtype", "fp32, fp16 or bf16")
        _check(self.log_level, self.log_level in ("debug", "info", "warning", "error"), "log_level",
               "debug, info, warning or error")
        _check(self.bootstrap, bool(self.bootstrap.strip()), "bootstrap", "host:port[,host:port...]")
        self._check_detector()
        for name in ("caption_max_batch", "generate_max_batch", "embed_max_batch"):
            _check(getattr(self, name), getattr(self, name) >= 0, name, "an integer >= 0 (0 = max_batch)")
        _check(self.batches_in_flight, self.batches_in_flight >= 1, "batches_in_flight", "an integer >= 1")
        for name in ("commit_interval_s", "max_poll_interval_s"):
            _check(getattr(self, name), getattr(self, name) > 0, name, "a number of seconds > 0")
        _check(self.metrics_port, 0 <= self.metrics_port <= 65535, "metrics_port", "a TCP port, or 0 for off")
        _check(self.metrics_host, bool(self.metrics_host.strip()), "metrics_host", "a host name or address")

    def stage_max_batch(self, stage: str) -> int:
        """A stage's batch size: its own setting, or max_batch when that is 0."""
        return getattr(self, f"{stage}_max_batch") or self.max_batch

    def _check_detector(self) -> None:
        from streamdetect.models.specs import parse_spec  # pure string handling, no torch

        _check(self.mode, self.mode in ("vanilla", "stochastic"), "mode", "vanilla or stochastic")
        _check(self.encoders_per_request, self.encoders_per_request >= 0, "encoders_per_request",
               "an integer >= 0 (0 = the whole encoder zoo)")
        _check(self.noise_scale, 0 <= self.noise_scale <= 0.1, "noise_scale", "a number in [0, 0.1]")
        for name in ("encoder_zoo", "generator_zoo"):
            for spec in self.specs(name):
                try:
                    parse_spec(spec)
                except ValueError as exc:
                    raise ConfigError(f"setting {name} has a bad entry: {exc}") from exc

    def specs(self, name: str) -> tuple[str, ...]:
        """A comma-separated spec list setting (encoder_zoo, generator_zoo) as a tuple."""
        return tuple(part.strip() for part in getattr(self, name).split(",") if part.strip())

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
