"""Generator: text -> image with a diffusers text-to-image pipeline."""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass

import torch
from diffusers import AutoPipelineForText2Image, DiffusionPipeline
from PIL import Image

from ._torch import torch_device, torch_dtype
from .specs import ModelSpec, check_options, parse_spec

OPTIONS = frozenset({"steps", "guidance", "height", "width"})


def _option(spec: ModelSpec, key: str, kind: type, default: float | int | None) -> float | int | None:
    if key not in spec.options:
        return default
    try:
        value = kind(spec.options[key])
    except ValueError:
        raise ValueError(f"model spec option {key}={spec.options[key]!r}: not a {kind.__name__}") from None
    if value < 0 or (key != "guidance" and value == 0):
        raise ValueError(f"model spec option {key}={value} is out of range")
    return value


def _call_default(pipeline: DiffusionPipeline, arg: str, fallback: float) -> float:
    # The pipeline's own __call__ default is "the model default" (SD: 50 steps, guidance 7.5).
    param = inspect.signature(pipeline.__call__).parameters.get(arg)
    if param is None or param.default is inspect.Parameter.empty or param.default is None:
        return fallback
    return param.default


def _pipeline_kwargs(name: str, dtype: torch.dtype) -> dict:
    kwargs: dict = {"torch_dtype": dtype}
    # Only SD-style pipelines know safety_checker; others would warn about an unexpected kwarg.
    if "safety_checker" in DiffusionPipeline.load_config(name):
        kwargs.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    return kwargs


@dataclass
class Generator:
    spec: str
    pipeline: DiffusionPipeline
    steps: int
    guidance: float
    height: int | None
    width: int | None

    @classmethod
    def load(cls, spec: str, device: str = "cpu", dtype: str = "fp32") -> Generator:
        parsed = parse_spec(spec)
        if parsed.kind not in ("diffusers", "mini-t2i"):
            raise ValueError(f"generator spec {spec!r} must be of kind 'diffusers:' or 'mini-t2i:', not {parsed.kind!r}")
        check_options(parsed, OPTIONS)
        dev, dt = torch_device(device), torch_dtype(dtype)
        name = os.path.expanduser(parsed.name)
        if parsed.kind == "mini-t2i":
            # A pixel-space UNet with its own word embedding: no AutoPipeline class knows it.
            from streamdetect.models.mini_t2i import MiniT2IPipeline

            pipeline = MiniT2IPipeline.from_dir(name, dtype=dt).to(dev)
        else:
            pipeline = AutoPipelineForText2Image.from_pretrained(name, **_pipeline_kwargs(name, dt)).to(dev)
        pipeline.set_progress_bar_config(disable=True)
        steps = _option(parsed, "steps", int, None) or int(_call_default(pipeline, "num_inference_steps", 50))
        guidance = _option(parsed, "guidance", float, None)
        if guidance is None:
            guidance = float(_call_default(pipeline, "guidance_scale", 7.5))
        height, width = _option(parsed, "height", int, None), _option(parsed, "width", int, None)
        return cls(spec, pipeline, steps, guidance, height, width)

    def generate(self, prompts: list[str], seeds: list[int]) -> list[Image.Image]:
        """One image per prompt; image i depends only on (prompts[i], seeds[i], batch)."""
        if len(prompts) != len(seeds):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
        if not prompts:
            return []
        # CPU generators: the same seed gives the same starting noise on any device.
        generators = [torch.Generator("cpu").manual_seed(int(seed)) for seed in seeds]
        with torch.inference_mode():
            out = self.pipeline(
                prompt=list(prompts),
                num_inference_steps=self.steps,
                guidance_scale=self.guidance,
                height=self.height,
                width=self.width,
                generator=generators,
                output_type="pil",
            )
        return list(out.images)
