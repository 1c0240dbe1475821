"""The mini domain: deterministic scenes, shipped trained models that load through the `mini`
profile like real ones, and the detection floor measured with real attacks on them."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from streamdetect.mini.domain import (ALL_SCENES, make_item, make_split, parse_caption, render, to_images, to_tensor,
                                      wrong_caption)
from streamdetect.models import get_profile, load_models, parse_spec
from streamdetect.models.profiles import MINI_WEIGHTS


@pytest.fixture(scope="module")
def mini_models():
    return load_models(get_profile("mini", MINI_WEIGHTS))


def test_scenes_are_a_pure_function_of_seed_split_and_index():
    a, scene_a = make_item(3, "train", 17)
    b, scene_b = make_item(3, "train", 17)
    assert scene_a == scene_b and a.tobytes() == b.tobytes()
    others = [make_item(4, "train", 17)[0], make_item(3, "test", 17)[0], make_item(3, "train", 18)[0]]
    assert all(o.tobytes() != a.tobytes() for o in others)
    assert a.size == (32, 32)


def test_captions_name_every_attribute_and_parse_back():
    assert len(ALL_SCENES) == 324 == len({s.caption for s in ALL_SCENES})
    _, scenes = make_split(0, "val", 50)
    assert all(parse_caption(s.caption) == s for s in scenes)
    assert parse_caption("a cat on a sofa") is None


def test_wrong_caption_is_a_visibly_different_scene():
    rng = np.random.default_rng(0)
    for scene in ALL_SCENES[:40]:
        other = parse_caption(wrong_caption(scene, rng))
        assert other is not None
        changed = [i for i, (x, y) in enumerate(zip(other.attributes(), scene.attributes())) if x != y]
        assert len(changed) == 1 and changed[0] in (0, 2, 3)  # shape, size or position


def test_bad_split_and_index_are_named_in_the_error():
    with pytest.raises(ValueError, match="'tset'"):
        make_item(0, "tset", 0)
    with pytest.raises(ValueError, match="-1"):
        make_item(0, "train", -1)


def test_pixels_round_trip_through_8_bit_images():
    images, _ = make_split(0, "test", 4)
    x = to_tensor(images)
    assert [im.tobytes() for im in to_images(x)] == [im.tobytes() for im in images]


def test_mini_profile_points_at_the_shipped_safetensors():
    profile = get_profile("mini", MINI_WEIGHTS.parent)  # model_dir is not where mini lives
    assert parse_spec(profile.generator).kind == "mini-t2i"
    assert len(profile.encoders) == 3
    files = [p for p in MINI_WEIGHTS.rglob("*") if p.is_file()]
    weights = [p for p in files if p.suffix in (".safetensors", ".bin", ".pt", ".pth", ".ckpt")]
    assert weights and all(p.suffix == ".safetensors" for p in weights)
    assert sum(p.stat().st_size for p in files) <= 30 * 2**20


def test_shipped_captioner_reads_clean_test_images(mini_models):
    images, scenes = make_split(0, "test", 64)
    captions = mini_models.captioner.caption(images)
    accuracy = np.mean([c == s.caption for c, s in zip(captions, scenes)])
    assert accuracy >= 0.75, list(zip(captions, [s.caption for s in scenes]))[:5]


def test_shipped_generator_draws_what_it_is_told_and_is_seeded(mini_models):
    _, scenes = make_split(0, "test", 32)
    prompts = [s.caption for s in scenes]
    seeds = list(range(len(prompts)))
    generated = mini_models.generator.generate(prompts, seeds)
    first = mini_models.generator.generate(prompts[:3], seeds[:3])
    again = mini_models.generator.generate(prompts[:3], seeds[:3])
    assert [g.tobytes() for g in first] == [g.tobytes() for g in again]  # same seeds, same batch: identical
    # In a batch of another size, CPU kernels may round differently: a pixel level or two, no more.
    drift = max(np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max() for a, b in zip(generated, first))
    assert drift <= 2
    back = mini_models.captioner.caption(generated)
    assert np.mean([b == p for b, p in zip(back, prompts)]) >= 0.5


def test_shipped_encoders_tell_scenes_apart(mini_models):
    """Two drawings of one scene embed closer than drawings of visibly different scenes."""
    rng = np.random.default_rng(1)
    scenes = [ALL_SCENES[i] for i in rng.choice(len(ALL_SCENES), 20, replace=False)]
    first = [render(s, rng) for s in scenes]
    second = [render(s, rng) for s in scenes]
    other = [render(parse_caption(wrong_caption(s, rng)), rng) for s in scenes]
    assert len({e.name for e in mini_models.encoders}) == 3
    for encoder in mini_models.encoders:
        a, b, c = encoder.embed(first), encoder.embed(second), encoder.embed(other)
        assert torch.allclose(a.norm(dim=-1), torch.ones(20), atol=1e-4)
        same, different = float((a * b).sum(-1).mean()), float((a * c).sum(-1).mean())
        assert same > different + 0.2, (encoder.name, same, different)


def test_mini_generator_rejects_sizes_it_cannot_draw(mini_models):
    with pytest.raises(ValueError, match="height=64"):
        mini_models.generator.pipeline(prompt=["a"], height=64)


# Issue 5's floor. The shipped models measure 0.98 on n=100 (streamdetect mini eval); this test
# runs n=60 and fails below 0.9.
PGD8_AUROC_FLOOR = 0.9


def test_detection_floor_on_real_attacks():
    """Reduced `streamdetect mini eval`: vanilla MirrorCheck must keep its AUROC on eps 8/255 PGD
    above the floor, and stochastic MirrorCheck must not do worse than vanilla on the adaptive
    attack by more than noise (two standard errors of the difference)."""
    from streamdetect.mini.eval.run import EvalSettings, run_eval

    settings = EvalSettings(n=60, eps=(8.0,), attacks=("pgd", "adaptive"), methods=("mirrorcheck", "stochastic"),
                            attack_steps=60, steps_sweep=())
    rows = {(r["method"], r["attack"]): r for r in run_eval(settings, log=print)["rows"]}  # one aim per method
    pgd = rows[("mirrorcheck", "pgd")]
    # The attack is real: it moves most captions, and often to exactly the chosen target.
    assert pgd["caption_changed_rate"] >= 0.5 and pgd["attack_success_rate"] >= 0.25, pgd
    assert pgd["auroc"] >= PGD8_AUROC_FLOOR, pgd
    vanilla, stochastic = rows[("mirrorcheck", "adaptive")], rows[("stochastic", "adaptive")]
    noise = 2 * math.hypot(vanilla["auroc_se"], stochastic["auroc_se"])
    assert stochastic["auroc"] >= vanilla["auroc"] - noise, (vanilla, stochastic)


def test_mini_scenes_writes_the_split_with_its_captions(tmp_path):
    from click.testing import CliRunner

    from streamdetect.cli.main import main

    result = CliRunner().invoke(main, ["mini", "scenes", "--split", "val", "--n", "3", "--start", "5",
                                       "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    images, scenes = make_split(0, "val", 3, start=5)
    rows = (tmp_path / "captions.csv").read_text().splitlines()
    assert rows == ["file,caption", *(f"{5 + i:04d}.png,{s.caption}" for i, s in enumerate(scenes))]
    from PIL import Image

    assert [Image.open(tmp_path / f"{5 + i:04d}.png").convert("RGB").tobytes() for i in range(3)] == \
        [im.tobytes() for im in images]


def test_regeneration_noise_splits_the_variance_and_averaging_shrinks_it() -> None:
    from streamdetect.mini.eval.regeneration_noise import summarise

    # two scenes whose scores differ only by seed (+-0.02): all of the spread is regeneration noise
    result = summarise([[0.90, 0.94, 0.90, 0.94], [0.94, 0.90, 0.94, 0.90]])
    assert result["regeneration_share"] == 1.0
    assert result["averaging"][1]["clean_std"] == 0.0  # two seeds averaged cancel it here
    assert result["averaging"][0]["clean_std"] > 0.02


# Measured on this reduced run: weakest-rival attack success 0.95, the recommended detector's
# AUROC 0.962 (standard error 0.023) with 35% undetected at 5% FPR; PGD AUROC 1.00. The
# floors sit about two standard errors away (issue 12's goal, 10% undetected, is not reached:
# README, "Defences against adaptive attacks").
STRONGEST_SUCCESS_FLOOR = 0.75
STRONGEST_AUROC_FLOOR = 0.90
UNDETECTED_CEILING = 0.50
RECOMMENDED_PGD_FLOOR = 0.95


def test_recommended_detector_floor_against_the_strongest_adaptive_attack():
    """Issue 12's floor, reduced (n=40 test, 60 validation scenes, eps 8): the detector README
    recommends, against the strongest attack in the suite (toward the rival caption its own
    encoders are least sure against, hardened against all its signals), must keep its AUROC and
    undetected-success rate, and its AUROC on plain PGD."""
    from streamdetect.mini import RECOMMENDED
    from streamdetect.mini.eval.run import EvalSettings, run_eval

    settings = EvalSettings(n=40, n_val=60, eps=(8.0,), attacks=("pgd", "weakest"),
                            methods=(RECOMMENDED,), steps_sweep=())
    rows = {(r["method"], r["attack"]): r for r in run_eval(settings, log=print)["rows"]}
    strongest, pgd = rows[(RECOMMENDED, "weakest")], rows[(RECOMMENDED, "pgd")]
    print({k: strongest[k] for k in ("auroc", "auroc_se", "undetected_success_rate", "attack_success_rate")},
          {k: pgd[k] for k in ("auroc", "auroc_se")})
    assert strongest["attack_success_rate"] >= STRONGEST_SUCCESS_FLOOR, strongest  # the attack is real
    assert strongest["undetected_success_rate"] <= UNDETECTED_CEILING, strongest
    assert strongest["auroc"] >= STRONGEST_AUROC_FLOOR, strongest
    assert pgd["auroc"] >= RECOMMENDED_PGD_FLOOR, pgd


def test_attack_command_shows_the_easiest_caption_attack_on_the_robust_detector(tmp_path):
    from click.testing import CliRunner
    from PIL import Image

    from streamdetect.cli.main import main

    result = CliRunner().invoke(main, ["attack", "--kind", "easiest", "--against", "robust", "--n", "2",
                                       "--steps", "5", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "results.json").read_text())
    assert summary["scored_with"] == ["robust-vit-a", "robust-vit-b", "robust-rn"]
    for item in summary["items"]:
        assert round(item["linf_255"], 3) <= 8 and item["target"] != item["truth"]  # whole 8-bit levels
        assert item["success"] == (item["attacked_caption"] == item["target"])
    assert Image.open(tmp_path / "grid.png").size == (4 * 128 + 3 * 2, 2 * 128 + 2)


def test_cascades_against_attacks_aimed_at_their_first_stages():
    """Issue 14's proof, reduced (n=16 test, 40 validation scenes, eps 8, 30 attack steps): the
    weakest-rival attack aimed at every signal of the robust detectors and at each cascade's first
    stage. The swap cascade (`cascade=swap`: rivals with one word swapped, from the vocabulary) is
    no worse than always-regenerate beyond two paired standard errors in undetected-success and
    TPR at 1% FPR at every aim, the aim "beam" included; so is the margin cascade with the
    captioner's beam rivals (`cascade=margin`) at the robust aims and its own band. Two known
    losses (README "The cascade", n=50) are held from growing: the agreement cascade's TPR at 1%
    FPR (-0.10, -0.13), and the beam-rival margin cascade against the aim "beam", which pushes the
    true caption out of the captioner's beam (+0.26 undetected, -0.18 TPR)."""
    from streamdetect.mini.eval.run import EvalSettings, run_eval

    settings = EvalSettings(n=16, n_val=40, eps=(8.0,), attacks=("weakest",),
                            methods=("robust", "robust_cascade", "swap_cascade", "beam_cascade"), attack_steps=30,
                            steps_sweep=())
    comparison = run_eval(settings, log=print)["cascade"]
    pairs = {(p["cascade"], p["aimed_at"]): p for p in comparison["pairs"]}
    assert set(pairs) == {("robust_cascade", "robust"), ("robust_cascade", "robust_first_stage"),
                          *((c, aim) for c in ("swap_cascade", "beam_cascade")
                            for aim in ("robust", "margin_first_stage", "beam"))}, pairs.keys()
    for cascade in ("robust_cascade", "swap_cascade", "beam_cascade"):
        assert comparison["clean_exit_rate"][cascade] >= 0.5  # the cascade does skip regeneration
    for (cascade, aim), pair in pairs.items():
        print(cascade, aim, pair["undetected_success_rate"], pair["tpr_at_1pct_fpr"], pair["attacked_exit_rate"])
        und, tpr = pair["undetected_success_rate"], pair["tpr_at_1pct_fpr"]
        if (cascade, aim) == ("beam_cascade", "beam"):
            assert und["difference"] <= 0.5 and -tpr["difference"] <= 0.4, pair
            continue
        assert und["difference"] <= 2 * und["se"] + 1e-9, pair
        if cascade != "robust_cascade":
            assert -tpr["difference"] <= 2 * tpr["se"] + 1e-9, pair
        else:
            assert -tpr["difference"] <= 0.2, pair


def test_captioner_rivals_come_from_its_own_beam_without_the_caption(mini_models):
    images = to_images(to_tensor(make_split(0, "test", 4)[0]))
    captions = mini_models.captioner.caption(images)
    rivals = mini_models.captioner.rivals(images, captions, k=3)
    assert len(rivals) == len(images)
    for caption, theirs in zip(captions, rivals):
        assert 1 <= len(theirs) <= 3 and caption not in theirs and len(set(theirs)) == len(theirs)
    assert rivals == mini_models.captioner.rivals(images, captions, k=3)  # deterministic
    assert mini_models.captioner.rivals([], [], k=3) == []
