"""Tiny random-weight models built from configs, for plumbing tests without downloads.

They are saved exactly the way real checkpoints are laid out (save_pretrained folders, an
open_clip local dir) so that loading them exercises the same code path as real models.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import open_clip
import torch
from safetensors.torch import save_file

from ._build import ensure_built

TINY_VERSION = 1

# Plain words so that a random BLIP still "captions" in readable, promptable text.
WORDS = (
    "a the of on in with and near red blue green yellow black white small large round square "
    "cat dog bird car house tree boat flower person table cup ball sky water grass street "
    "sitting standing flying next to picture photo"
).split()
BLIP_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "[ENC]"]

# Two tiny open_clip ViTs; different widths and embedding sizes, as real ensembles have.
OPEN_CLIP_TINY = {
    "encoder-vit-a": dict(seed_offset=1, embed_dim=32, image_size=32, width=32, patch_size=8),
    "encoder-vit-b": dict(seed_offset=2, embed_dim=24, image_size=40, width=48, patch_size=8),
}
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def ensure_tiny_models(model_dir: Path, seed: int = 0) -> Path:
    """Return model_dir/'tiny', building it first unless a complete matching build is there."""
    stamp = {"version": TINY_VERSION, "seed": seed}
    return ensure_built(Path(model_dir) / "tiny", stamp, lambda out: _build_all(out, seed))


def _build_all(out: Path, seed: int) -> None:
    builders: dict[str, Callable[[Path, int], None]] = {
        "captioner": save_tiny_blip,
        "generator": save_tiny_stable_diffusion,
        "encoder-hf-clip": save_tiny_hf_clip,
    }
    for name, builder in builders.items():
        builder(out / name, seed)
    for name, cfg in OPEN_CLIP_TINY.items():
        save_tiny_open_clip(out / name, seed + cfg["seed_offset"], **_without(cfg, "seed_offset"))


def _without(d: dict, key: str) -> dict:
    return {k: v for k, v in d.items() if k != key}


def save_tiny_blip(path: Path, seed: int) -> None:
    """BLIP captioner, 32-wide and 2 layers, with a word-level vocabulary."""
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration
    from transformers import BlipImageProcessor, BlipProcessor

    vocab = {tok: i for i, tok in enumerate(BLIP_SPECIALS + WORDS)}
    # transformers 5 ignores vocab_file; the vocabulary must be passed in memory.
    tokenizer = BertTokenizer(vocab=vocab, bos_token="[DEC]", model_max_length=64)
    tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    image_processor = BlipImageProcessor(size={"height": 32, "width": 32})
    # initializer_range 0.2 (not 0.02): at the default, image features barely reach the decoder
    # and every image gets the same caption; plumbing tests want captions that follow the image.
    common = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                  initializer_range=0.2)
    config = BlipConfig(
        vision_config=dict(common, image_size=32, patch_size=8),
        text_config=dict(
            common, vocab_size=len(vocab), encoder_hidden_size=32, max_position_embeddings=64,
            pad_token_id=vocab["[PAD]"], bos_token_id=vocab["[DEC]"],
            sep_token_id=vocab["[SEP]"], eos_token_id=vocab["[SEP]"],
        ),
        projection_dim=32,
        initializer_range=0.2,
    )
    torch.manual_seed(seed)
    model = BlipForConditionalGeneration(config).eval()
    # Random weights would often emit [SEP]/[UNK] first; forbid specials so captions are words.
    with torch.no_grad():
        model.text_decoder.cls.predictions.decoder.bias[: len(BLIP_SPECIALS)] = -1e4
    model.save_pretrained(path)
    BlipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(path)


def _bytes_to_unicode() -> dict[int, str]:
    # GPT-2/CLIP byte-level alphabet: every byte maps to one printable unicode character.
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    return {b: chr(b if b in keep else next(extra)) for b in range(256)}


def _word_merges(words: list[str]) -> list[tuple[str, str]]:
    # Left-to-right merges that spell each word, so a tiny caption stays well under 77 tokens.
    merges: dict[tuple[str, str], None] = {}
    for word in words:
        prefix = word[0]
        for i, ch in enumerate(word[1:], start=2):
            piece = ch + "</w>" if i == len(word) else ch
            merges[(prefix, piece)] = None
            prefix += piece
    return list(merges)


def _tiny_clip_tokenizer():
    from transformers import CLIPTokenizer

    chars = list(_bytes_to_unicode().values())
    # tokenizers' BPE wants merges as (left, right) pairs; each result must be in the vocab.
    merges = _word_merges(WORDS)
    merged = [a + b for a, b in merges]
    tokens = ["<|startoftext|>", *chars, *(c + "</w>" for c in chars), *merged, "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77), vocab


def save_tiny_stable_diffusion(path: Path, seed: int) -> None:
    """Stable Diffusion pipeline in the layout of diffusers' own dummy components; 32x32 output."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer, vocab = _tiny_clip_tokenizer()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, attention_head_dim=4, norm_num_groups=4,
    )
    vae = AutoencoderKL(
        block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab["<|endoftext|>"], pad_token_id=vocab["<|endoftext|>"],
    ))
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        clip_sample=False, set_alpha_to_one=False, steps_offset=1,
    )
    pipeline = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipeline.save_pretrained(path)


def save_tiny_open_clip(
    path: Path, seed: int, *, embed_dim: int, image_size: int, width: int, patch_size: int
) -> None:
    """open_clip ViT as a 'local-dir:' folder: open_clip_config.json + open_clip_model.safetensors."""
    model_cfg = {
        "embed_dim": embed_dim,
        "vision_cfg": {"image_size": image_size, "layers": 2, "width": width, "head_width": 16,
                       "patch_size": patch_size},
        # vocab_size must stay 49408: open_clip's bundled tokenizer emits ids up to that.
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
    }
    preprocess_cfg = {"mean": list(OPENAI_MEAN), "std": list(OPENAI_STD), "interpolation": "bicubic",
                      "resize_mode": "shortest"}
    torch.manual_seed(seed)
    model = open_clip.CLIP(**model_cfg).eval()
    path.mkdir(parents=True)
    (path / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}, indent=2)
    )
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path / "open_clip_model.safetensors"))


def save_tiny_hf_clip(path: Path, seed: int) -> None:
    """transformers CLIPModel + CLIPImageProcessor, for the 'hf-clip:' loader."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    config = CLIPConfig(
        text_config=dict(vocab_size=99, hidden_size=16, intermediate_size=37, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=16,
                         bos_token_id=0, eos_token_id=1, pad_token_id=1),
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                           num_attention_heads=4, image_size=32, patch_size=8),
        projection_dim=16,
    )
    torch.manual_seed(seed)
    CLIPModel(config).eval().save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(path)
