"""Click options generated from the Settings fields, so each flag, its default and its help are
written once (in streamdetect/settings.py). A generated option defaults to None: a flag that is
not given leaves the value to the environment, the file or the field's default."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Literal, get_args, get_origin

import click
from pydantic import SecretStr

from streamdetect.settings import Settings

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]

# The settings each kind of command takes (beyond the root group's).
MODEL_SETTINGS = ("profile", "model_dir", "device", "dtype", "cpu_threads", "mode", "encoder_zoo", "generator_zoo",
                  "encoders_per_request", "noise_scale", "seed", "max_batch")
WORKER_SETTINGS = (*MODEL_SETTINGS, "threshold", "threshold_file", "cascade", "cascade_vocabulary", "cascade_exit_threshold",
                   "group_id", "max_wait_ms", "max_in_flight",
                   "caption_max_batch", "generate_max_batch", "embed_max_batch", "batches_in_flight",
                   "commit_interval_s", "session_timeout_s", "heartbeat_interval_s", "group_instance_id",
                   "allow_file", "file_root", "allow_http", "allow_private_hosts", "fetch_timeout_s", "s3_endpoint",
                   "fetch_threads", "fetch_retries", "model_retries", "retry_backoff_s", "model_error_limit",
                   "dead_letter_payload_max_bytes", "evidence_store", "evidence_of",
                   "metrics_host", "metrics_port")
ROOT_SETTINGS = ("bootstrap", "topic_prefix", "log_level", "log_json")


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def default_text(name: str) -> str:
    """The default as help shows it; fields with computed defaults describe theirs."""
    field = Settings.model_fields[name]
    if field.default_factory is not None:
        return ""
    value = field.default
    if value is None or (isinstance(value, SecretStr) and not value.get_secret_value()):
        return " [default: unset]"
    if value == "":
        return " [default: empty]"
    if isinstance(value, bool):
        return f" [default: {'on' if value else 'off'}]"
    return f" [default: {value}]"


def help_text(name: str) -> str:
    field = Settings.model_fields[name]
    return f"{field.description}{default_text(name)}"


def setting_option(name: str, **overrides: Any) -> Decorator:
    """One click option for the setting ``name``; ``overrides`` are passed to click.option."""
    field = Settings.model_fields[name]
    hints: dict[str, Any] = field.json_schema_extra or {}  # type: ignore[assignment]
    declarations = [*hints.get("flags", []), flag_name(name)]
    kwargs: dict[str, Any] = {"default": None, "help": help_text(name)}
    annotation = field.annotation
    if annotation is bool:
        declarations = [f"{flag_name(name)}/{hints.get('off') or '--no-' + name.replace('_', '-')}"]
    elif get_origin(annotation) is Literal:
        kwargs["type"] = click.Choice([str(v) for v in get_args(annotation)])
    elif annotation in (int, float):
        kwargs["type"] = annotation
    elif hints.get("path") == "dir":
        kwargs["type"] = click.Path(file_okay=False, path_type=Path)
    elif hints.get("path") == "file":
        kwargs["type"] = click.Path(dir_okay=False)
    kwargs.update(overrides)
    return click.option(*declarations, name, **kwargs)


def setting_options(*names: str) -> Decorator:
    """Options for several settings, in the order given (as --help lists them)."""

    def apply(fn: Callable[..., Any]) -> Callable[..., Any]:
        for name in reversed(names):
            fn = setting_option(name)(fn)
        return fn

    return apply
