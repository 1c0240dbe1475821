"""A killed worker's partitions are judged again within the session timeout, and nothing is lost
(the measurement README quotes comes from `streamdetect bench-recovery`, the same code)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streamdetect.bench.recovery import measure_recovery

pytestmark = pytest.mark.kafka


async def test_a_killed_workers_partitions_come_back_within_the_session_timeout(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    result = await measure_recovery(kafka_bootstrap, tmp_path, rate=10, before_s=5, after_s=20)
    print(json.dumps(result))
    assert result["lost"] == 0 and result["uploads"] >= 200
    assert result["worst_latency_after_kill_s"] < 25, result  # session 10 s + one rebalance; faust's 60 s default failed
