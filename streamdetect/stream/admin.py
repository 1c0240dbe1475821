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
    action: str  # created | partitions | config | unchanged | cannot_shrink
    detail: str = ""


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
    current = await _partition_count(admin, name)
    if spec.partitions > current:
        await admin.create_partitions({name: NewPartitions(total_count=spec.partitions)})
        changes.append(Change(name, "partitions", f"{current} -> {spec.partitions}"))
    elif spec.partitions < current:
        changes.append(Change(name, "cannot_shrink", f"has {current} partitions, spec asks {spec.partitions}"))
    differing = await _differing_config(admin, name, spec.config)
    if differing:
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, name, configs=spec.config)])
        changes.append(Change(name, "config", ", ".join(f"{k}={v}" for k, v in sorted(differing.items()))))
    return changes or [Change(name, "unchanged")]


async def _partition_count(admin: AIOKafkaAdminClient, name: str) -> int:
    """Partitions of an existing topic, waiting out metadata that has not caught up with a
    creation yet (it reports the topic with an error or without partitions for a moment)."""
    for _ in range(METADATA_ATTEMPTS):
        (described,) = await admin.describe_topics([name])
        if described["error_code"] == 0 and described["partitions"]:
            return len(described["partitions"])
        await asyncio.sleep(0.5)
    raise RuntimeError(f"topic {name} exists but its metadata never became readable")


async def _differing_config(admin: AIOKafkaAdminClient, name: str, wanted: dict[str, str]) -> dict[str, str]:
    responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])
    current: dict[str, str] = {}
    for response in responses:
        for resource in response.resources:
            for entry in resource[4]:  # (name, value, read_only, ...) per config entry
                current[entry[0]] = entry[1]
    return {k: v for k, v in wanted.items() if current.get(k) != v}
