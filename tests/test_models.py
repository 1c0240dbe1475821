"""streamdetect.models: spec parsing, profiles, and tiny random-weight models loaded through
the same code path as real ones (no hub access: HF_HUB_OFFLINE=1)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from streamdetect.models import (  # noqa: E402
    Captioner,
    Generator,
    ImageEncoder,
    ModelSpec,
    ensure_tiny_models,
    format_spec,
    get_profile,
    load_models,
    parse_spec,
)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_tiny_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def tiny_set(tiny_model_dir: Path):
    # Not named tiny_models: tests/conftest.py has a fixture of that name (the model dir).
    return load_models(get_profile("tiny", tiny_model_dir.parent))


@pytest.fixture(scope="session")
def images() -> list:
    # Distinct, deterministic images: noise of different seeds plus solid colours.
    noise = [np.random.default_rng(i).integers(0, 256, (48, 64, 3), dtype=np.uint8) for i in range(4)]
    solids = [Image.new("RGB", (64, 64), c) for c in ("red", "blue", "white", "black")]
    return [Image.fromarray(a) for a in noise] + solids


# --- specs -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, kind, name, options",
    [
        ("hf:Salesforce/blip-image-captioning-base", "hf", "Salesforce/blip-image-captioning-base", {}),
        ("diffusers:stabilityai/sd-turbo?steps=1&guidance=0", "diffusers", "stabilityai/sd-turbo",
         {"steps": "1", "guidance": "0"}),
        ("open_clip:ViT-B-32:openai", "open_clip", "ViT-B-32", {"pretrained": "openai"}),
        ("open_clip:ViT-B-32", "open_clip", "ViT-B-32", {}),
        ("open_clip:/abs/dir", "open_clip", "/abs/dir", {}),
        ("open_clip:hf-hub:timm/ViT-B-16-SigLIP", "open_clip", "hf-hub:timm/ViT-B-16-SigLIP", {}),
        ("hf-clip:openai/clip-vit-base-patch32", "hf-clip", "openai/clip-vit-base-patch32", {}),
        ("diffusers:/models/tiny/generator?steps=2", "diffusers", "/models/tiny/generator", {"steps": "2"}),
    ],
)
def test_parse_spec(text: str, kind: str, name: str, options: dict) -> None:
    spec = parse_spec(text)
    assert (spec.kind, spec.name, dict(spec.options)) == (kind, name, options)
    assert parse_spec(format_spec(spec)) == spec
    assert str(spec) == format_spec(spec)
    hash(spec)  # frozen specs can key caches


def test_spec_options_are_read_only() -> None:
    spec = parse_spec("diffusers:x/y?steps=1")
    with pytest.raises(TypeError):
        spec.options["steps"] = "2"  # type: ignore[index]
    assert isinstance(spec, ModelSpec)


@pytest.mark.parametrize(
    "text",
    ["", "Salesforce/blip", "foo:bar", "hf:", "hf:x?steps", "hf:x?=1", "hf:x?a=1&a=2",
     "open_clip:ViT-B-32:a:b", "open_clip:ViT-B-32:", "open_clip:ViT-B-32:openai?pretrained=x", "hf:a:b"],
)
def test_parse_spec_rejects(text: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_spec(text)
    assert repr(text) in str(err.value) and "accepted forms" in str(err.value)


# --- profiles ----------------------------------------------------------------------------


def test_profiles(tmp_path: Path) -> None:
    tiny = get_profile("tiny", tmp_path)
    assert tiny.captioner == f"hf:{tmp_path.resolve() / 'tiny' / 'captioner'}"
    assert parse_spec(tiny.generator).options["steps"] == "2"
    assert [parse_spec(e).name for e in tiny.encoders] == [
        str(tmp_path.resolve() / "tiny" / n) for n in ("encoder-vit-a", "encoder-vit-b")
    ]
    paper = get_profile("paper", tmp_path)
    assert paper.captioner == "hf:Salesforce/blip-image-captioning-base"
    assert parse_spec(paper.generator).name == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert [parse_spec(e).name for e in paper.encoders] == ["RN50", "RN101", "ViT-B-16", "ViT-B-32", "ViT-L-14"]
    assert {parse_spec(e).options["pretrained"] for e in paper.encoders} == {"openai"}
    assert (paper.device, paper.dtype) == ("cpu", "fp32")
    assert get_profile("standard", tmp_path).dtype == "fp32"
    standard = get_profile("standard", tmp_path, device="cuda")
    assert (standard.device, standard.dtype) == ("cuda", "fp16")
    assert dict(parse_spec(standard.generator).options) == {"steps": "1", "guidance": "0"}
    assert get_profile("standard", tmp_path, device="cuda", dtype="bf16").dtype == "bf16"


def test_profile_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="known profiles: tiny, mini, mini-robust, paper, standard"):
        get_profile("huge", tmp_path)
    with pytest.raises(ValueError, match="'tpu'"):
        get_profile("paper", tmp_path, device="tpu")
    with pytest.raises(ValueError, match="'fp8'"):
        get_profile("paper", tmp_path, dtype="fp8")


def test_light_imports_do_not_pull_torch() -> None:
    code = (
        "import sys; from streamdetect.models import parse_spec, get_profile; "
        "assert not {'torch', 'transformers', 'diffusers', 'open_clip'} & set(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- tiny models -------------------------------------------------------------------------


def test_ensure_tiny_models_is_idempotent(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import streamdetect.models.tiny as tiny

    def no_rebuild(out: Path, seed: int) -> None:
        raise AssertionError("a complete tiny folder was rebuilt")

    monkeypatch.setattr(tiny, "_build_all", no_rebuild)
    stamp = tiny_model_dir / ".complete"
    weights = tiny_model_dir / "encoder-vit-a" / "open_clip_model.safetensors"
    before = (stamp.stat().st_mtime_ns, weights.stat().st_mtime_ns)
    assert ensure_tiny_models(tiny_model_dir.parent) == tiny_model_dir
    assert (stamp.stat().st_mtime_ns, weights.stat().st_mtime_ns) == before
    expected = {"captioner", "generator", "encoder-vit-a", "encoder-vit-b", "encoder-hf-clip", ".complete"}
    assert {p.name for p in tiny_model_dir.iterdir()} == expected
    assert not [p for p in tiny_model_dir.parent.iterdir() if p.name.startswith(".tiny-")]
    with pytest.raises(AssertionError, match="rebuilt"):  # another seed is another build
        ensure_tiny_models(tiny_model_dir.parent, seed=1)


def test_ensure_tiny_models_replaces_a_half_written_folder(tmp_path: Path) -> None:
    (tmp_path / "tiny" / "captioner").mkdir(parents=True)
    (tmp_path / "tiny" / "captioner" / "junk").write_text("crashed here")
    tiny = ensure_tiny_models(tmp_path)
    assert (tiny / ".complete").exists() and not (tiny / "captioner" / "junk").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["tiny"]


def test_caption(tiny_set, images) -> None:
    captions = tiny_set.captioner.caption(images, max_new_tokens=8)
    assert len(captions) == len(images)
    assert all(isinstance(c, str) and c for c in captions)
    assert len(set(captions)) > 1, "captions should depend on the image"
    assert tiny_set.captioner.caption(images, max_new_tokens=8) == captions
    assert tiny_set.captioner.caption([]) == []


def test_generate_is_reproducible(tiny_set) -> None:
    gen = tiny_set.generator
    assert (gen.steps, gen.guidance) == (2, 2.0)
    prompts = ["red cat", "blue house", "a tree"]
    first = gen.generate(prompts, [1, 2, 3])
    again = gen.generate(prompts, [1, 2, 3])
    other = gen.generate(prompts, [9, 2, 3])
    assert len(first) == 3 and all(im.size == (32, 32) and im.mode == "RGB" for im in first)
    pixels = [np.asarray(im) for im in first]
    assert all(np.array_equal(a, np.asarray(b)) for a, b in zip(pixels, again))
    assert not np.array_equal(pixels[0], np.asarray(other[0]))
    assert np.array_equal(pixels[1], np.asarray(other[1]))
    assert gen.generate([], []) == []
    with pytest.raises(ValueError, match="2 prompts but 1 seeds"):
        gen.generate(["a", "b"], [1])


def test_generator_options(tiny_model_dir: Path) -> None:
    path = tiny_model_dir / "generator"
    gen = Generator.load(f"diffusers:{path}?steps=1&guidance=0&height=16&width=24")
    assert gen.generate(["red"], [0])[0].size == (24, 16)
    default = Generator.load(f"diffusers:{path}")
    assert (default.steps, default.guidance) == (50, 7.5)  # StableDiffusionPipeline.__call__ defaults
    with pytest.raises(ValueError, match="unknown option"):
        Generator.load(f"diffusers:{path}?stepz=2")
    with pytest.raises(ValueError, match="not a int"):
        Generator.load(f"diffusers:{path}?steps=two")


def test_embed(tiny_set, images) -> None:
    dims = []
    for encoder in tiny_set.encoders:
        z = encoder.embed(images)
        assert z.shape == (len(images), encoder.dim) and z.dtype == torch.float32 and z.device.type == "cpu"
        assert torch.allclose(z.norm(dim=1), torch.ones(len(images)), atol=1e-5)
        assert encoder.embed([]).shape == (0, encoder.dim)
        assert isinstance(encoder.module, torch.nn.Module)
        dims.append(encoder.dim)
    assert [e.name for e in tiny_set.encoders] == ["encoder-vit-a", "encoder-vit-b"]
    assert dims == [32, 24]


@pytest.mark.parametrize("spec", ["open_clip:{dir}/encoder-vit-b", "hf-clip:{dir}/encoder-hf-clip"])
def test_encoder_reload_is_bitwise_identical(tiny_model_dir: Path, images, spec: str) -> None:
    spec = spec.format(dir=tiny_model_dir)
    first, second = ImageEncoder.load(spec), ImageEncoder.load(spec)
    assert torch.equal(first.embed(images), second.embed(images))
    state = {k: v.clone() for k, v in first.module.state_dict().items()}
    assert all(torch.equal(state[k], v) for k, v in second.module.state_dict().items())


def test_open_clip_dir_without_weights_fails(tiny_model_dir: Path, tmp_path: Path) -> None:
    # open_clip alone would only warn and hand back a randomly initialised model.
    shutil.copy(tiny_model_dir / "encoder-vit-a" / "open_clip_config.json", tmp_path)
    with pytest.raises(RuntimeError, match="pretrained weights"):
        ImageEncoder.load(f"open_clip:{tmp_path}")


def test_openai_weights_get_quick_gelu() -> None:
    # open_clip 3.x would build plain GELU towers for these and only warn.
    from streamdetect.models.encoders import needs_quick_gelu

    for spec in get_profile("paper", Path("/unused")).encoders:
        parsed = parse_spec(spec)
        assert needs_quick_gelu(parsed.name, parsed.options["pretrained"]), spec
    assert not needs_quick_gelu("ViT-B-32", "laion2b_s34b_b79k")
    assert not needs_quick_gelu("ViT-B-32", None)


def test_loaders_reject_wrong_kind_device_and_dtype(tiny_model_dir: Path) -> None:
    with pytest.raises(ValueError, match="must be of kind 'hf:'"):
        Captioner.load(f"diffusers:{tiny_model_dir / 'generator'}")
    with pytest.raises(ValueError, match="must be of kind 'diffusers:'"):
        Generator.load(f"hf:{tiny_model_dir / 'captioner'}")
    with pytest.raises(ValueError, match="must be 'open_clip:' or 'hf-clip:'"):
        ImageEncoder.load(f"hf:{tiny_model_dir / 'captioner'}")
    with pytest.raises(ValueError, match="bad device 'gpu'"):
        Captioner.load(f"hf:{tiny_model_dir / 'captioner'}", device="gpu")
    with pytest.raises(ValueError, match="bad dtype 'float32'"):
        ImageEncoder.load(f"open_clip:{tiny_model_dir / 'encoder-vit-a'}", dtype="float32")


def test_robust_clip_checkpoints_load_from_a_local_folder_as_encoders(tmp_path: Path, images) -> None:
    """TeCoA/FARE robust CLIP checkpoints are published in open_clip's hub layout
    (open_clip_config.json + open_clip_pytorch_model.bin); a copy in a local folder is an
    encoder spec like any other, for any profile's encoder_zoo (README, Defences)."""
    from safetensors.torch import load_file

    from streamdetect.models.tiny import save_tiny_open_clip
    from streamdetect.models.zoo import load_zoo, resolve_zoo

    folder = tmp_path / "fare2-tiny"
    save_tiny_open_clip(folder, 3, embed_dim=32, image_size=32, width=32, patch_size=8)
    state = load_file(folder / "open_clip_model.safetensors")
    (folder / "open_clip_model.safetensors").unlink()
    torch.save(state, folder / "open_clip_pytorch_model.bin")
    zoo = resolve_zoo(get_profile("paper", tmp_path), "vanilla", (f"open_clip:{folder}",))
    assert zoo.encoders == (f"open_clip:{folder}",)
    (encoder,) = load_zoo(zoo, captioner=False, generators=False).encoders
    assert encoder.name == "fare2-tiny"
    embedded = encoder.embed(images[:2])
    assert embedded.shape == (2, 32) and torch.allclose(embedded.norm(dim=-1), torch.ones(2), atol=1e-4)


def test_mini_robust_profile_scores_with_the_shipped_robust_encoders() -> None:
    from streamdetect.models.profiles import MINI_ROBUST_ENCODERS, MINI_WEIGHTS

    robust = get_profile("mini-robust", MINI_WEIGHTS.parent)
    plain = get_profile("mini", MINI_WEIGHTS.parent)
    assert (robust.captioner, robust.generator) == (plain.captioner, plain.generator)
    assert [Path(parse_spec(e).name).name for e in robust.encoders] == list(MINI_ROBUST_ENCODERS)
    assert all((Path(parse_spec(e).name) / "open_clip_model.safetensors").is_file() for e in robust.encoders)
