"""Model zoos for stochastic MirrorCheck: the generators and encoders a request may draw from.

A configured zoo (comma-separated specs in the settings) wins; otherwise each profile has one:
`paper` uses the reference implementation's 10-encoder zoo (its `legacy_10` preset: the five
OpenAI CLIP encoders plus five OpenCLIP encoders trained on YFCC-15M / LAION-400M), `tiny` adds
its transformers CLIP encoder and a second sampler setting of its generator so that every
part of the draw is exercised; other profiles draw from their own models. Vanilla mode uses the
profile's generator and encoders unless a zoo is configured (then one generator only).
Pure spec handling here; `load_zoo` is the only function that loads weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .profiles import PAPER_ENCODERS, Profile
from .specs import parse_spec

if TYPE_CHECKING:
    from .captioner import Captioner
    from .encoders import ImageEncoder
    from .generator import Generator

# open_clip equivalents of the reference's legacy_10 (its 'clip' entries are the same OpenAI weights).
LEGACY_OPEN_CLIP = (
    "open_clip:RN50:yfcc15m", "open_clip:RN101:yfcc15m", "open_clip:ViT-B-16:laion400m_e31",
    "open_clip:ViT-B-32:laion400m_e31", "open_clip:ViT-L-14:laion400m_e31",
)
PAPER_ENCODER_ZOO = PAPER_ENCODERS + LEGACY_OPEN_CLIP
MODES = ("vanilla", "stochastic")


@dataclass(frozen=True)
class Zoo:
    mode: str
    captioner: str
    generators: tuple[str, ...]
    encoders: tuple[str, ...]
    device: str = "cpu"
    dtype: str = "fp32"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode {self.mode!r} is unknown; known: {', '.join(MODES)}")
        if not self.generators or not self.encoders:
            raise ValueError(f"a zoo needs a generator and an encoder: {self.generators}, {self.encoders}")
        if self.mode == "vanilla" and len(self.generators) != 1:
            raise ValueError(f"vanilla mode takes one generator, got {len(self.generators)}: {self.generators}")
        for spec in (self.captioner, *self.generators, *self.encoders):
            parse_spec(spec)


def resolve_zoo(
    profile: Profile, mode: str, encoder_zoo: tuple[str, ...] = (), generator_zoo: tuple[str, ...] = ()
) -> Zoo:
    """The specs a pipeline in this mode loads, for this profile and configured zoos."""
    if mode == "stochastic":
        default_encoders, default_generators = _profile_zoo(profile)
    else:
        default_encoders, default_generators = profile.encoders, (profile.generator,)
    return Zoo(mode, profile.captioner, tuple(generator_zoo) or default_generators,
               tuple(encoder_zoo) or default_encoders, profile.device, profile.dtype)


def _profile_zoo(profile: Profile) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if profile.name == "paper":
        return PAPER_ENCODER_ZOO, (profile.generator,)
    if profile.name == "tiny":
        root = Path(parse_spec(profile.generator).name).parent
        return (*profile.encoders, f"hf-clip:{root / 'encoder-hf-clip'}"), (
            profile.generator, f"diffusers:{root / 'generator'}?steps=1&guidance=0")
    return profile.encoders, (profile.generator,)


@dataclass
class LoadedZoo:
    captioner: Captioner | None
    generators: list[Generator]
    encoders: list[ImageEncoder]

    @property
    def generator(self) -> Generator | list[Generator]:
        """Pipeline's generator argument: the one generator, or the whole zoo."""
        return self.generators[0] if len(self.generators) == 1 else list(self.generators)


def load_zoo(zoo: Zoo, captioner: bool = True, generators: bool = True) -> LoadedZoo:
    """Load the zoo's models (the captioner and generators only when asked for)."""
    from .captioner import Captioner
    from .encoders import ImageEncoder
    from .generator import Generator

    kw = dict(device=zoo.device, dtype=zoo.dtype)
    return LoadedZoo(
        captioner=Captioner.load(zoo.captioner, **kw) if captioner else None,
        generators=[Generator.load(spec, **kw) for spec in zoo.generators] if generators else [],
        encoders=[ImageEncoder.load(spec, **kw) for spec in zoo.encoders],
    )
