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


def _label(upload_id: str, decision: str, score: float, fp: dict, decided_at: str = "2026-11-01T10:00:00Z",
           **models) -> str:  # type: ignore[no-untyped-def]
    base = {"captioner": fp["captioner"], "generator": fp["generators"][0], "encoders": fp["encoders"]}
    return json.dumps({"schema_version": 1, "upload_id": upload_id, "decision": decision, "moderator": "ana",
                       "decided_at": decided_at,
                       "verdict": {"score": score, "threshold": 0.55, "flagged": score < 0.55,
                                   "models": {**base, **models}, "decided_at": "2026-11-01T09:00:00Z"}})


def _calibrate(tiny_models: Path, tmp_path: Path, *args: str):  # type: ignore[no-untyped-def]
    target = tmp_path / "threshold.json"
    result = CliRunner().invoke(main, ["calibrate", *args, "--threshold-file", str(target), "--json",
                                       "--model-dir", str(tiny_models), "--profile", "tiny"])
    assert result.exit_code == 0, result.output
    return json.loads(target.read_text())


def test_labels_take_confirmed_uploads_out_and_put_dismissed_ones_in(tiny_models: Path, tmp_path: Path) -> None:
    fp = fingerprint(_settings(tiny_models))
    audit = tmp_path / "audit.jsonl"
    audit.write_text("\n".join(_verdict(f"u{i}", 0.5 + i / 100, fp) for i in range(5)) + "\n")
    labels = tmp_path / "labels.jsonl"
    labels.write_text("\n".join([
        _label("u1", "confirmed", 0.51, fp),  # an attack in the audit: out
        _label("u2", "dismissed", 0.52, fp),  # a false positive in the audit: stays, once
        _label("n1", "dismissed", 0.6, fp),  # a false positive the audit lacks: in, with its label's score
        _label("n2", "dismissed", 0.61, fp, encoders=fp["encoders"][:1]),  # judged by another ensemble: not used
        _label("c9", "confirmed", 0.2, fp),  # an attack the audit lacks: nothing to take out
        _label("u3", "dismissed", 0.53, fp, decided_at="2026-11-01T10:00:00Z"),
        _label("u3", "confirmed", 0.53, fp, decided_at="2026-11-02T10:00:00Z"),  # the later decision holds: out
        _label("u4", "confirmed", 0.54, fp, decided_at="2026-11-03T10:00:00Z"),
        _label("u4", "dismissed", 0.54, fp, decided_at="2026-11-02T10:00:00Z"),  # later in the log, decided earlier
        "not json",
        _label("u0", "maybe", 0.5, fp),  # not a decision the schema knows: unreadable, u0 stays as audited
    ]) + "\n")
    record = _calibrate(tiny_models, tmp_path, "--audit", str(audit), "--labels", str(labels))
    assert record["n"] == 3  # u0, u2 and n1
    assert record["threshold"] == pytest.approx(0.5)  # the lowest of [0.5, 0.52, 0.6] at a 1% target
    assert record["source"] == (
        f"audit {audit}: 5 records, 5 used, 0 from another configuration, 0 replays, 0 unreadable; "
        f"labels {labels}: 11 read for 7 uploads, 2 dismissed used as clean (1 in the audit, 1 added from labels), "
        "4 confirmed excluded (3 found in the audit), 1 from another configuration, 2 unreadable")
    from streamdetect.offline.calibrate import labelled_scores

    scores, _ = labelled_scores(str(audit), labels.read_text().splitlines(), "l", fp)
    assert sorted(scores) == [0.5, 0.52, 0.6]


def test_labels_alone_calibrate_on_the_dismissed_verdicts(tiny_models: Path, tmp_path: Path) -> None:
    fp = fingerprint(_settings(tiny_models))
    labels = tmp_path / "labels.jsonl"
    labels.write_text("\n".join([_label("a", "dismissed", 0.4, fp), _label("b", "dismissed", 0.45, fp),
                                 _label("c", "confirmed", 0.1, fp),
                                 _label("d", "dismissed", 0.3, fp, captioner="hf:another")]) + "\n")
    record = _calibrate(tiny_models, tmp_path, "--labels", str(labels))
    assert record["n"] == 2 and record["threshold"] == pytest.approx(0.4)
    assert record["source"] == (f"labels {labels}: 4 read for 4 uploads, 2 dismissed used as clean, 1 confirmed "
                                "excluded, 1 from another configuration, 0 unreadable")


def test_a_confirmed_attack_no_longer_pulls_the_threshold_down(tiny_models: Path, tmp_path: Path) -> None:
    fp = fingerprint(_settings(tiny_models))
    scores = np.random.default_rng(1).normal(0.7, 0.05, 500)
    audit = tmp_path / "audit.jsonl"
    audit.write_text("\n".join([_verdict(f"u{i}", float(s), fp) for i, s in enumerate(scores)]
                               + [_verdict("attack", 0.05, fp)]) + "\n")
    labels = tmp_path / "labels.jsonl"
    labels.write_text(_label("attack", "confirmed", 0.05, fp) + "\n")
    unlabelled = _calibrate(tiny_models, tmp_path, "--audit", str(audit), "--target-fpr", "0.02")
    labelled = _calibrate(tiny_models, tmp_path, "--audit", str(audit), "--labels", str(labels),
                          "--target-fpr", "0.02")
    # m = floor(0.02 * (n + 1)) - 1 = 9 for n = 500 and 501: the attack takes one of the lowest ten places.
    assert unlabelled["n"] == 501 and unlabelled["threshold"] == pytest.approx(np.sort(scores)[8])
    assert labelled["n"] == 500 and labelled["threshold"] == pytest.approx(np.sort(scores)[9])
    assert "1 confirmed excluded (1 found in the audit)" in labelled["source"]


def test_labels_do_not_go_with_a_clean_folder(tiny_models: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["calibrate", "--clean-dir", str(tmp_path), "--labels", "l.jsonl",
                                       "--threshold-file", str(tmp_path / "t.json")])
    assert result.exit_code == 2 and "does not go with --clean-dir" in result.output
    result = CliRunner().invoke(main, ["calibrate", "--audit", "-", "--labels", "-",
                                       "--threshold-file", str(tmp_path / "t.json")], input="")
    assert result.exit_code == 2 and "cannot both read stdin" in result.output


def test_labels_topic_is_read_by_the_cli(tiny_models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import streamdetect.cli.offline as offline_cli

    fp = fingerprint(_settings(tiny_models))
    events = [json.loads(_label(u, "dismissed", s, fp)) for u, s in (("a", 0.4), ("b", 0.45))]
    monkeypatch.setattr(offline_cli, "topic_events", lambda settings, which: events if which == "labels" else [])
    record = _calibrate(tiny_models, tmp_path, "--labels", "topic")
    assert record["n"] == 2 and record["source"].startswith("labels topic labels: 2 read for 2 uploads")
