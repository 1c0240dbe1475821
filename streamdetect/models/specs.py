"""Model spec strings: one string names a model wherever the config takes one.

Forms (docs/architecture.md, "Model specs and profiles"):

    hf:<hub id or dir>[?k=v&...]          transformers image-to-text model (captioner)
    diffusers:<hub id or dir>[?k=v&...]   diffusers text-to-image pipeline (generator)
    mini-t2i:<dir>[?k=v&...]              the mini domain's pixel-space diffusers UNet (generator)
    open_clip:<arch>[:<pretrained tag>]   open_clip built-in architecture + weights tag
    open_clip:<dir>                       local dir with open_clip_config.json + weights
    open_clip:hf-hub:<org/repo>           open_clip model published on the hub
    hf-clip:<hub id or dir>               transformers CLIP vision tower (image encoder)

This module is pure string handling (no torch) so configs can be validated cheaply.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

KINDS = ("hf", "diffusers", "mini-t2i", "open_clip", "hf-clip")
DEVICES = ("cpu", "cuda")
DTYPES = ("fp32", "fp16", "bf16")

ACCEPTED_FORMS = (
    "hf:<hub id or dir>, diffusers:<hub id or dir>[?steps=N&guidance=G&height=H&width=W], "
    "mini-t2i:<dir>[?steps=N&guidance=G], "
    "open_clip:<arch>:<pretrained tag> (e.g. open_clip:ViT-B-32:openai), open_clip:<dir>, "
    "open_clip:hf-hub:<org/repo>, hf-clip:<hub id or dir>"
)


@dataclass(frozen=True)
class ModelSpec:
    kind: str
    name: str
    # Read-only view; excluded from the hash because mappings are unhashable.
    options: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __str__(self) -> str:
        return format_spec(self)


def _spec_error(text: str, why: str) -> ValueError:
    return ValueError(f"bad model spec {text!r}: {why}; accepted forms: {ACCEPTED_FORMS}")


def _parse_options(text: str, query: str) -> dict[str, str]:
    options: dict[str, str] = {}
    for item in query.split("&"):
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise _spec_error(text, f"option {item!r} is not key=value")
        if key in options:
            raise _spec_error(text, f"option {key!r} given twice")
        options[key] = value
    return options


def looks_like_path(name: str) -> bool:
    # Hub ids are 'org/repo' and never start like this; a dir must be said as a path.
    return name.startswith(("/", "./", "../", "~"))


def parse_spec(text: str) -> ModelSpec:
    """Parse 'kind:name[?key=value&...]' into a ModelSpec; ValueError on anything else."""
    if not isinstance(text, str) or not text.strip():
        raise _spec_error(str(text), "empty")
    body, qmark, query = text.strip().partition("?")
    options = _parse_options(text, query) if qmark else {}
    kind, colon, name = body.partition(":")
    if not colon or kind not in KINDS:
        raise _spec_error(text, f"kind must be one of {', '.join(KINDS)}")
    if not name:
        raise _spec_error(text, "model name is empty")
    if kind == "open_clip":
        name, options = _split_open_clip(text, name, options)
    elif ":" in name and not looks_like_path(name):
        raise _spec_error(text, f"unexpected ':' in model name {name!r}")
    return ModelSpec(kind, name, MappingProxyType(options))


def _split_open_clip(text: str, name: str, options: dict[str, str]) -> tuple[str, dict[str, str]]:
    # 'ViT-B-32:openai' carries the pretrained tag after the colon; paths and hf-hub ids do not.
    if looks_like_path(name) or name.startswith("hf-hub:"):
        if name == "hf-hub:":
            raise _spec_error(text, "hf-hub: needs org/repo")
        return name, options
    arch, colon, tag = name.partition(":")
    if not colon:
        return arch, options
    if not arch or not tag or ":" in tag:
        raise _spec_error(text, "expected open_clip:<arch>:<pretrained tag>")
    if "pretrained" in options:
        raise _spec_error(text, "pretrained given both after ':' and as an option")
    return arch, {**options, "pretrained": tag}


def format_spec(spec: ModelSpec) -> str:
    """Inverse of parse_spec (the pretrained tag goes back after the arch)."""
    options = dict(spec.options)
    name = spec.name
    if spec.kind == "open_clip" and "pretrained" in options:
        name = f"{name}:{options.pop('pretrained')}"
    query = "&".join(f"{k}={v}" for k, v in options.items())
    return f"{spec.kind}:{name}" + (f"?{query}" if query else "")


def check_options(spec: ModelSpec, allowed: set[str] | frozenset[str]) -> None:
    """Unknown options are typos, not features: fail loudly instead of ignoring them."""
    unknown = sorted(set(spec.options) - set(allowed))
    if unknown:
        raise ValueError(
            f"model spec {format_spec(spec)!r}: unknown option(s) {unknown}; "
            f"accepted for {spec.kind}: {sorted(allowed) or 'none'}"
        )


def check_device(device: str) -> str:
    """'cpu', 'cuda' or 'cuda:N'."""
    base, _, index = device.partition(":") if isinstance(device, str) else ("", "", "")
    if base not in DEVICES or (index and (base != "cuda" or not index.isdigit())):
        raise ValueError(f"bad device {device!r}: expected one of {', '.join(DEVICES)} (or cuda:N)")
    return device


def check_dtype(dtype: str) -> str:
    if dtype not in DTYPES:
        raise ValueError(f"bad dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
    return dtype
