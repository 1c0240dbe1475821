"""Profiles: named bundles of model specs (docs/architecture.md, "Model specs and profiles")."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .specs import check_device, check_dtype, parse_spec

if TYPE_CHECKING:  # the model classes pull in torch; profiles stay cheap to import
    from .captioner import Captioner
    from .encoders import ImageEncoder
    from .generator import Generator

BLIP = "hf:Salesforce/blip-image-captioning-base"
PAPER_ENCODERS = tuple(
    f"open_clip:{arch}:openai" for arch in ("RN50", "RN101", "ViT-B-16", "ViT-B-32", "ViT-L-14")
)
STANDARD_ENCODERS = tuple(f"open_clip:{arch}:openai" for arch in ("ViT-B-32", "ViT-B-16", "ViT-L-14"))
STANDARD_GENERATOR_OPTIONS = "steps=1&guidance=0"  # SD-Turbo: one step, no classifier-free guidance
# standard-shapes: the same architectures with random weights (models/standard_shapes.py builds them).
STANDARD_SHAPES_ENCODERS = ("encoder-vit-b-32", "encoder-vit-b-16", "encoder-vit-l-14")
# steps=2 with guidance 2 so tiny runs still take the classifier-free-guidance branch.
TINY_GENERATOR_OPTIONS = "steps=2&guidance=2"
TINY_ENCODERS = ("encoder-vit-a", "encoder-vit-b")
MINI_WEIGHTS = Path(__file__).resolve().parent.parent / "mini" / "weights"
MINI_ENCODERS = ("encoder-vit-a", "encoder-vit-b", "encoder-rn")
# TeCoA fine-tunes of the three (mini/train/robust.py): what an attacker holding every shipped
# weight still has to move within eps (README, "Defences against adaptive attacks").
MINI_ROBUST_ENCODERS = ("robust-vit-a", "robust-vit-b", "robust-rn")
MINI_GENERATOR_OPTIONS = "steps=10&guidance=1.5"  # matches the data at 10 Euler steps (docs/architecture.md#mini-recipe)
PROFILES = ("tiny", "mini", "mini-robust", "paper", "standard", "standard-shapes")


@dataclass(frozen=True)
class Profile:
    name: str
    captioner: str
    generator: str
    encoders: tuple[str, ...]
    device: str = "cpu"
    dtype: str = "fp32"

    def __post_init__(self) -> None:
        # Validate every spec now, so a bad config fails before minutes of model loading.
        check_device(self.device)
        check_dtype(self.dtype)
        for spec in (self.captioner, self.generator, *self.encoders):
            parse_spec(spec)


def get_profile(name: str, model_dir: Path, device: str | None = None, dtype: str | None = None) -> Profile:
    """Specs for a named profile. 'tiny' points at model_dir/'tiny' (see ensure_tiny_models),
    'standard-shapes' at model_dir/'standard-shapes' (ensure_standard_shapes); 'mini' at the
    weights shipped in streamdetect/mini/weights."""
    device = check_device(device or "cpu")
    if name == "tiny":
        root = Path(model_dir).expanduser().resolve() / "tiny"
        return Profile(
            name, f"hf:{root / 'captioner'}", f"diffusers:{root / 'generator'}?{TINY_GENERATOR_OPTIONS}",
            tuple(f"open_clip:{root / enc}" for enc in TINY_ENCODERS), device, dtype or "fp32",
        )
    if name in ("mini", "mini-robust"):
        return mini_profile(MINI_WEIGHTS, device, dtype or "fp32", robust=name == "mini-robust")
    if name == "paper":
        generator = "diffusers:stable-diffusion-v1-5/stable-diffusion-v1-5?steps=50&guidance=7.5"
        return Profile(name, BLIP, generator, PAPER_ENCODERS, device, dtype or "fp32")
    default_dtype = "fp16" if device.startswith("cuda") else "fp32"
    if name == "standard":
        generator = f"diffusers:stabilityai/sd-turbo?{STANDARD_GENERATOR_OPTIONS}"
        return Profile(name, BLIP, generator, STANDARD_ENCODERS, device, dtype or default_dtype)
    if name == "standard-shapes":
        root = Path(model_dir).expanduser().resolve() / "standard-shapes"
        return Profile(
            name, f"hf:{root / 'captioner'}", f"diffusers:{root / 'generator'}?{STANDARD_GENERATOR_OPTIONS}",
            tuple(f"open_clip:{root / enc}" for enc in STANDARD_SHAPES_ENCODERS), device, dtype or default_dtype,
        )
    raise ValueError(f"unknown profile {name!r}; known profiles: {', '.join(PROFILES)}")


def ensure_profile_models(name: str, model_dir: Path) -> None:
    """Build a random-weight profile's models unless a complete build is there (tiny,
    standard-shapes); other profiles load weights that exist already, so nothing happens."""
    if name == "tiny":
        from .tiny import ensure_tiny_models

        ensure_tiny_models(model_dir)
    elif name == "standard-shapes":
        from .standard_shapes import ensure_standard_shapes

        ensure_standard_shapes(model_dir)


def mini_profile(root: Path, device: str = "cpu", dtype: str = "fp32", robust: bool = False) -> Profile:
    """The mini models in a weights folder: the shipped one, or one `streamdetect mini train` wrote;
    robust: scored with the adversarially fine-tuned encoders instead of the public ones."""
    root = Path(root).expanduser().resolve()
    encoders = MINI_ROBUST_ENCODERS if robust else MINI_ENCODERS
    return Profile(
        "mini-robust" if robust else "mini", f"hf:{root / 'captioner'}",
        f"mini-t2i:{root / 'generator'}?{MINI_GENERATOR_OPTIONS}",
        tuple(f"open_clip:{root / enc}" for enc in encoders), device, dtype,
    )


@dataclass
class ModelSet:
    captioner: Captioner
    generator: Generator
    encoders: list[ImageEncoder]


def load_models(profile: Profile) -> ModelSet:
    """Load every model of a profile onto its device, through the same loaders real models use."""
    from .captioner import Captioner
    from .encoders import ImageEncoder
    from .generator import Generator

    kw = dict(device=profile.device, dtype=profile.dtype)
    return ModelSet(
        captioner=Captioner.load(profile.captioner, **kw),
        generator=Generator.load(profile.generator, **kw),
        encoders=[ImageEncoder.load(spec, **kw) for spec in profile.encoders],
    )
