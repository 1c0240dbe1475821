"""GPU fast paths for loaded models: what is simple, safe and worth having on CUDA.

Nothing here changes a model on the CPU (every function returns at once there), and nothing
needs a GPU to import. Already on by default, so only reported: SDPA attention in the diffusers
UNet and VAE (AttnProcessor2_0 on torch 2) and in open_clip (nn.MultiheadAttention calls
scaled_dot_product_attention), and one batched VAE decode per generate call (slicing is off).
BLIP has no SDPA path in transformers 5.17: its attention stays eager.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch


def on_cuda(models: Any) -> bool:
    return any(getattr(m, "device", torch.device("cpu")).type == "cuda" for m in _all(models))


def cuda_fast_paths(models: Any, *, channels_last: bool = True, compile: bool = False) -> list[str]:
    """Apply the fast paths to a loaded model set (captioner, generators, encoders) on CUDA;
    returns what was applied, for the report. A no-op (empty list) off CUDA."""
    if not on_cuda(models):
        return []
    # TF32 only touches fp32 matmuls and convolutions (fp16/bf16 runs are unaffected); cudnn
    # picks the fastest convolution per shape once, then reuses it.
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    applied = ["tf32", "cudnn.benchmark"]
    pipelines = [g.pipeline for g in _generators(models) if hasattr(g.pipeline, "unet")]
    if channels_last:
        # NHWC lets cuDNN use tensor-core convolution kernels without a layout transpose per call.
        for pipeline in pipelines:
            pipeline.unet.to(memory_format=torch.channels_last)
            pipeline.vae.to(memory_format=torch.channels_last)
        applied.append("channels_last unet+vae")
    if compile:
        for pipeline in pipelines:
            # Default mode, no CUDA graphs: batch sizes vary from call to call in the engine.
            pipeline.unet = torch.compile(pipeline.unet)
            pipeline.vae.decode = torch.compile(pipeline.vae.decode)
        applied.append("torch.compile unet+vae.decode")
    return applied


def attention_report(models: Any) -> dict[str, str]:
    """Which attention implementation each model runs (SDPA or eager), and whether the VAE
    decodes a batch at once, as loaded."""
    report: dict[str, str] = {}
    captioner = getattr(models, "captioner", None)
    if captioner is not None:
        report["captioner"] = str(getattr(captioner.model.config, "_attn_implementation", "unknown"))
    for i, generator in enumerate(_generators(models)):
        pipeline = generator.pipeline
        unet = getattr(pipeline, "unet", None)
        if unet is not None and hasattr(unet, "attn_processors"):
            report[f"generator[{i}].unet"] = ",".join(sorted({type(p).__name__ for p in unet.attn_processors.values()}))
        vae = getattr(pipeline, "vae", None)
        if vae is not None:  # one decode call per batch unless slicing was turned on
            report[f"generator[{i}].vae_decode"] = "sliced" if getattr(vae, "use_slicing", False) else "batched"
        text_encoder = getattr(pipeline, "text_encoder", None)
        if text_encoder is not None and hasattr(text_encoder, "config"):
            report[f"generator[{i}].text_encoder"] = str(getattr(text_encoder.config, "_attn_implementation", "unknown"))
    for encoder in getattr(models, "encoders", []):
        report[f"encoder {encoder.name}"] = "sdpa" if _uses_sdpa_mha(encoder.module) else "eager"
    return report


def _uses_sdpa_mha(module: torch.nn.Module) -> bool:
    # torch's MultiheadAttention runs scaled_dot_product_attention when weights are not returned,
    # which is how open_clip calls it; transformers' CLIP says so in its config.
    config = getattr(module, "config", None)
    if config is not None:
        return getattr(config, "_attn_implementation", "") == "sdpa"
    return any(isinstance(m, torch.nn.MultiheadAttention) for m in module.modules())


def parameter_counts(models: Any) -> dict[str, int]:
    """Parameters per loaded model (the generator's parts apart): proof of the sizes measured."""
    counts: dict[str, int] = {}
    captioner = getattr(models, "captioner", None)
    if captioner is not None:
        counts["captioner"] = _count(captioner.model)
    for i, generator in enumerate(_generators(models)):
        for part in ("unet", "vae", "text_encoder"):
            module = getattr(generator.pipeline, part, None)
            if isinstance(module, torch.nn.Module):
                counts[f"generator[{i}].{part}"] = _count(module)
    for encoder in getattr(models, "encoders", []):
        counts[f"encoder {encoder.name}"] = _count(encoder.module)
    return counts


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _generators(models: Any) -> list[Any]:
    generators = getattr(models, "generators", None)
    if generators is None:
        generators = [models.generator] if getattr(models, "generator", None) is not None else []
    return list(generators)


def _all(models: Any) -> Iterable[Any]:
    captioner = getattr(models, "captioner", None)
    if captioner is not None:
        yield captioner
    for generator in _generators(models):
        yield generator.pipeline
    yield from getattr(models, "encoders", [])
