"""Model loading: captioner (VLM), generator (text-to-image), image encoders (CLIP family).

Names are resolved lazily (PEP 562) so that `from streamdetect.models import parse_spec` or
`get_profile` does not import torch, transformers, diffusers and open_clip (seconds of start-up).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "ModelSpec": "specs",
    "parse_spec": "specs",
    "format_spec": "specs",
    "check_device": "specs",
    "check_dtype": "specs",
    "Captioner": "captioner",
    "Generator": "generator",
    "ImageEncoder": "encoders",
    "Profile": "profiles",
    "ModelSet": "profiles",
    "get_profile": "profiles",
    "load_models": "profiles",
    "ensure_tiny_models": "tiny",
    "ensure_profile_models": "profiles",
    "ensure_standard_shapes": "standard_shapes",
}
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .captioner import Captioner
    from .encoders import ImageEncoder
    from .generator import Generator
    from .profiles import ModelSet, Profile, ensure_profile_models, get_profile, load_models
    from .specs import ModelSpec, check_device, check_dtype, format_spec, parse_spec
    from .standard_shapes import ensure_standard_shapes
    from .tiny import ensure_tiny_models


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # cache: later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
