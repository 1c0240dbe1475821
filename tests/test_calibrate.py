"""`streamdetect calibrate`: fit a threshold for a target FPR from clean traffic, write it where
the worker reads it, and refuse a calibration fitted for another configuration."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from streamdetect.detector.threshold_file import ThresholdFileError, read_threshold  # noqa: E402
from streamdetect.offline.calibrate import audit_scores  # noqa: E402
from streamdetect.cli.main import main  # noqa: E402
from streamdetect.settings import ConfigError, Settings  # noqa: E402
from streamdetect.app.detector_config import fingerprint, resolve_threshold  # noqa: E402


def _settings(tiny_models: Path, **kw) -> Settings:  # type: ignore[no-untyped-def]
    return Settings.load(env={}, overrides={"model_dir": tiny_models, "profile": "tiny", **kw})


def _verdict(upload_id: str, score: float, fp: dict, **models) -> str:  # type: ignore[no-untyped-def]
    base = {"captioner": fp["captioner"], "generator": fp["generators"][0], "encoders": fp["encoders"]}
    return json.dumps({"upload_id": upload_id, "score": score, "models": {**base, **models}})


def test_audit_scores_keep_this_configuration_once_per_upload(tiny_models: Path) -> None:
    fp = fingerprint(_settings(tiny_models))
    lines = [_verdict(f"u{i}", 0.5 + i / 100, fp) for i in range(5)]
    lines += [_verdict("u1", 0.9, fp),  # a replay: the latest judgement counts
              _verdict("x", 0.1, fp, encoders=fp["encoders"][:1]),  # another ensemble
              _verdict("y", 0.1, fp, captioner=None),  # the platform's caption: same detector
              "not json", ""]
    found = audit_scores(lines, fp)
    assert sorted(found.scores) == [0.1, 0.5, 0.52, 0.53, 0.54, 0.9]
    assert (found.lines, found.duplicates, found.other_config, found.unreadable) == (9, 1, 1, 1)
    stochastic = fingerprint(_settings(tiny_models, mode="stochastic", encoders_per_request=2, noise_scale=1e-3))
    drawn = {"seed": 1, "noise_scale": 1e-3, "generator": stochastic["generators"][1],
             "encoders": stochastic["encoders"][1:]}
    record = json.dumps({"upload_id": "s", "score": 0.7, "stochastic": drawn,
                         "models": {"captioner": None, "generator": drawn["generator"], "encoders": drawn["encoders"]}})
    assert audit_scores([record], stochastic).scores == [0.7]
    assert audit_scores([record], fp).scores == []  # a vanilla worker's fit ignores stochastic verdicts


def test_calibrate_from_audit_log_and_the_worker_reads_it(tiny_models: Path, tmp_path: Path) -> None:
    settings = _settings(tiny_models)
    fp = fingerprint(settings)
    scores = np.random.default_rng(0).normal(0.7, 0.05, 500)
    audit = tmp_path / "audit.jsonl"
    audit.write_text("\n".join(_verdict(f"u{i}", float(s), fp) for i, s in enumerate(scores)) + "\n")
    target = tmp_path / "conf" / "threshold.json"
    result = CliRunner().invoke(main, ["calibrate", "--audit", str(audit), "--target-fpr", "0.02",
                                       "--threshold-file", str(target), "--model-dir", str(tiny_models), "--profile", "tiny"])
    assert result.exit_code == 0, result.output
    record = json.loads(target.read_text())
    # m = floor(0.02 * 501) - 1 = 9: the 10th lowest score, flagging 9 of 500.
    assert record["threshold"] == pytest.approx(np.sort(scores)[9]) and record["n_flagged"] == 9
    assert record["n"] == 500 and record["fpr_low"] < 0.02 < record["fpr_high"]
    assert "from 500 clean samples" in result.output and "95% interval" in result.output
    worker = _settings(tiny_models, threshold_file=str(target))
    assert resolve_threshold(worker) == record["threshold"]
    with pytest.raises(ConfigError, match=r"fitted for another configuration \(differs in .*'mode'"):
        resolve_threshold(_settings(tiny_models, threshold_file=str(target), mode="stochastic"))
    with pytest.raises(ThresholdFileError, match="no such file; run `streamdetect calibrate`"):
        read_threshold(tmp_path / "nope.json", fp)


def test_calibrate_from_a_folder_of_clean_images(tiny_models: Path, tmp_path: Path) -> None:
    folder = tmp_path / "clean"
    folder.mkdir()
    for i in range(4):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
            folder / f"{i}.png")
    target = tmp_path / "threshold.json"
    result = CliRunner().invoke(main, ["calibrate", "--clean-dir", str(folder), "--threshold-file", str(target),
                                       "--model-dir", str(tiny_models), "--profile", "tiny", "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(target.read_text())
    assert record["n"] == 4 and record["source"] == f"folder {folder}: 4 images"
    assert not record["enough_samples"]  # 4 images cannot resolve a 1% FPR, and it says so
    assert record["fingerprint"] == fingerprint(_settings(tiny_models))
    assert -1 <= record["threshold"] <= 1


def test_calibrate_needs_a_destination_and_one_source(tiny_models: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["calibrate", "--audit", "-", "--model-dir", str(tiny_models), "--profile", "tiny"], input="")
    assert result.exit_code == 2 and "--threshold-file or the threshold_file setting" in result.output
    result = runner.invoke(main, ["calibrate", "--threshold-file", str(tmp_path / "t.json")])
    assert result.exit_code == 2 and "exactly one of --audit or --clean-dir" in result.output


@pytest.mark.parametrize("env, message", [
    ({"STREAMDETECT_MODE": "random"}, "mode='random'"),
    ({"STREAMDETECT_NOISE_SCALE": "0.5"}, "noise_scale='0.5'"),
    ({"STREAMDETECT_ENCODERS_PER_REQUEST": "-1"}, "encoders_per_request='-1'"),
])
def test_detector_settings_are_validated(env: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.load(None, env)


def test_a_bad_zoo_spec_is_a_config_error_before_loading(tiny_models: Path) -> None:
    from streamdetect.app.detector_config import settings_zoo

    settings = _settings(tiny_models, mode="stochastic", encoder_zoo="open_clip:ViT-B-32:openai,clip:RN50")
    with pytest.raises(ConfigError, match="encoder_zoo"):
        settings_zoo(settings)


def test_k_larger_than_the_zoo_is_a_config_error_before_loading(tiny_models: Path) -> None:
    from streamdetect.app.wiring import build_pipeline

    with pytest.raises(ConfigError, match="k=4 encoders per request, but the encoder zoo has only 3"):
        build_pipeline(_settings(tiny_models, mode="stochastic", encoders_per_request=4))
