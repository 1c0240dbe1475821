"""``streamdetect topics apply``: create missing topics, raise partition counts, set configs.

Idempotent: a second run changes nothing and says so. Partitions are never reduced (Kafka
cannot), and that case is reported rather than silently ignored.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from streamdetect.events.topic_specs import TopicSpec


METADATA_ATTEMPTS = 20


class MissingTopics(RuntimeError):
    """Topics a command needs do not exist; without this check it would wait silently for them."""


async def require_topics(bootstrap: str, topics: list[str], prefix: str = "") -> None:
    """Raise MissingTopics, in one line naming them and the command that creates them, unless all exist."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
    finally:
        await admin.close()
    missing = [topic for topic in topics if topic not in existing]
    if missing:
        flag = f"--topic-prefix {prefix} " if prefix else ""
        raise MissingTopics(f"topics {missing} do not exist on {bootstrap}: run `streamdetect {flag}topics apply` first")


@dataclass(frozen=True)
class Change:
    topic: str
    action: str  # created | partitions | config | unchanged | cannot_shrink | replication_drift | config_blocked
    detail: str = ""

    @property
    def is_drift(self) -> bool:
        """A difference from the spec that apply cannot fix: the operator must act."""
        return self.action in DRIFT


DRIFT = ("cannot_shrink", "replication_drift", "config_blocked")


async def apply_topics(bootstrap: str, specs: list[TopicSpec], prefix: str = "") -> list[Change]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        changes = []
        for spec in specs:
            name = prefix + spec.name
            if name not in existing and await _create(admin, name, spec):
                await _partition_count(admin, name)  # returns once clients can see the new topic
                changes.append(Change(name, "created", f"{spec.partitions} partitions"))
            else:
                changes.extend(await _update(admin, name, spec))
        return changes
    finally:
        await admin.close()


async def _create(admin: AIOKafkaAdminClient, name: str, spec: TopicSpec) -> bool:
    """Create the topic; False if it already existed (metadata can lag a fresh creation)."""
    response = await admin.create_topics(
        [NewTopic(name, spec.partitions, spec.replication_factor, topic_configs=spec.config)])
    # Admin responses carry per-topic error codes instead of raising.
    for _, code, message in response.topic_errors:
        if code == TopicAlreadyExistsError.errno:
            return False
        if code:
            raise RuntimeError(f"creating topic {name} failed: Kafka error {code}: {message}")
    return True


async def _update(admin: AIOKafkaAdminClient, name: str, spec: TopicSpec) -> list[Change]:
    changes = []
    partitions = await _partitions(admin, name)
    current, replication = len(partitions), min(len(p["replicas"]) for p in partitions)
    if spec.partitions > current:
        await admin.create_partitions({name: NewPartitions(total_count=spec.partitions)})
        changes.append(Change(name, "partitions", f"{current} -> {spec.partitions}"))
    elif spec.partitions < current:
        changes.append(Change(name, "cannot_shrink", f"has {current} partitions, spec asks {spec.partitions}"))
    if replication != spec.replication_factor:
        changes.append(Change(name, "replication_drift", f"has replication factor {replication}, spec asks "
                              f"{spec.replication_factor}: reassign its partitions (kafka-reassign-partitions)"))
    changes.extend(await _apply_config(admin, name, spec.config))
    return changes or [Change(name, "unchanged")]


async def _partitions(admin: AIOKafkaAdminClient, name: str) -> list[dict]:
    """Partitions of an existing topic, waiting out metadata that has not caught up with a
    creation yet (it reports the topic with an error or without partitions for a moment)."""
    for _ in range(METADATA_ATTEMPTS):
        (described,) = await admin.describe_topics([name])
        if described["error_code"] == 0 and described["partitions"]:
            return list(described["partitions"])
        await asyncio.sleep(0.5)
    raise RuntimeError(f"topic {name} exists but its metadata never became readable")


async def _partition_count(admin: AIOKafkaAdminClient, name: str) -> int:
    return len(await _partitions(admin, name))


async def _apply_config(admin: AIOKafkaAdminClient, name: str, wanted: dict[str, str]) -> list[Change]:
    """Set the spec's configs and keep every other override on the topic. Kafka's AlterConfigs
    (the only one aiokafka speaks) replaces a topic's whole set of overrides, so the overrides an
    operator set by hand are read first and sent back with the spec's: an incremental change."""
    values, overrides = await _configs(admin, name)
    differing = {k: v for k, v in wanted.items() if values.get(k) != v}
    if not differing:
        return []
    unreadable = sorted(k for k, v in overrides.items() if v is None and k not in wanted)
    if unreadable:  # a sensitive override reads back as null: rewriting the set would wipe it
        return [Change(name, "config_blocked", f"would set {', '.join(sorted(differing))} but cannot keep the "
                       f"sensitive override(s) {', '.join(unreadable)}: set them by hand (kafka-configs)")]
    kept = {k: v for k, v in overrides.items() if k not in wanted}
    responses = await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, name, configs={**kept, **wanted})])
    for response in responses:
        for code, message, *_ in response.resources:
            if code:
                raise RuntimeError(f"setting configs on topic {name} failed: Kafka error {code}: {message}")
    detail = ", ".join(f"{k}={v}" for k, v in sorted(differing.items()))
    return [Change(name, "config", detail + (f" (kept {', '.join(sorted(kept))})" if kept else ""))]


DYNAMIC_TOPIC_CONFIG = 1  # DescribeConfigs config_source: an override set on this topic


async def _configs(admin: AIOKafkaAdminClient, name: str) -> tuple[dict[str, str], dict[str, str]]:
    """Every config value of the topic, and those of them that are overrides set on the topic."""
    responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])
    values: dict[str, str] = {}
    overrides: dict[str, str] = {}
    for response in responses:
        for resource in response.resources:
            for entry in resource[4]:  # (name, value, read_only, config_source, is_sensitive, ...)
                values[entry[0]] = entry[1]
                if len(entry) > 4 and entry[3] == DYNAMIC_TOPIC_CONFIG:
                    overrides[entry[0]] = entry[1]  # None when Kafka marks it sensitive
    return values, overrides
