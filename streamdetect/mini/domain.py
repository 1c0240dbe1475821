"""The mini domain: procedurally drawn 32x32 scenes with compositional captions.

One shape (kind, colour, size, horizontal position) on a plain background. Every attribute is
named in the caption, so a wrong caption is a visibly different picture. Scenes are a pure
function of (seed, split, index): the same call always draws the same pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw

SIZE = 32
SUPERSAMPLE = 4  # draw at 4x and downsample: smooth edges, like a rendered picture
SHAPES = ("circle", "square", "triangle")
COLOURS = {
    "red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 80, 220),
    "yellow": (230, 210, 40), "purple": (150, 60, 190), "orange": (240, 140, 30),
}
SIZES = {"small": 4.5, "large": 8.5}  # half-width in pixels at 32x32
POSITIONS = {"left": 9.0, "center": 16.0, "right": 23.0}  # x of the centre
BACKGROUNDS = {"white": 235, "grey": 128, "black": 25}
SPLITS = {"train": 0, "val": 1, "test": 2}
TEMPLATE = "a {size} {colour} {shape} at the {position} on a {background} background"
WORDS = tuple(sorted({*TEMPLATE.format(size="", colour="", shape="", position="", background="").split(),
                      *SHAPES, *COLOURS, *SIZES, *POSITIONS, *BACKGROUNDS}))


@dataclass(frozen=True)
class Scene:
    shape: str
    colour: str
    size: str
    position: str
    background: str

    @property
    def caption(self) -> str:
        return TEMPLATE.format(size=self.size, colour=self.colour, shape=self.shape,
                               position=self.position, background=self.background)

    def attributes(self) -> tuple[str, str, str, str, str]:
        return (self.shape, self.colour, self.size, self.position, self.background)


ALL_SCENES = tuple(
    Scene(shape, colour, size, position, background)
    for shape in SHAPES for colour in COLOURS for size in SIZES for position in POSITIONS
    for background in BACKGROUNDS
)
_BY_CAPTION = {scene.caption: scene for scene in ALL_SCENES}


def parse_caption(caption: str) -> Scene | None:
    """The scene a caption names, or None if it is not an exact domain caption."""
    return _BY_CAPTION.get(" ".join(caption.lower().split()))


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if index < 0:
        raise ValueError(f"scene index must be >= 0, got {index}")
    return np.random.default_rng([int(seed), SPLITS[split], int(index)])


def sample_scene(seed: int, split: str, index: int) -> Scene:
    rng = _rng(seed, split, index)
    return ALL_SCENES[int(rng.integers(len(ALL_SCENES)))]


def render(scene: Scene, rng: np.random.Generator) -> Image.Image:
    """Draw a scene with small random jitter (place, size, tint) so no two pictures are equal."""
    s = SUPERSAMPLE
    bg = int(np.clip(BACKGROUNDS[scene.background] + rng.integers(-12, 13), 0, 255))
    colour = tuple(int(np.clip(c + rng.integers(-20, 21), 0, 255)) for c in COLOURS[scene.colour])
    half = SIZES[scene.size] + rng.uniform(-1.0, 1.0)
    cx = POSITIONS[scene.position] + rng.uniform(-2.0, 2.0)
    cy = 16.0 + rng.uniform(-5.0, 5.0) * (0.4 if scene.size == "large" else 1.0)
    image = Image.new("RGB", (SIZE * s, SIZE * s), (bg, bg, bg))
    draw = ImageDraw.Draw(image)
    box = [(cx - half) * s, (cy - half) * s, (cx + half) * s, (cy + half) * s]
    if scene.shape == "circle":
        draw.ellipse(box, fill=colour)
    elif scene.shape == "square":
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([(cx * s, (cy - half) * s), ((cx - half) * s, (cy + half) * s),
                      ((cx + half) * s, (cy + half) * s)], fill=colour)
    return image.resize((SIZE, SIZE), Image.Resampling.BOX)


def make_item(seed: int, split: str, index: int) -> tuple[Image.Image, Scene]:
    rng = _rng(seed, split, index)
    scene = ALL_SCENES[int(rng.integers(len(ALL_SCENES)))]
    return render(scene, rng), scene


def make_split(seed: int, split: str, n: int, start: int = 0) -> tuple[list[Image.Image], list[Scene]]:
    items = [make_item(seed, split, i) for i in range(start, start + n)]
    return [im for im, _ in items], [scene for _, scene in items]


def to_tensor(images: list[Image.Image]) -> torch.Tensor:
    """(N, 3, 32, 32) float in [0, 1]."""
    arrays = np.stack([np.asarray(im.convert("RGB"), dtype=np.uint8) for im in images])
    return torch.from_numpy(arrays).permute(0, 3, 1, 2).float() / 255.0


def to_images(pixels: torch.Tensor) -> list[Image.Image]:
    """Inverse of to_tensor, rounding to uint8 as any saved upload would be."""
    arrays = (pixels.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in arrays]


ATTRIBUTES = ("shape", "colour", "size", "position", "background")
# Target sets (`mini eval --targets`): which attributes an attack's wrong caption changes.
# "one" is the suite's original set (shape, size or position); the others widen it to every
# attribute, alone or in pairs, because an attacker picks whatever is easiest.
TARGET_SETS: dict[str, tuple[tuple[int, ...], ...]] = {
    "one": ((0,), (2,), (3,)),
    "shape": ((0,),), "colour": ((1,),), "size": ((2,),), "position": ((3,),), "background": ((4,),),
    "any": tuple((i,) for i in range(5)),
    "pair": tuple((i, j) for i in range(5) for j in range(i + 1, 5)),
}
TARGET_ATTRIBUTES = (0, 2, 3)  # shape, size, position: the "one" set


def _changed(a: Scene, b: Scene) -> tuple[int, ...]:
    return tuple(i for i, (x, y) in enumerate(zip(a.attributes(), b.attributes())) if x != y)


def wrong_caption(scene: Scene, rng: np.random.Generator, targets: str = "one") -> str:
    """An attack's target: a caption naming a visibly different scene. With the default set,
    one of shape, size or position changed (a square for a circle, large for small, right for
    left); other sets (TARGET_SETS) change colour, background, any one attribute, or a pair.
    The set of changed attributes is drawn first, then a scene with exactly those changed."""
    if targets not in TARGET_SETS:
        raise ValueError(f"unknown target set {targets!r}; expected one of {', '.join(TARGET_SETS)}")
    choices = TARGET_SETS[targets]
    changed = choices[int(rng.integers(len(choices)))]
    options = [s for s in ALL_SCENES if _changed(s, scene) == changed]
    return options[int(rng.integers(len(options)))].caption


def neighbours(caption: str) -> list[str]:
    """The domain captions one attribute away from a caption (12 for every domain caption), or
    every domain caption but it when it is not one: the rivals a caption must beat to be believed."""
    scene = parse_caption(caption)
    if scene is None:
        return [s.caption for s in ALL_SCENES if s.caption != caption]
    return [s.caption for s in ALL_SCENES if len(_changed(s, scene)) == 1]


def changed_attributes(caption: str, scene: Scene) -> tuple[str, ...] | None:
    """The attributes a caption changes against the scene shown; None if not a domain caption."""
    other = parse_caption(caption)
    return None if other is None else tuple(ATTRIBUTES[i] for i in _changed(other, scene))
