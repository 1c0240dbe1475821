"""`streamdetect bench` runs every mode end to end and writes the JSON report it promises, and
its stream ceiling does the worker's work. Only shape and sign are checked: timings are not
asserted in tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from streamdetect import events
from streamdetect.bench import stream_contenders as bs
from streamdetect.bench.run import MODES, RATIOS, bench_images, data_uri
from tests.kafka_support import read_until

pytestmark = pytest.mark.kafka


def test_bench_reports_every_mode_and_ratio(kafka_bootstrap: str, tiny_models: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = {**os.environ, "STREAMDETECT_MODEL_DIR": str(tiny_models)}
    run = subprocess.run(
        [sys.executable, "-m", "streamdetect.cli", "--bootstrap", kafka_bootstrap, "--log-level", "warning",
         "bench", "--profile", "tiny", "--images", "12", "--json", str(out)],
        env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    result = json.loads(out.read_text())
    assert set(result) == {*MODES, "ratios"}
    for mode in MODES:
        assert set(result[mode]) == {"images_per_s", "p50_ms", "p95_ms", "p99_ms"}
        assert all(value > 0 for value in result[mode].values()), (mode, result[mode])
    assert set(result["ratios"]) == set(RATIOS) == {"engine_vs_reference", "engine_vs_model_ceiling",
                                                     "stream_vs_engine", "stream_null_vs_ceiling",
                                                     "stream_null_vs_bare_kafka"}
    assert all(value > 0 for value in result["ratios"].values())
    assert "engine_vs_reference" in run.stdout and "stream_ceiling" in run.stdout  # the table is printed too


async def test_the_ceiling_judges_every_upload_once_with_the_workers_own_verdicts(kafka_bootstrap: str,
                                                                                 tmp_path: Path) -> None:
    """stream_ceiling (bench/ceiling.py) is a measuring stick only if it does the worker's work:
    one schema-valid verdict on audit per upload, built by the worker's own code."""
    prefix = f"ceil{uuid.uuid4().hex[:6]}-"
    await bs.create_topics(kafka_bootstrap, [prefix])
    ceiling = bs.start_ceiling(kafka_bootstrap, prefix, {"STREAMDETECT_LOG_LEVEL": "warning"}, tmp_path)
    try:
        await ceiling.wait_ready()
        images = [data_uri(image) for image in bench_images(50)]
        latencies, _ = await bs.measure(kafka_bootstrap, ceiling, images, "c")
        verdicts = await read_until(kafka_bootstrap, f"{prefix}audit", lambda seen: len(seen) >= 54, 30)
    finally:
        ceiling.stop()
    assert len(latencies) == 50
    ids = [v["upload_id"] for v in verdicts]
    assert sorted(ids) == sorted([f"c-warm-{i}" for i in range(4)] + [f"c-{i}" for i in range(50)])  # once each
    for verdict in verdicts:
        events.validate("verdict", verdict)
        assert verdict["models"]["generator"] == "null:generator" and verdict["evidence"]["input"] is not None
