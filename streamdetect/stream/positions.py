"""What the broker knows about a partition's offsets, asked outside faust's consumer.

The worker admits uploads in offset order (see offsets.py). It needs two facts faust does not
expose: where the group starts reading a partition (its committed offset, or the log's start
when there is none) and, when faust hands over an upload beyond the expected offset, where the
next real record after the expected one is. Offsets can hold no record (transaction markers,
compaction, retention), so a jump is only a loss when a record lies inside it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable, NamedTuple, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

PROBE_TIMEOUT_S = 10.0
T = TypeVar("T")
RETRIES = 20  # a new cluster's offsets topic takes a few seconds to have a coordinator


class PartitionLike(NamedTuple):
    topic: str
    partition: int


class PartitionPositions:
    def __init__(self, bootstrap: str, group_id: str) -> None:
        self._bootstrap = bootstrap
        self._group_id = group_id
        self._admin: AIOKafkaAdminClient | None = None
        self._reader: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()

    async def start_of(self, tp: PartitionLike) -> int:
        """The offset the group resumes this partition from."""
        async with self._lock:
            admin, reader = await self._clients()
            partition = TopicPartition(tp.topic, tp.partition)
            committed = await _retrying(
                lambda: admin.list_consumer_group_offsets(self._group_id, partitions=[partition]))
            found = committed.get(partition)
            if found is not None and found.offset >= 0:
                return found.offset
            return (await reader.beginning_offsets([partition]))[partition]

    async def first_record_from(self, tp: PartitionLike, offset: int) -> int | None:
        """The offset of the first record at or after ``offset``; None if none came in time."""
        async with self._lock:
            _, reader = await self._clients()
            partition = TopicPartition(tp.topic, tp.partition)
            reader.assign([partition])
            reader.seek(partition, offset)
            deadline = time.monotonic() + PROBE_TIMEOUT_S
            while time.monotonic() < deadline:
                batch = await reader.getmany(partition, timeout_ms=500, max_records=1)
                if batch.get(partition):
                    return batch[partition][0].offset
            return None

    async def _clients(self) -> tuple[AIOKafkaAdminClient, AIOKafkaConsumer]:
        if self._admin is None:
            admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap)
            await admin.start()
            self._admin = admin
        if self._reader is None:
            # No group: this reader never joins the workers' group or commits for it. "earliest"
            # makes a probe below the log's start (retention) land on its first record.
            reader = AIOKafkaConsumer(bootstrap_servers=self._bootstrap, group_id=None,
                                      enable_auto_commit=False, auto_offset_reset="earliest")
            await reader.start()
            self._reader = reader
        return self._admin, self._reader

    async def close(self) -> None:
        if self._reader is not None:
            await self._reader.stop()
        if self._admin is not None:
            await self._admin.close()
        self._admin = self._reader = None


async def _retrying(call: Callable[[], Awaitable[T]]) -> T:
    for _ in range(RETRIES - 1):
        try:
            return await call()
        except KafkaError as exc:
            if not exc.retriable:
                raise
        await asyncio.sleep(0.5)
    return await call()
