"""`streamdetect bench` runs every mode end to end and writes the JSON report it promises.
Only shape and sign are checked: timings are not asserted in tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from streamdetect.bench.run import MODES, RATIOS

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
    assert set(result["ratios"]) == set(RATIOS) == {"engine_vs_reference", "stream_vs_engine",
                                                     "stream_null_vs_bare_kafka"}
    assert all(value > 0 for value in result["ratios"].values())
    assert "engine_vs_reference" in run.stdout  # the table is printed too
