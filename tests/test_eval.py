"""`streamdetect eval` on generated folders with the tiny profile: outputs written and opened."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from streamdetect.cli.main import main  # noqa: E402
from streamdetect.offline.items import collect_csv, collect_folders  # noqa: E402

SUMMARY_KEYS = {"auroc", "accuracy", "tpr", "fpr", "precision", "tp", "fp", "tn", "fn", "threshold", "n_clean",
                "n_adversarial", "tpr_at_1pct_fpr"}


def _noise(seed: int, size: int = 32) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """clean/ and adv/ inputs; clean_gen/ holds each clean input itself under the same name (a
    perfect regeneration), adv_gen/ unrelated pictures under other names (sorted like adv/)."""
    root = tmp_path_factory.mktemp("eval")
    for name in ("clean", "adv", "clean_gen", "adv_gen"):
        (root / name).mkdir()
    for i in range(3):
        _noise(i).save(root / "clean" / f"img{i}.png")
        _noise(i).save(root / "clean_gen" / f"img{i}.png")
        _noise(10 + i).save(root / "adv" / f"x{i}.png")
        _noise(20 + i).save(root / "adv_gen" / f"{i:05d}.png")
    return root


def _run(args: list[str], tiny_models: Path) -> str:
    result = CliRunner().invoke(main, [*args, "--model-dir", str(tiny_models), "--profile", "tiny", "--quiet"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_pairing_by_name_and_by_index(folders: Path) -> None:
    items, unpaired = collect_folders(folders / "clean", folders / "adv", folders / "clean_gen", folders / "adv_gen",
                                      "name")
    assert [i.name for i in items] == ["clean/img0.png", "clean/img1.png", "clean/img2.png"]
    assert unpaired == ["adversarial/x0.png", "adversarial/x1.png", "adversarial/x2.png"]  # names differ
    items, unpaired = collect_folders(folders / "clean", folders / "adv", folders / "clean_gen", folders / "adv_gen",
                                      "index")
    assert not unpaired and [(i.input.name, i.generated.name, i.label) for i in items][3:] == [
        ("x0.png", "00000.png", 1), ("x1.png", "00001.png", 1), ("x2.png", "00002.png", 1)]


def test_mapping_csv_errors_name_the_problem(tmp_path: Path, folders: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("image,label\na.png,0\n")
    with pytest.raises(ValueError, match=r"lacks columns \['input'\]"):
        collect_csv(bad)
    bad.write_text(f"input,label\n{folders / 'clean' / 'img0.png'},maybe\n")
    with pytest.raises(ValueError, match=r"bad.csv:2: label 'maybe' is not 0/clean or 1/adversarial"):
        collect_csv(bad)
    bad.write_text("input,label\nmissing.png,1\n")
    with pytest.raises(ValueError, match="input file .*missing.png does not exist"):
        collect_csv(bad)


def test_eval_with_precomputed_regenerations(folders: Path, tiny_models: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    _run(["eval", "--clean-dir", str(folders / "clean"), "--clean-generated-dir", str(folders / "clean_gen"),
          "--adv-dir", str(folders / "adv"), "--adv-generated-dir", str(folders / "adv_gen"), "--pairing", "index",
          "--out", str(out)], tiny_models)
    summary = json.loads((out / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(summary)
    # A clean input "regenerated" into itself scores 1; unrelated pictures less: perfectly separable.
    assert (summary["n_clean"], summary["n_adversarial"], summary["auroc"]) == (3, 3, 1.0)
    assert (summary["tp"], summary["fp"], summary["tn"], summary["fn"]) == (3, 0, 3, 0)
    rows = list(csv.DictReader((out / "scores.csv").open()))
    assert [r["name"] for r in rows][:3] == ["clean/img0.png", "clean/img1.png", "clean/img2.png"]
    assert all(float(r["score"]) == pytest.approx(1.0, abs=1e-5) for r in rows[:3])
    assert all(r["generated"].endswith(f"{i:05d}.png") for i, r in enumerate(rows[3:]))
    assert list(csv.DictReader((out / "summary.csv").open()))[0]["auroc"] == "1.0"
    with Image.open(out / "roc.png") as png:
        assert png.format == "PNG" and png.size[0] > 600
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 12  # input and regeneration for each of 6 samples
    assert "clean/img1.png" in page and "adversarial/x2.png" in page and 'src="roc.png"' in page


def test_eval_regenerates_stochastically_from_a_csv(folders: Path, tiny_models: Path, tmp_path: Path) -> None:
    """No regenerations given: captions come from the CSV (the victim's output) or the tiny
    captioner, the zoo's generators regenerate, k=2 of 3 encoders score under weight noise."""
    mapping = tmp_path / "pairs.csv"
    mapping.write_text("input,label,caption\n"
                       f"{folders / 'clean' / 'img0.png'},clean,a red cat on the grass\n"
                       f"{folders / 'clean' / 'img1.png'},0,\n"
                       f"{folders / 'adv' / 'x0.png'},adversarial,a blue car\n"
                       f"{folders / 'adv' / 'x1.png'},1,\n")
    out = tmp_path / "out"
    _run(["eval", "--mapping-csv", str(mapping), "--mode", "stochastic", "-k", "2", "--noise-scale", "1e-3",
          "--threshold-mode", "youden", "--out", str(out)], tiny_models)
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["mode"], summary["encoders_per_request"], summary["noise_scale"]) == ("stochastic", 2, 1e-3)
    assert summary["threshold_mode"] == "youden" and len(summary["encoders"]) == 3
    rows = list(csv.DictReader((out / "scores.csv").open()))
    assert rows[0]["caption"] == "a red cat on the grass" and rows[1]["caption"]  # captioned by the model
    for row in rows:
        drawn = json.loads(row["draw"])
        assert len(drawn["encoders"]) == 2 and set(json.loads(row["encoder_scores"])) <= {
            "encoder-vit-a", "encoder-vit-b", "encoder-hf-clip"}
        assert Path(row["generated"]).is_file() and Path(row["generated"]).is_relative_to(out / "regenerated")
    page = (out / "report.html").read_text()
    assert "a red cat on the grass" in page and "a blue car" in page
    assert page.count("data:image/png;base64,") == 8


def test_eval_refuses_bad_arguments(tiny_models: Path, folders: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["eval", "--clean-dir", str(folders / "clean"), "--out", str(tmp_path)])
    assert result.exit_code == 2 and "give --clean-dir and --adv-dir" in result.output
    result = runner.invoke(main, ["eval", "--clean-dir", str(folders / "clean"), "--adv-dir", str(folders / "adv"),
                                  "--threshold", "high", "--clean-generated-dir", str(folders / "clean_gen"),
                                  "--adv-generated-dir", str(folders / "adv_gen"), "--pairing", "index",
                                  "--model-dir", str(tiny_models), "--quiet", "--out", str(tmp_path)])
    assert result.exit_code == 1 and "threshold 'high' is not auto, config or a number" in result.output
