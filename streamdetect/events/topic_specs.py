"""Topic specs as code: one YAML file per topic (name, partitions, config) in ``topics/``, package data."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

TOPICS_DIR = Path(__file__).resolve().parent / "topics"

NAMES = ("uploads", "alerts", "audit", "dlq", "labels", "claims")
# max.message.bytes of uploads and dlq (topics/*.yaml): what producers may send and the worker publish
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int = 1
    config: dict[str, str] = field(default_factory=dict)


def load_specs(directory: Path | None = None) -> list[TopicSpec]:
    """Read every project topic's spec; a missing file or field is an error naming it."""
    directory = directory or TOPICS_DIR
    specs = []
    for name in NAMES:
        path = directory / f"{name}.yaml"
        data = yaml.safe_load(path.read_text())
        try:
            specs.append(TopicSpec(
                name=data["name"],
                partitions=int(data["partitions"]),
                replication_factor=int(data.get("replication_factor", 1)),
                config={k: str(v) for k, v in (data.get("config") or {}).items()},
            ))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"topic spec {path} is invalid: {exc!r}") from exc
    return specs
