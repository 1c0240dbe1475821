"""Settings: one frozen pydantic-settings model, the only reader of the environment and the
TOML file. Precedence, lowest first: defaults, the TOML file (``--config``), the environment
(``STREAMDETECT_<NAME>``, and ``KAFKA_BOOTSTRAP`` for ``bootstrap``), command-line flags.

Every field's type and range is checked once, at start; a bad value, a misspelt
``STREAMDETECT_*`` variable or a misspelt file key stops start-up with an error that names it,
says where it came from and suggests the close match. The CLI builds its flags from these
fields (``streamdetect/cli/options.py``), so a flag, its default and its help are written once.
"""

from __future__ import annotations

import difflib
import os
import socket
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

ENV_PREFIX = "STREAMDETECT_"
# STREAMDETECT_* variables that are not settings: who reads them, for the misspelling check.
OTHER_VARIABLES = {"STREAMDETECT_CACHE": "the cache folder of make and of the model_dir default"}
PROFILES = ("mini", "mini-robust", "tiny", "paper", "standard", "standard-shapes")


class ConfigError(ValueError):
    """A setting has a bad value; the message names it and says what is accepted."""


def default_cache() -> Path:
    return Path(os.environ.get("STREAMDETECT_CACHE", Path.home() / ".cache" / "streamdetect"))


def _flags(*flags: str, off: str | None = None, path: str | None = None) -> dict[str, Any]:
    """CLI hints for cli/options.py: extra flag names, the off-switch of a boolean, path kind."""
    return {"flags": list(flags), "off": off, "path": path}


class Settings(BaseSettings):
    """Every setting of the worker and the offline commands. ``Settings(...)`` is defaults plus
    the given values; ``Settings.load(...)`` also reads the file and the environment."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, case_sensitive=False, env_ignore_empty=True, frozen=True, extra="forbid",
        validate_default=True,
    )

    # Kafka
    bootstrap: str = Field("127.0.0.1:19092", description="Kafka bootstrap servers, host:port[,host:port...] "
                           "(also KAFKA_BOOTSTRAP).")
    topic_prefix: str = Field("", pattern=r"^[A-Za-z0-9._-]*$",
                              description="Prefix for the topic names uploads, alerts, audit, dlq.")
    group_id: str = Field("streamdetect", min_length=1, json_schema_extra=_flags("--group"),
                          description="Consumer group; workers sharing it share the partitions.")
    # Models and decision
    profile: Literal["mini", "mini-robust", "tiny", "paper", "standard", "standard-shapes"] = Field(
        "mini", description="Model profile: mini (small trained models, shipped; CPU), mini-robust (the same "
                            "with adversarially fine-tuned encoders: README, Defences), tiny (random weights, "
                            "for tests only), paper (BLIP + SD 1.5 + 5 CLIP), standard (distilled T2I, fp16 GPU), "
                            "standard-shapes (standard's architectures at real size with random weights: "
                            "GPU throughput only).")
    model_dir: Path = Field(default_factory=lambda: default_cache() / "models", json_schema_extra=_flags(path="dir"),
                            description="Folder of local model weights [default: $STREAMDETECT_CACHE/models, "
                                        "~/.cache/streamdetect/models].")
    device: str = Field("cpu", pattern=r"^(cpu|cuda(:\d+)?)$", description="cpu or cuda[:N].")
    cpu_threads: int = Field(1, ge=0, description="torch intra-op threads; 0 = torch's default (one is fastest "
                                                  "on 2 cores: see README, Benchmark).")
    dtype: Literal["fp32", "fp16", "bf16"] = Field("fp32", description="Model precision.")
    threshold: float = Field(0.5, ge=-1.0, le=1.0, allow_inf_nan=False,
                             description="Flag when the mean cosine similarity is below this. Uncalibrated unless "
                                         "fitted for the models: prefer --threshold-file.")
    seed: int = Field(0, ge=0, description="Base of the per-upload regeneration seeds.")
    seed_secret: SecretStr = Field(SecretStr(""), description="Key under which an image's pixels give its "
                                   "regeneration seed; set a secret in production so senders cannot search "
                                   "for lucky seeds. Same image, same key: same regeneration and verdict.")
    # MirrorCheck mode: vanilla (one generator, the whole encoder ensemble) or stochastic (per
    # request: a generator from generator_zoo, encoders_per_request encoders from encoder_zoo and
    # a one-time weight perturbation of scale noise_scale; see detector/stochastic.py).
    mode: Literal["vanilla", "stochastic"] = Field(
        "vanilla", description="vanilla: the profile's generator and whole encoder ensemble; stochastic: per upload "
                               "a drawn generator, k drawn encoders and one-time weight noise.")
    encoder_zoo: str = Field("", description="Comma-separated encoder specs; empty = the profile's.")
    generator_zoo: str = Field("", description="Comma-separated generator specs; empty = the profile's.")
    encoders_per_request: int = Field(0, ge=0, json_schema_extra=_flags("-k"),
                                      description="Stochastic mode: encoders drawn per upload (k); 0 = all.")
    noise_scale: float = Field(5e-4, ge=0.0, le=0.1, allow_inf_nan=False,
                               description="Stochastic mode: std of the one-time weight noise (paper: 5e-6 to 1e-3).")
    cascade: Literal["off", "agreement", "margin", "swap"] = Field(
        "off", description="off: every upload is regenerated (MirrorCheck); agreement: an upload whose caption "
                           "the encoders confidently agree with is decided clean without a text-to-image call; "
                           "margin: the same when the caption beats the captioner's own next likeliest captions "
                           "under the encoders; swap: when it beats itself with any one word swapped for another "
                           "of its kind, every word checked (cascade_vocabulary). Only swap held against the "
                           "attacks aimed at it: README, The cascade.")
    cascade_vocabulary: str | None = Field(None, description="cascade=swap: a packaged vocabulary (mini, general) "
                                           "or a JSON file of word kinds (detector/swaps.py); unset = the profile's "
                                           "(mini for mini, mini-robust and tiny, else general).")
    cascade_exit_share: float = Field(0.8, gt=0.0, lt=1.0, allow_inf_nan=False,
                                      description="calibrate: the share of clean uploads the cascade's exit "
                                                  "threshold lets skip regeneration (its budget).")
    cascade_exit_threshold: float | None = Field(None, ge=-1.0, le=1.0, allow_inf_nan=False,
                                                 description="First-stage score (caption agreement or margin) at "
                                                             "or above which the cascade exits clean; unset = the "
                                                             "threshold file's.")
    threshold_file: str | None = Field(None, json_schema_extra=_flags(path="file"),
                                       description="Threshold fitted by `streamdetect calibrate`; replaces threshold.")
    # Batching and flow control
    max_batch: int = Field(8, ge=1, description="Most items per batched model call.")
    max_wait_ms: float = Field(20.0, ge=0.0, allow_inf_nan=False,
                               description="Longest wait for a batch to fill after its first item, in ms.")
    max_in_flight: int = Field(64, ge=1, description="Most uploads open at once before consumption pauses.")
    take_batch: int = Field(0, ge=0, description="Most consumed uploads the worker takes as one unit: judged "
                                                 "together, their acks awaited once, their offsets released "
                                                 "together; 0 = max_in_flight (capped at it).")
    caption_max_batch: int = Field(0, ge=0, description="Caption stage batch size; 0 = max_batch.")
    generate_max_batch: int = Field(0, ge=0, description="Regenerate stage batch size; 0 = max_batch.")
    embed_max_batch: int = Field(0, ge=0, description="Embed stage batch size; 0 = max_batch.")
    batches_in_flight: int = Field(2, ge=1, description="Batches per stage handed to the device at once.")
    # Offsets: how often acked offsets are committed, and the longest gap between polls before
    # the broker evicts the worker (must exceed the longest wait for one upload to finish).
    commit_interval_s: float = Field(2.8, gt=0.0, allow_inf_nan=False,
                                     description="Seconds between commits of acknowledged offsets.")
    session_timeout_s: float = Field(10.0, ge=6.0, le=300.0, allow_inf_nan=False,
                                     description="Seconds without a heartbeat before the group hands a worker's "
                                                 "partitions to the others (faust's default is 60).")
    heartbeat_interval_s: float = Field(3.0, gt=0.0, le=100.0, allow_inf_nan=False,
                                        description="Seconds between group heartbeats; at most a third of "
                                                    "session_timeout_s.")
    group_instance_id: str | None = Field(None, min_length=1,
                                          description="Static group membership: a worker restarted with the same id "
                                                      "(e.g. a StatefulSet pod name) takes its partitions back "
                                                      "without a rebalance.")
    max_poll_interval_s: float = Field(1000.0, gt=0.0, allow_inf_nan=False,
                                       description="Longest gap between polls before the broker evicts the worker.")
    # Image references
    max_image_bytes: int = Field(10 * 1024 * 1024, ge=1, description="Largest image download, in bytes.")
    max_image_pixels: int = Field(4096 * 4096, ge=1, description="Largest decoded image, in pixels.")
    allow_file: bool = Field(False, description="Accept file:// references.")
    allow_http: bool = Field(False, description="Accept plain http:// references (otherwise https only).")
    allow_private_hosts: bool = Field(False, description="Fetch http(s) references from loopback, private and "
                                                         "link-local addresses (turns the SSRF guard off).")
    file_root: Path | None = Field(None, json_schema_extra=_flags(path="dir"),
                                   description="Folder that file:// references must resolve inside (symlinks "
                                               "followed); required for allow_file.")
    fetch_timeout_s: float = Field(10.0, gt=0.0, allow_inf_nan=False, description="Image fetch timeout, seconds.")
    s3_endpoint: str | None = Field(None, description="S3-compatible endpoint URL for s3:// references (MinIO "
                                                      "and the like); unset = AWS.")
    s3_region: str | None = Field(None, description="S3 region; unset = boto3's default.")
    evidence_store: str = Field("", description="Where verdicts' images (input and regeneration, PNG) are kept: "
                                "s3://bucket/prefix (through --s3-endpoint) or a local folder; empty = not kept, "
                                "only their hashes are recorded.")
    evidence_of: Literal["flagged", "all"] = Field("flagged", description="Keep the images of flagged verdicts "
                                                   "only, or of every verdict.")
    fetch_threads: int = Field(8, ge=1, le=256, description="Threads fetching images; slow references wait in "
                                                           "this pool, not in the one other work uses.")
    fetch_retries: int = Field(2, ge=0, le=10, description="Extra attempts for an unreachable image before it is "
                                                         "dead-lettered.")
    model_retries: int = Field(1, ge=0, le=10, description="Extra attempts for an upload the models failed on.")
    retry_backoff_s: float = Field(0.5, ge=0.0, le=60.0, allow_inf_nan=False,
                                   description="First wait before a retry, doubled for each later one.")
    model_error_limit: int = Field(5, ge=0, description="Model errors in a row after which /healthz turns "
                                                        "unhealthy and the worker stops taking uploads; 0 = never.")
    dead_letter_payload_max_bytes: int = Field(
        256 * 1024, ge=0, le=1024 * 1024,
        description="Most bytes of an upload's payload a dead letter copies (its size and sha256 are always there).")
    # Operations
    worker_name: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}", min_length=1,
                             description="Name in verdicts and dead letters [default: host-pid].")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    log_json: bool = Field(False, json_schema_extra=_flags(off="--log-text"),
                           description="Logs as JSON lines (for collectors) instead of text.")
    metrics_host: str = Field("127.0.0.1", min_length=1, description="Address of /metrics, /healthz, /readyz.")
    metrics_port: int = Field(9464, ge=0, le=65535, description="Port of /metrics, /healthz, /readyz; 0 = off.")

    # The moderator console (streamdetect console)
    console_host: str = Field("127.0.0.1", min_length=1, description="Address the console listens on; anything "
                              "but loopback needs a console token.")
    console_port: int = Field(8471, ge=0, le=65535, description="Port of the console; 0 = any free port.")
    console_token: SecretStr = Field(SecretStr(""), description="Token every console request must carry "
                                     "(STREAMDETECT_CONSOLE_TOKEN); required off loopback.")
    console_token_file: Path | None = Field(None, json_schema_extra=_flags(path="file"),
                                            description="File whose first line is the console token.")
    moderator: str = Field(default_factory=lambda: os.environ.get("USER") or "moderator", min_length=1,
                           max_length=200, description="Name recorded with every decision this console publishes.")
    claim_timeout_s: float = Field(300.0, gt=0.0, le=86400.0, allow_inf_nan=False,
                                   description="How long an opened alert stays claimed by this console.")

    @field_validator("*", mode="before")
    @classmethod
    def _no_bools_for_numbers(cls, value: Any, info: Any) -> Any:
        # pydantic's lax mode reads `max_batch = true` as 1; a boolean for a number is a mistake.
        annotation = cls.model_fields[info.field_name].annotation
        if isinstance(value, bool) and annotation in (int, float):
            raise ValueError("expected a number, not a boolean")
        return value

    @model_validator(mode="after")
    def _heartbeats_fit_the_session(self) -> Settings:
        if self.heartbeat_interval_s * 3 > self.session_timeout_s:
            raise ValueError(f"heartbeat_interval_s={self.heartbeat_interval_s} must be at most a third of "
                             f"session_timeout_s={self.session_timeout_s}")
        return self

    @field_validator("bootstrap")
    @classmethod
    def _host_ports(cls, value: str) -> str:
        hosts = [part.strip() for part in value.split(",")]
        if not all(h and h.rpartition(":")[2].isdigit() and h.rpartition(":")[0] for h in hosts):
            raise ValueError("expected host:port[,host:port...]")
        return ",".join(hosts)

    def stage_max_batch(self, stage: str) -> int:
        """A stage's batch size: its own setting, or max_batch when that is 0."""
        return getattr(self, f"{stage}_max_batch") or self.max_batch

    def specs(self, name: str) -> tuple[str, ...]:
        """A comma-separated spec list setting (encoder_zoo, generator_zoo) as a tuple."""
        return tuple(part.strip() for part in getattr(self, name).split(",") if part.strip())

    def topic(self, name: str) -> str:
        """The full name of one of the project's topics (uploads, alerts, audit, dlq)."""
        return f"{self.topic_prefix}{name}"

    def given(self, name: str) -> bool:
        """Whether ``name`` was set by a flag, the environment or the file (not left at its default)."""
        return name in self.model_fields_set

    @classmethod
    def load(
        cls,
        config_file: Path | None = None,
        env: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> Settings:
        """Merge defaults < file < environment < overrides (flags); ``None`` overrides are ignored."""
        env = os.environ if env is None else env
        given = {k: v for k, v in (overrides or {}).items() if v is not None}
        _check_names(given, "flag")
        token = _SOURCES.set(_Sources(config_file, env))
        try:
            return cls(**given)
        except ValidationError as exc:
            raise ConfigError(_explain(exc, config_file, env, given)) from None
        finally:
            _SOURCES.reset(token)

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources = _SOURCES.get()
        if sources is None:  # plain Settings(...): defaults and the given values only
            return (init_settings,)
        chain: list[PydanticBaseSettingsSource] = [init_settings, _Environment(settings_cls, sources.env)]
        if sources.config_file is not None:
            chain.append(_TomlFile(settings_cls, sources.config_file))
        return tuple(chain)


class _Sources:
    def __init__(self, config_file: Path | None, env: Mapping[str, str]) -> None:
        self.config_file, self.env = config_file, env


_SOURCES: ContextVar[_Sources | None] = ContextVar("settings_sources", default=None)


class _Environment(EnvSettingsSource):
    """STREAMDETECT_* from the given mapping; KAFKA_BOOTSTRAP stands in for STREAMDETECT_BOOTSTRAP;
    a STREAMDETECT_* name that is no setting is an error (a typo must not be silently ignored)."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        self._env = env
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        env = {key.upper(): value for key, value in self._env.items() if key.upper().startswith(ENV_PREFIX)}
        env = {key: value for key, value in env.items() if value != ""}  # empty = unset, as for the shell
        if self._env.get("KAFKA_BOOTSTRAP") and not env.get(ENV_PREFIX + "BOOTSTRAP"):
            env[ENV_PREFIX + "BOOTSTRAP"] = self._env["KAFKA_BOOTSTRAP"]
        known = {ENV_PREFIX + name.upper() for name in Settings.model_fields} | set(OTHER_VARIABLES)
        for key in env:
            if key not in known:
                raise ConfigError(f"environment variable {key} is not a setting{_suggest(key, known)} "
                                  f"(the settings are in README, Settings)")
        # pydantic-settings matches lower-cased names when not case-sensitive
        return {key.lower(): value for key, value in env.items()}


class _TomlFile(PydanticBaseSettingsSource):
    """The --config file: a flat TOML table of setting names (underscores, as the fields)."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path) -> None:
        super().__init__(settings_cls)
        self.path = Path(path)
        try:
            self.data = tomllib.loads(self.path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {self.path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {self.path} is not valid TOML: {exc}") from None
        for key in self.data:
            if key not in Settings.model_fields:
                raise ConfigError(f"config file {self.path} has an unknown setting {key!r}"
                                  f"{_suggest(key, Settings.model_fields)}")

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self.data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self.data)


def _check_names(values: Mapping[str, Any], kind: str) -> None:
    for key in values:
        if key not in Settings.model_fields:
            raise ConfigError(f"unknown setting {key!r} ({kind}){_suggest(key, Settings.model_fields)}")


def _suggest(name: str, known: Any) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def _explain(exc: ValidationError, config_file: Path | None, env: Mapping[str, str], given: Mapping[str, Any]) -> str:
    """One line per bad field: its name, the value, where the value came from, what is expected."""
    lines = []
    for error in exc.errors():
        if not error["loc"]:  # a rule across fields
            lines.append(f"settings are inconsistent: {error['msg'].removeprefix('Value error, ')}")
            continue
        name = str(error["loc"][0])
        value = error.get("input")
        if name in given:
            origin = "from the command line"
        elif ENV_PREFIX + name.upper() in env or (name == "bootstrap" and "KAFKA_BOOTSTRAP" in env):
            origin = f"from {ENV_PREFIX}{name.upper()}"
        elif config_file is not None:
            origin = f"from {config_file}"
        else:
            origin = "by default"
        lines.append(f"setting {name}={value!r} ({origin}) is invalid: {error['msg']}")
    return "; ".join(lines)
