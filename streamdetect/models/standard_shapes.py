"""The `standard` profile's architectures at their published sizes, with random weights.

What GPU throughput depends on is the shapes, not the weights: these folders let a machine with
no model hub measure the standard profile's cost. Each model is built from a config written
here, saved the way its real checkpoint is laid out (save_pretrained folders, an open_clip
local dir) and loaded by the same loaders as real weights. Scores from them mean nothing.

`scale` < 1 shrinks widths and depths (never resolutions or vocabularies) so that tests can
build and load the same folders in seconds; the default, 1, is the published size.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import open_clip
import torch
from safetensors.torch import save_file

from ._build import ensure_built
from .tiny import OPENAI_MEAN, OPENAI_STD, WORDS, _tiny_clip_tokenizer

SHAPES_VERSION = 1
FOLDER = "standard-shapes"
DEFAULT_SCALE = 1.0
# Random weights are stored in fp16, as the published fp16 variants are: half the disk and the
# write time of fp32; loaders cast to the dtype asked for.
SAVE_DTYPE = torch.float16
HEAD_DIM = 64  # every transformer here (SD 2 text encoder, BLIP, OpenAI CLIP ViTs) has 64-wide heads
# The standard profile's OpenAI CLIP encoders (profiles.STANDARD_ENCODERS), folder -> open_clip arch.
ENCODERS = {"encoder-vit-b-32": "ViT-B-32", "encoder-vit-b-16": "ViT-B-16", "encoder-vit-l-14": "ViT-L-14"}
# BLIP base's tokenizer is bert-base-uncased (30522 tokens) plus [DEC] (bos) and [ENC].
BLIP_VOCAB = 30524
BERT_SPECIALS = {0: "[PAD]", 100: "[UNK]", 101: "[CLS]", 102: "[SEP]", 103: "[MASK]"}
FIRST_WORD_ID = 1000  # where bert-base-uncased's ordinary words begin


def ensure_standard_shapes(model_dir: Path, seed: int = 0, scale: float | None = None) -> Path:
    """Return model_dir/'standard-shapes', building it first unless a complete build of this
    seed and scale is there (minutes and about 4.3 GB at scale 1)."""
    scale = DEFAULT_SCALE if scale is None else float(scale)
    if not 0 < scale <= 1:
        raise ValueError(f"scale must be in (0, 1], got {scale}")
    stamp = {"version": SHAPES_VERSION, "seed": seed, "scale": scale}
    return ensure_built(Path(model_dir) / FOLDER, stamp, lambda out: build_all(out, seed, scale))


def build_all(out: Path, seed: int, scale: float) -> None:
    with _all_cores():
        save_captioner(out / "captioner", seed, scale)
        save_generator(out / "generator", seed + 1, scale)
        for i, (folder, arch) in enumerate(ENCODERS.items()):
            save_open_clip(out / folder, open_clip_config(arch, scale), seed + 2 + i)


@contextmanager
def _all_cores() -> Iterator[None]:
    # Workers run torch on one thread (cpu_threads); initialising 2.2B parameters wants them all.
    before = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# Sizes: the published number at scale 1; smaller, and still consistent, below it.
def _width(n: int, scale: float, multiple: int = 8) -> int:
    return n if scale == 1 else max(multiple, round(n * scale / multiple) * multiple)


def _depth(n: int, scale: float) -> int:
    return n if scale == 1 else max(1, round(n * scale))


def _heads(width: int) -> int:
    heads = max(1, width // HEAD_DIM)
    while width % heads:  # a scaled width may not split into 64-wide heads
        heads -= 1
    return heads


def _groups(channels: tuple[int, ...]) -> int:
    return min(32, math.gcd(*channels))  # GroupNorm(32) at full size; what divides a scaled width below


def text_encoder_config(scale: float = 1.0) -> dict[str, Any]:
    """SD 2.x's text encoder (OpenCLIP ViT-H/14's text tower, its last layer dropped), as published
    in stabilityai/sd-turbo text_encoder/config.json: 1024 wide, 23 layers, 16 heads."""
    hidden = _width(1024, scale)
    return dict(vocab_size=49408, hidden_size=hidden, intermediate_size=4 * hidden,
                num_hidden_layers=_depth(23, scale), num_attention_heads=_heads(hidden),
                max_position_embeddings=77, hidden_act="gelu", layer_norm_eps=1e-5, projection_dim=512)


def unet_config(scale: float = 1.0) -> dict[str, Any]:
    """SD 2.1's UNet, as published in stabilityai/sd-turbo unet/config.json (SD-Turbo is SD 2.1
    distilled to one step): 64x64 latents, i.e. 512x512 images."""
    channels = tuple(_width(c, scale) for c in (320, 640, 1280, 1280))
    return dict(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=_depth(2, scale),
        block_out_channels=channels,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        # diffusers' historical name: for SD 2.x this is the number of heads (5, 10, 20, 20).
        attention_head_dim=tuple(_heads(c) for c in channels),
        cross_attention_dim=text_encoder_config(scale)["hidden_size"], use_linear_projection=True,
        norm_num_groups=_groups(channels), norm_eps=1e-5, act_fn="silu", flip_sin_to_cos=True, freq_shift=0,
        downsample_padding=1, mid_block_scale_factor=1, center_input_sample=False, upcast_attention=False,
    )


def vae_config(scale: float = 1.0) -> dict[str, Any]:
    """SD 2.1's autoencoder (the standard profile decodes with it, not with TAESD), as published
    in stabilityai/sd-turbo vae/config.json: 4 latent channels, 8x down, 128-512 wide."""
    channels = tuple(_width(c, scale) for c in (128, 256, 512, 512))
    return dict(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=channels,
        layers_per_block=_depth(2, scale), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, act_fn="silu", norm_num_groups=_groups(channels),
        sample_size=768, scaling_factor=0.18215,
    )


def scheduler_config() -> dict[str, Any]:
    """sd-turbo scheduler/scheduler_config.json: Euler with trailing timesteps (one step from pure noise)."""
    return dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                prediction_type="epsilon", timestep_spacing="trailing", steps_offset=1,
                interpolation_type="linear", use_karras_sigmas=False)


def blip_config(scale: float = 1.0) -> dict[str, Any]:
    """Salesforce/blip-image-captioning-base config.json: a ViT-B/16 at 384 px and a BERT-base
    decoder (12 layers, 768 wide) that cross-attends to it."""
    hidden = _width(768, scale)
    common = dict(hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=_depth(12, scale),
                  num_attention_heads=_heads(hidden))
    return dict(
        vision_config=dict(common, image_size=384, patch_size=16, layer_norm_eps=1e-5),
        text_config=dict(common, vocab_size=BLIP_VOCAB, encoder_hidden_size=hidden, max_position_embeddings=512,
                         pad_token_id=0, bos_token_id=30522, sep_token_id=102, eos_token_id=2),
        projection_dim=_width(512, scale),
    )


def open_clip_config(arch: str, scale: float = 1.0) -> dict[str, Any]:
    """open_clip's own config for the OpenAI ViTs (open_clip/model_configs/<arch>.json), with
    QuickGELU as the OpenAI weights were trained with."""
    embed, width, layers, patch, text_width = {
        "ViT-B-32": (512, 768, 12, 32, 512), "ViT-B-16": (512, 768, 12, 16, 512), "ViT-L-14": (768, 1024, 24, 14, 768),
    }[arch]
    width, text_width = _width(width, scale), _width(text_width, scale)
    return {
        "embed_dim": _width(embed, scale),
        "quick_gelu": True,
        "vision_cfg": {"image_size": 224, "layers": _depth(layers, scale), "width": width, "patch_size": patch,
                       "head_width": width // _heads(width)},
        # vocab_size 49408: the CLIP tokenizer's; text towers are 12 layers, 64-wide heads.
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": text_width, "heads": _heads(text_width),
                     "layers": _depth(12, scale)},
    }


def blip_model(scale: float = 1.0):  # type: ignore[no-untyped-def]
    from transformers import BlipConfig, BlipForConditionalGeneration

    return BlipForConditionalGeneration(BlipConfig(**blip_config(scale)))


def unet_model(scale: float = 1.0):  # type: ignore[no-untyped-def]
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**unet_config(scale))


def vae_model(scale: float = 1.0):  # type: ignore[no-untyped-def]
    from diffusers import AutoencoderKL

    return AutoencoderKL(**vae_config(scale))


def text_encoder_model(scale: float = 1.0, token_ids: dict[str, int] | None = None):  # type: ignore[no-untyped-def]
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(**text_encoder_config(scale), **(token_ids or {})))


def open_clip_model(arch: str, scale: float = 1.0) -> torch.nn.Module:
    return open_clip.CLIP(**open_clip_config(arch, scale))


def blip_vocab() -> dict[str, int]:
    """bert-base-uncased's layout (specials at their ids, words from 1000) with placeholder
    tokens where its words would be: only the size and the special ids matter here."""
    tokens = [BERT_SPECIALS.get(i, f"[unused{i}]") for i in range(BLIP_VOCAB - 2)]
    tokens[FIRST_WORD_ID:FIRST_WORD_ID + len(WORDS)] = WORDS
    return {tok: i for i, tok in enumerate([*tokens, "[DEC]"])}


def save_captioner(path: Path, seed: int, scale: float) -> None:
    from transformers import BertTokenizer, BlipImageProcessor, BlipProcessor

    vocab = blip_vocab()
    tokenizer = BertTokenizer(vocab=vocab, bos_token="[DEC]", model_max_length=512)
    tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    torch.manual_seed(seed)
    model = blip_model(scale).eval()
    # Captions only from WORDS: a random decoder would otherwise stop at once on [SEP] (making
    # captioning look cheap) or emit placeholders the generator's tokenizer spells letter by
    # letter. Every caption runs to max_new_tokens: the worst case for the captioner's cost.
    with torch.no_grad():
        bias = model.text_decoder.cls.predictions.decoder.bias
        keep = bias[FIRST_WORD_ID:FIRST_WORD_ID + len(WORDS)].clone()
        bias.fill_(-1e4)
        bias[FIRST_WORD_ID:FIRST_WORD_ID + len(WORDS)] = keep
    model.to(SAVE_DTYPE).save_pretrained(path)
    image_processor = BlipImageProcessor(size={"height": 384, "width": 384}, image_mean=list(OPENAI_MEAN),
                                         image_std=list(OPENAI_STD))
    BlipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(path)


def save_generator(path: Path, seed: int, scale: float) -> None:
    """A StableDiffusionPipeline folder in sd-turbo's layout. Its tokenizer is the tiny CLIP
    tokenizer (ids below 49408; prompts are padded to 77 tokens either way, so cost is the same)."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    tokenizer, vocab = _tiny_clip_tokenizer()
    token_ids = dict(bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
                     pad_token_id=vocab["<|endoftext|>"])
    builders: dict[str, Callable[[], torch.nn.Module]] = {
        "unet": lambda: unet_model(scale), "vae": lambda: vae_model(scale),
        "text_encoder": lambda: text_encoder_model(scale, token_ids),
    }
    torch.manual_seed(seed)
    parts = {name: build().eval().to(SAVE_DTYPE) for name, build in builders.items()}
    pipeline = StableDiffusionPipeline(
        **parts, tokenizer=tokenizer, scheduler=EulerDiscreteScheduler(**scheduler_config()),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipeline.save_pretrained(path)


def save_open_clip(path: Path, model_cfg: dict[str, Any], seed: int) -> None:
    """An open_clip 'local-dir:' folder: open_clip_config.json + open_clip_model.safetensors."""
    torch.manual_seed(seed)
    model = open_clip.CLIP(**model_cfg).eval()
    preprocess_cfg = {"mean": list(OPENAI_MEAN), "std": list(OPENAI_STD), "interpolation": "bicubic",
                      "resize_mode": "shortest"}
    path.mkdir(parents=True)
    (path / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}, indent=2))
    state = {k: (v.to(SAVE_DTYPE) if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path / "open_clip_model.safetensors"))
