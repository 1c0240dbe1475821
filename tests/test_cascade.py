"""The cascade: the exit threshold fitted on clean agreement for a budget, the worker deciding
confidently agreeing uploads without regeneration and recording which stage decided, the
calibration that fits both thresholds, and the settings that refuse what cannot work."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from streamdetect import events
from streamdetect.app.detector_config import cascade_settings
from streamdetect.app.wiring import build_pipeline
from streamdetect.cli.main import main
from streamdetect.detector import fit_exit, load_swaps
from streamdetect.mini.domain import ALL_SCENES, make_split, neighbours
from streamdetect.offline.calibrate import audit_scores, cascade_scores
from streamdetect.pipeline.engine import Request
from streamdetect.settings import ConfigError, Settings


def test_the_exit_threshold_lets_at_most_the_budget_of_clean_traffic_through() -> None:
    clean = [i / 100 for i in range(100)]
    for share in (0.1, 0.5, 0.8, 0.95):
        t = fit_exit(clean, share)
        assert sum(a >= t for a in clean) <= round(share * 100) + 0, share
        assert sum(a >= t for a in clean) >= round(share * 100) - 1, share
    with pytest.raises(ValueError):
        fit_exit(clean, 1.0)
    with pytest.raises(ValueError):
        fit_exit([0.5, float("nan")], 0.5)


def judge(settings: Settings, images: list[Image.Image]) -> list:
    pipeline = build_pipeline(settings)

    async def run() -> list:
        try:
            return await asyncio.gather(*[pipeline.submit(Request(upload_id=f"u{i}", image=im, seed=i))
                                          for i, im in enumerate(images)])
        finally:
            await pipeline.close()
    return asyncio.run(run())


def fits_the_wire(*verdicts: object) -> None:
    """Each verdict builds a verdict event: the wire schema takes it (it raises otherwise)."""
    for verdict in verdicts:
        upload = events.Upload(upload_id=verdict.upload_id, image="s3://b/k")  # type: ignore[attr-defined]
        events.VerdictEvent.build(verdict.as_dict(), upload, events.Source("uploads", 0, 0), "w",  # type: ignore
                                  "setting", events.image_description("s3://b/k", b"x"),
                                  {"store": None, "input": None, "regenerated": None})


def test_confident_agreement_exits_clean_without_a_regeneration_and_the_rest_regenerate() -> None:
    images = make_split(0, "val", 6)[0]
    agreed = judge(Settings(profile="mini", cascade="agreement", cascade_exit_threshold=-1.0), images)
    assert all(v.decided_by == "first_stage" and v.regenerated is None and not v.flagged for v in agreed)
    assert all(v.score == v.cascade["agreement"] and v.threshold == -1.0 for v in agreed)
    regenerated = judge(Settings(profile="mini", cascade="agreement", cascade_exit_threshold=1.0), images)
    assert all(v.decided_by == "regeneration" and v.regenerated is not None for v in regenerated)
    assert all(v.cascade["exited"] is False for v in regenerated)
    always = judge(Settings(profile="mini"), images)
    assert [round(v.score, 6) for v in always] == [round(v.score, 6) for v in regenerated]  # same MirrorCheck
    assert all(v.cascade is None and v.decided_by == "regeneration" for v in always)
    fits_the_wire(agreed[0], regenerated[0])


def test_the_cascade_needs_an_exit_threshold_and_vanilla_mode(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="calibrate --cascade"):
        cascade_settings(Settings(profile="mini", cascade="agreement"))
    with pytest.raises(ConfigError, match="vanilla"):
        cascade_settings(Settings(profile="mini", cascade="agreement", mode="stochastic", cascade_exit_threshold=0.5))
    assert cascade_settings(Settings(profile="mini")) is None


def calibrate_cascade(tmp_path: Path, first_stage: str, n: int) -> tuple[Path, dict, str]:
    """`calibrate --cascade FIRST_STAGE` on n clean mini scenes at budget 0.5: the file, its record, the output."""
    clean = tmp_path / "clean"
    clean.mkdir()
    for i, image in enumerate(make_split(0, "val", n)[0]):
        image.save(clean / f"{i:03d}.png")
    target = tmp_path / "threshold.json"
    result = CliRunner().invoke(main, ["calibrate", "--profile", "mini", "--cascade", first_stage,
                                       "--cascade-exit-share", "0.5", "--clean-dir", str(clean), "--target-fpr", "0.1",
                                       "--threshold-file", str(target)])
    assert result.exit_code == 0, result.output
    return target, json.loads(target.read_text()), result.output


def test_calibrate_fits_the_exit_for_the_budget_and_the_worker_reads_it(tmp_path: Path) -> None:
    target, record, output = calibrate_cascade(tmp_path, "agreement", 20)
    assert record["cascade"]["exit_share"] == 0.5 and record["cascade"]["exited_on_fit"] == 0.5
    assert record["cascade"]["n"] == 20 and "cascade: exit clean" in output
    # The MirrorCheck threshold is fitted on the cascade's scores of all 20 (half of them exited, at 1.0).
    assert record["n"] == 20 and record["threshold"] < 1.0
    fitted = cascade_settings(Settings(profile="mini", cascade="agreement", threshold_file=str(target)))
    assert fitted.exit_threshold == record["cascade"]["exit_threshold"]


def test_audit_first_stage_verdicts_give_agreement_not_mirrorcheck_scores() -> None:
    fp = {"mode": "vanilla", "captioner": "c", "generators": ["g"], "encoders": ["e"], "encoders_per_request": None,
          "noise_scale": None}
    lines = [json.dumps({"upload_id": "a", "score": 0.7, "decided_by": "first_stage",
                         "models": {"captioner": "c", "generator": None, "encoders": ["e"]},
                         "cascade": {"agreement": 0.7, "exit_threshold": 0.6, "exited": True, "scores": {}}}),
             json.dumps({"upload_id": "b", "score": 0.9, "decided_by": "regeneration",
                         "models": {"captioner": "c", "generator": "g", "encoders": ["e"]},
                         "cascade": {"agreement": 0.4, "exit_threshold": 0.6, "exited": False, "scores": {}}})]
    found = audit_scores(lines, fp)
    assert found.scores == [0.9] and found.first_stage == 1 and found.agreements == {"a": 0.7, "b": 0.4}
    # Refit with a higher exit: "a" would now regenerate, but it has no MirrorCheck score.
    assert cascade_scores(found.by_upload, found.agreements, 0.65) == ([1.0, 0.9], 0)
    assert cascade_scores(found.by_upload, found.agreements, 0.8) == ([0.9], 1)


def test_bench_cascade_runs_both_detectors_on_one_stream(tmp_path: Path) -> None:
    out = tmp_path / "cascade.json"
    result = CliRunner().invoke(main, ["bench-cascade", "--profile", "mini", "--uploads", "20", "--n-val", "20",
                                       "--budgets", "0.8", "--attacked-share", "0.05", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "always" in result.output and "agreement_0.8" in result.output and "swap_0.8" in result.output
    rows = {r["detector"]: r for r in json.loads(out.read_text())["rows"]}
    assert rows["always"]["skipped_regeneration"] == 0
    for cascade in ("agreement_0.8", "margin_0.8", "swap_0.8"):
        assert rows[cascade]["skipped_regeneration"] > 0 and rows[cascade]["first_stage"] == cascade.split("_")[0]
        assert rows["always"]["attacks"] == rows[cascade]["attacks"] == 1
        assert rows["always"]["uploads"] == rows[cascade]["uploads"] == 20


def test_the_margin_first_stage_measures_the_caption_against_the_captioners_rivals() -> None:
    images = make_split(0, "val", 6)[0]
    exited = judge(Settings(profile="mini", cascade="margin", cascade_exit_threshold=-1.0), images)
    # Whatever the threshold, only a caption that beats its every rival exits (can_exit).
    assert all((v.decided_by == "first_stage") == (v.score > 0) == (v.regenerated is None) for v in exited)
    for v in exited:
        block = v.cascade
        assert block["first_stage"] == "margin" and "agreement" not in block and v.score == block["margin"]
        assert 1 <= len(block["rivals"]) <= 4 and v.caption not in block["rivals"]
    # Clean scenes: the captioner's own caption fits better than its rivals under the encoders.
    assert sum(v.score > 0 for v in exited) >= 5, [v.score for v in exited]
    regenerated = judge(Settings(profile="mini", cascade="margin", cascade_exit_threshold=1.0), images)
    assert all(v.decided_by == "regeneration" and v.cascade["exited"] is False for v in regenerated)
    fits_the_wire(exited[0], regenerated[0])


def test_calibrate_fits_the_margin_exit_and_refuses_a_file_fitted_for_the_other_first_stage(tmp_path: Path) -> None:
    target, record, _ = calibrate_cascade(tmp_path, "margin", 10)
    assert record["cascade"]["mode"] == "margin" and record["cascade"]["exited_on_fit"] == 0.5
    fitted = cascade_settings(Settings(profile="mini", cascade="margin", threshold_file=str(target)))
    assert fitted.first_stage == "margin" and fitted.exit_threshold == record["cascade"]["exit_threshold"]
    with pytest.raises(ConfigError, match="fitted for cascade=margin"):
        cascade_settings(Settings(profile="mini", cascade="agreement", threshold_file=str(target)))


def test_audit_margin_verdicts_give_their_margin_and_a_mixed_log_is_refused(tmp_path: Path) -> None:
    fp = {"mode": "vanilla", "captioner": "c", "generators": ["g"], "encoders": ["e"], "encoders_per_request": None,
          "noise_scale": None}
    margin = {"first_stage": "margin", "margin": 0.05, "rivals": ["x"], "exit_threshold": 0.01, "exited": True,
              "scores": {}}
    line = json.dumps({"upload_id": "a", "score": 0.05, "decided_by": "first_stage",
                       "models": {"captioner": "c", "generator": None, "encoders": ["e"]}, "cascade": margin})
    found = audit_scores([line], fp)
    assert found.agreements == {"a": 0.05} and found.first_stage_kinds == {"margin"}
    audit = tmp_path / "audit.jsonl"
    audit.write_text(line + "\n")
    result = CliRunner().invoke(main, ["calibrate", "--profile", "mini", "--cascade", "agreement", "--audit",
                                       str(audit), "--threshold-file", str(tmp_path / "t.json")])
    assert result.exit_code != 0 and "first stage margin, not agreement" in result.output, result.output


def test_the_swap_first_stage_measures_the_caption_against_itself_with_one_word_swapped() -> None:
    images = make_split(0, "val", 6)[0]
    exited = judge(Settings(profile="mini", cascade="swap", cascade_exit_threshold=-1.0), images)
    assert all((v.decided_by == "first_stage") == (v.score > 0) == (v.regenerated is None) for v in exited)
    for v in exited:
        block = v.cascade
        assert block["first_stage"] == "swap" and v.score == block["margin"] and "unchecked" not in block
        assert sorted(block["rivals"]) == sorted(neighbours(v.caption)) and block["vocabulary"] == \
            load_swaps("mini").fingerprint()
    # Clean scenes: the caption fits better than each of its one-attribute rivals.
    assert sum(v.score > 0 for v in exited) >= 5, [v.score for v in exited]
    fits_the_wire(exited[0])


def test_a_caption_the_swap_stage_cannot_check_is_regenerated_whatever_its_margin() -> None:
    image = make_split(0, "val", 1)[0][0]
    pipeline = build_pipeline(Settings(profile="mini", cascade="swap", cascade_exit_threshold=-1.0))

    async def run() -> list:
        try:
            return await asyncio.gather(*[pipeline.submit(Request(upload_id=f"u{i}", image=image, seed=i, caption=c))
                                          for i, c in enumerate(("a small hexagon", "a background", "red " * 3000,
                                                                 "a large red circle at the left on a large background"))])
        finally:
            await pipeline.close()
    unknown, nothing, huge, off_template = asyncio.run(run())
    for verdict, reason in ((unknown, "does not know: hexagon"), (nothing, "does not follow the vocabulary's templates"),
                            (huge, "more than 64 words"), (off_template, "does not follow the vocabulary's templates")):
        assert verdict.decided_by == "regeneration" and verdict.regenerated is not None, verdict.cascade
        assert reason in verdict.cascade["unchecked"] and verdict.cascade["exited"] is False
    fits_the_wire(unknown)


def test_calibrate_fits_the_swap_exit_for_its_vocabulary_and_the_worker_checks_it(tmp_path: Path) -> None:
    target, record, _ = calibrate_cascade(tmp_path, "swap", 10)
    assert record["cascade"]["mode"] == "swap" and record["cascade"]["exited_on_fit"] == 0.5
    assert record["cascade"]["vocabulary"] == load_swaps("mini").fingerprint()
    fitted = cascade_settings(Settings(profile="mini", cascade="swap", threshold_file=str(target)))
    assert fitted.first_stage == "swap" and fitted.swaps.fingerprint() == record["cascade"]["vocabulary"]
    with pytest.raises(ConfigError, match="fitted with another vocabulary"):
        cascade_settings(Settings(profile="mini", cascade="swap", cascade_vocabulary="general",
                                  threshold_file=str(target)))
    with pytest.raises(ConfigError, match="cascade_vocabulary: vocabulary 'nowhere'"):
        cascade_settings(Settings(profile="mini", cascade="swap", cascade_vocabulary="nowhere",
                                  cascade_exit_threshold=0.1))


def test_audit_swap_verdicts_of_another_vocabulary_or_unchecked_are_no_samples_of_the_fit(tmp_path: Path) -> None:
    fp = {"mode": "vanilla", "captioner": "c", "generators": ["g"], "encoders": ["e"], "encoders_per_request": None,
          "noise_scale": None}

    def line(upload_id: str, **block: object) -> str:
        cascade = {"first_stage": "swap", "margin": 0.05, "rivals": ["x"], "exit_threshold": 0.01, "exited": False,
                   "scores": {}, "vocabulary": load_swaps("mini").fingerprint(), **block}
        return json.dumps({"upload_id": upload_id, "score": 0.6, "decided_by": "regeneration",
                           "models": {"captioner": "c", "generator": "g", "encoders": ["e"]}, "cascade": cascade})
    found = audit_scores([line("a"), line("b", unchecked="no word to swap")], fp)
    assert found.agreements == {"a": 0.05} and found.scores == [0.6, 0.6]
    audit = tmp_path / "audit.jsonl"
    audit.write_text(line("a", vocabulary="0123456789abcdef") + "\n")
    result = CliRunner().invoke(main, ["calibrate", "--profile", "mini", "--cascade", "swap", "--audit",
                                       str(audit), "--threshold-file", str(tmp_path / "t.json")])
    assert result.exit_code != 0 and "swap:0123456789abcdef, not swap:" in result.output, result.output


def test_cached_text_embeddings_equal_fresh_ones_and_stay_bounded() -> None:
    from streamdetect.detector.text_cache import CachedText
    from streamdetect.models.encoders import ImageEncoder
    from streamdetect.models.profiles import MINI_ENCODERS, MINI_WEIGHTS

    encoder = ImageEncoder.load(f"open_clip:{MINI_WEIGHTS / MINI_ENCODERS[0]}")
    cached = CachedText(encoder, size=5)
    captions = [s.caption for s in ALL_SCENES[:8]]
    first = cached.embed_text(captions[:4] + captions[:2])  # repeats inside one call are embedded once
    assert cached.misses == 4 and cached.hits == 2
    again = cached.embed_text(captions)
    assert cached.misses == 8 and len(cached._rows) == 5
    fresh = encoder.embed_text(captions)
    assert torch.allclose(again, fresh, atol=1e-5) and torch.allclose(first[4:], fresh[:2], atol=1e-5)
    assert cached.embed_text([]).shape == (0, encoder.dim)
