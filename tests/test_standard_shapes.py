"""The standard-shapes profile: the standard profile's architectures at their published sizes
with random weights, for GPU throughput without a model hub; and deploy/gpu/measure.sh.

Real sizes are checked on torch's meta device (no memory, no writes); the build, the save
layout and the loaders are exercised on a scaled-down build (same code, widths and depths
shrunk), which also runs one batch through every model and through `bench --models-only`."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import open_clip
import pytest
import torch
from click.testing import CliRunner

from streamdetect.bench.run import bench_images
from streamdetect.cli.main import main
from streamdetect.models import get_profile, load_models, parse_spec
from streamdetect.models import profiles
from streamdetect.models import standard_shapes as shapes
from streamdetect.models.tiny import WORDS
from streamdetect.settings import OTHER_VARIABLES, PROFILES, Settings

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "deploy" / "gpu" / "measure.sh"
SMALL = 1 / 32  # the tests' scale: the same folders in about a second and 13 MB

# Unique parameters at the published sizes (tied matrices counted once). BLIP base's checkpoint
# stores its tied output matrix twice (30524 x 768 more), which is the "247M" often quoted.
EXPECTED = {
    "captioner (BLIP base)": 223_971_644,
    "unet (SD 2.1 / SD-Turbo)": 865_910_724,
    "vae (SD 2.1 autoencoder)": 83_653_863,
    "text_encoder (SD 2.x, OpenCLIP ViT-H text tower, 23 layers)": 340_387_840,
    "ViT-B-32 (whole CLIP)": 151_277_313,
    "ViT-B-16 (whole CLIP)": 149_620_737,
    "ViT-L-14 (whole CLIP)": 427_616_513,
}
EXPECTED_VISUAL = {"ViT-B-32": 87_849_216, "ViT-B-16": 86_192_640, "ViT-L-14": 303_966_208}
EXPECTED_TOTAL = 2_242_438_634


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_every_architecture_has_its_published_size_on_the_meta_device() -> None:
    with torch.device("meta"):
        built = {
            "captioner (BLIP base)": shapes.blip_model(),
            "unet (SD 2.1 / SD-Turbo)": shapes.unet_model(),
            "vae (SD 2.1 autoencoder)": shapes.vae_model(),
            "text_encoder (SD 2.x, OpenCLIP ViT-H text tower, 23 layers)": shapes.text_encoder_model(),
            **{f"{arch} (whole CLIP)": shapes.open_clip_model(arch) for arch in shapes.ENCODERS.values()},
        }
        counts = {name: _count(model) for name, model in built.items()}
        visual = {arch: _count(built[f"{arch} (whole CLIP)"].visual) for arch in shapes.ENCODERS.values()}
    assert counts == EXPECTED
    assert visual == EXPECTED_VISUAL
    assert sum(counts.values()) == EXPECTED_TOTAL


def test_the_open_clip_configs_are_open_clips_own_with_quick_gelu() -> None:
    for arch in shapes.ENCODERS.values():
        ours, bundled = shapes.open_clip_config(arch), open_clip.get_model_config(arch)
        assert ours["quick_gelu"] is True  # the OpenAI weights' activation
        assert ours["embed_dim"] == bundled["embed_dim"]
        assert ours["vision_cfg"] == {**bundled["vision_cfg"], "head_width": 64}  # open_clip's default
        assert ours["text_cfg"] == {**bundled["text_cfg"]}


def test_the_configs_keep_the_published_numbers() -> None:
    unet = shapes.unet_config()
    assert unet["block_out_channels"] == (320, 640, 1280, 1280)
    assert unet["attention_head_dim"] == (5, 10, 20, 20) and unet["cross_attention_dim"] == 1024
    assert (unet["norm_num_groups"], unet["layers_per_block"], unet["sample_size"]) == (32, 2, 64)
    assert shapes.vae_config()["block_out_channels"] == (128, 256, 512, 512)
    text = shapes.text_encoder_config()
    assert (text["hidden_size"], text["num_hidden_layers"], text["num_attention_heads"]) == (1024, 23, 16)
    blip = shapes.blip_config()
    assert blip["vision_config"]["image_size"] == 384 and blip["text_config"]["vocab_size"] == 30524
    assert len(shapes.blip_vocab()) == 30523  # + [ENC], added as a special token: 30524


def test_the_profile_points_at_the_built_folders_with_the_standard_options(tmp_path: Path) -> None:
    assert "standard-shapes" in PROFILES and "standard-shapes" in profiles.PROFILES
    assert profiles.STANDARD_SHAPES_ENCODERS == tuple(shapes.ENCODERS)
    profile = get_profile("standard-shapes", tmp_path, device="cuda")
    standard = get_profile("standard", tmp_path, device="cuda")
    root = tmp_path.resolve() / "standard-shapes"
    assert profile.captioner == f"hf:{root / 'captioner'}"
    assert parse_spec(profile.generator).name == str(root / "generator")
    assert dict(parse_spec(profile.generator).options) == dict(parse_spec(standard.generator).options)
    assert [parse_spec(e).name for e in profile.encoders] == [str(root / e) for e in shapes.ENCODERS]
    assert (profile.device, profile.dtype) == ("cuda", "fp16")
    assert get_profile("standard-shapes", tmp_path).dtype == "fp32"
    assert Settings(profile="standard-shapes").profile == "standard-shapes"


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model_dir = tmp_path_factory.mktemp("models")
    shapes.ensure_standard_shapes(model_dir, scale=SMALL)
    return model_dir


def test_a_scaled_build_loads_through_the_real_loaders_and_runs_a_batch(small_dir: Path) -> None:
    models = load_models(get_profile("standard-shapes", small_dir))
    assert [e.dim for e in models.encoders] == [shapes.open_clip_config(a, SMALL)["embed_dim"]
                                                for a in shapes.ENCODERS.values()]
    assert models.generator.steps == 1 and models.generator.guidance == 0
    unet = models.generator.pipeline.unet
    assert tuple(unet.config.block_out_channels) == shapes.unet_config(SMALL)["block_out_channels"]
    images = [image.resize((256, 256)) for image in bench_images(2)]
    captions = models.captioner.caption(images)
    assert all(captions) and {w for c in captions for w in c.split()} <= set(WORDS)
    assert len(captions[0].split()) == 20  # never stops early: the captioner's worst case
    regenerated = models.generator.generate(captions, [0, 1])
    assert [im.size for im in regenerated] == [(512, 512)] * 2  # SD-Turbo's 64x64 latents, decoded
    for encoder in models.encoders:
        embeddings = encoder.embed([*images, *regenerated])
        assert embeddings.shape == (4, encoder.dim) and torch.isfinite(embeddings).all()


def test_the_build_is_lazy_idempotent_and_rebuilt_for_another_scale(small_dir: Path, monkeypatch) -> None:
    target = small_dir / "standard-shapes"
    stamp = json.loads((target / ".complete").read_text())
    assert stamp == {"version": shapes.SHAPES_VERSION, "seed": 0, "scale": SMALL}

    def no_build(*_: object) -> None:
        raise AssertionError("a complete build was built again")

    with monkeypatch.context() as patch:
        patch.setattr(shapes, "build_all", no_build)
        assert shapes.ensure_standard_shapes(small_dir, scale=SMALL) == target
        with pytest.raises(AssertionError, match="built again"):  # a different size is another build
            shapes.ensure_standard_shapes(small_dir, scale=SMALL / 2)
    assert json.loads((target / ".complete").read_text()) == stamp  # the failed rebuild left it alone
    assert not [p for p in small_dir.iterdir() if p.name.startswith(".standard-shapes-")]
    with pytest.raises(ValueError, match="scale"):
        shapes.ensure_standard_shapes(small_dir, scale=2)


def test_models_prepare_and_bench_models_only_run_the_profile(small_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """The CLI path on the small build (DEFAULT_SCALE patched so that nothing is rebuilt)."""
    monkeypatch.setattr(shapes, "DEFAULT_SCALE", SMALL)
    runner = CliRunner()
    prepared = runner.invoke(main, ["models", "prepare", "--profile", "standard-shapes", "--model-dir", str(small_dir)])
    assert prepared.exit_code == 0, prepared.output
    assert str(small_dir.resolve() / "standard-shapes" / "encoder-vit-l-14") in prepared.output
    out = tmp_path / "bench.json"
    result = runner.invoke(main, ["--log-level", "warning", "bench", "--models-only", "--profile", "standard-shapes",
                                  "--model-dir", str(small_dir), "--images", "2", "--batch-sizes", "2",
                                  "--image-size", "64", "--json", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    report = json.loads(out.read_text())
    assert report["setup"]["profile"] == "standard-shapes" and report["setup"]["fast_paths"] == []  # CPU: untouched
    assert report["setup"]["attention"]["generator[0].unet"] == "AttnProcessor2_0"  # SDPA
    engine, stages = report["batches"]["2"]["engine"], report["batches"]["2"]["stages"]
    assert engine["errors"] == 0 and engine["images_per_s"] > 0 and engine["p99_ms"] >= engine["p50_ms"] > 0
    assert set(engine["stages"]) == {"caption", "generate", "embed"}
    assert set(stages["generate"]["split_ms_per_batch"]) == {"text_encoder_ms", "unet_ms", "vae_decode_ms", "other_ms"}
    assert set(stages["embed"]) == set(shapes.ENCODERS)
    assert report["reference"]["images_per_s"] > 0
    assert "engine" in result.output and "generate split" in result.output


def test_bench_flags_of_the_in_process_run_are_refused_with_the_broker() -> None:
    result = CliRunner().invoke(main, ["bench", "--with-broker", "--compile"])
    assert result.exit_code == 2 and "--compile apply to --models-only runs only" in result.output


# ---------------------------------------------------------------- deploy/gpu/measure.sh


def test_the_script_exists_is_executable_and_parses() -> None:
    assert SCRIPT.is_file() and os.access(SCRIPT, os.X_OK)
    text = SCRIPT.read_text()
    assert text.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in text
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    known = {"STREAMDETECT_" + name.upper() for name in Settings.model_fields} | set(OTHER_VARIABLES)
    assert set(re.findall(r"STREAMDETECT_[A-Z0-9_]+", text)) <= known


def _has_gpu() -> bool:
    smi = shutil.which("nvidia-smi")
    listed = smi is not None and subprocess.run([smi, "-L"], capture_output=True, text=True).stdout.startswith("GPU")
    return listed or torch.cuda.is_available()


@pytest.mark.skipif(_has_gpu(), reason="a GPU is here: the script would measure for minutes")
def test_the_script_stops_at_once_without_cuda(tmp_path: Path) -> None:
    env = {**os.environ, "OUT": str(tmp_path / "out"), "MODEL_DIR": str(tmp_path / "models")}
    start = time.monotonic()
    run = subprocess.run([str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode != 0 and "no CUDA" in run.stderr, run.stdout + run.stderr
    assert time.monotonic() - start < 10
    assert not (tmp_path / "models").exists() and not (tmp_path / "out").exists()  # nothing built first


@pytest.mark.skipif(_has_gpu() or not (ROOT / ".venv" / "bin" / "python").exists(),
                    reason="needs this clone's .venv and no GPU")
def test_the_script_asks_torch_too_before_building(tmp_path: Path) -> None:
    """A driver tool that lists a GPU is not enough: torch must see it before models are built."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'GPU 0: Fake GPU (UUID: GPU-0)'\n")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "OUT": str(tmp_path / "out"),
           "MODEL_DIR": str(tmp_path / "models"), "CUDA_VISIBLE_DEVICES": ""}
    run = subprocess.run([str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and "no CUDA" in run.stderr and "sees none" in run.stderr, run.stdout + run.stderr
    assert not (tmp_path / "models").exists()
