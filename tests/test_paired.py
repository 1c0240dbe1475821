"""Two `mini eval` results compared scene by scene (mini/eval/paired.py, `streamdetect mini
compare`), and the eval's Euler step override."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from streamdetect.mini.eval.paired import compare_runs, paired_difference

CLEAN = [0.5 + 0.01 * i for i in range(20)]  # the 1% threshold is the lowest: 0.5


def row(scores: list[float], hit: list[bool], method: str = "mirrorcheck", threshold: float = 0.55) -> dict:
    return {"method": method, "attack": "pgd", "eps": 8.0, "targets": "one", "aimed_at": None,
            "threshold": threshold, "per_image": {"score": scores, "hit": hit, "moved": hit}}


def result(rows: list[dict], seed: int = 0) -> dict:
    return {"settings": {"seed": seed, "n": 4}, "rows": rows,
            "validation": {"test_clean_scores": {"mirrorcheck": CLEAN}}}


def test_paired_difference_counts_each_side_on_the_same_scenes() -> None:
    worse = row([0.9, 0.9, 0.2, 0.9], [True, True, True, False])  # two successes score as clean
    base = row([0.1, 0.9, 0.2, 0.9], [True, True, True, False])
    d = paired_difference(worse, CLEAN, base, CLEAN)
    assert d["undetected_success_rate"]["candidate"] == 0.5 and d["undetected_success_rate"]["baseline"] == 0.25
    assert d["undetected_success_rate"]["difference"] == pytest.approx(0.25)
    assert d["tpr_at_1pct_fpr"]["candidate"] == pytest.approx(1 / 3) and d["tpr_at_1pct_fpr"]["baseline"] == \
        pytest.approx(2 / 3)
    assert d["n_moved"] == 3
    same = paired_difference(base, CLEAN, base, CLEAN)
    assert same["within_noise"] and same["undetected_success_rate"]["difference"] == 0


def test_compare_runs_pairs_rows_and_refuses_other_scenes() -> None:
    base = result([row([0.1, 0.2, 0.3, 0.9], [True] * 4)])
    cand = result([row([0.1, 0.2, 0.3, 0.9], [True] * 4), row([0.1] * 4, [True] * 4, method="robust")])
    rows = compare_runs(cand, base)
    assert [(r["method"], r["attack"]) for r in rows] == [("mirrorcheck", "pgd")]  # robust: no baseline row
    with pytest.raises(ValueError, match="different scenes"):
        compare_runs(result(cand["rows"], seed=1), base)
    with pytest.raises(ValueError, match="not the same scenes"):
        compare_runs(result([row([0.1], [True])]), base)


def test_compare_command_exits_1_when_the_candidate_is_worse_beyond_noise(tmp_path: Path) -> None:
    n = 40
    base = result([row([0.1] * n, [True] * n)])
    worse = result([row([0.9] * n, [True] * n)])  # every attack through
    paths = {}
    for name, data in (("base", base), ("worse", worse)):
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(json.dumps(data))

    def compare(a: str, b: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "streamdetect.cli", "mini", "compare", str(paths[a]),
                               str(paths[b])], capture_output=True, text=True, timeout=120)

    same, bad = compare("base", "base"), compare("worse", "base")
    assert same.returncode == 0 and "yes" in same.stdout, same.stdout + same.stderr
    assert bad.returncode == 1 and "NO" in bad.stdout and "+1.00" in bad.stdout, bad.stdout + bad.stderr


def test_eval_runs_detector_and_attacks_at_the_euler_steps_asked() -> None:
    from streamdetect.mini.eval.bench import BenchSettings, MiniBench
    from streamdetect.mini.eval.run import EvalSettings
    from streamdetect.models.profiles import MINI_WEIGHTS

    assert EvalSettings(euler_steps=5).bench().euler_steps == 5
    with pytest.raises(ValueError, match="euler_steps"):
        EvalSettings(euler_steps=-1)
    bench = MiniBench(BenchSettings(euler_steps=5), MINI_WEIGHTS)
    assert bench.models.generator.steps == 5 and "steps=5" in bench.models.generator.spec
    assert MiniBench(BenchSettings(), MINI_WEIGHTS).models.generator.steps == 10
