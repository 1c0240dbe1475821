"""The mini text-to-image model: a diffusers pixel-space UNet trained with rectified flow.

Components, each saved with save_pretrained in its own sub-folder:
  unet/          UNet2DConditionModel on pixel_unshuffle(2) images (3x32x32 -> 12x16x16)
  text_encoder/  MiniTextEncoder: a learned word embedding + positions + LayerNorm
  scheduler/     FlowMatchEulerDiscreteScheduler (Euler steps along the straight flow)
Rectified flow: x_t = (1 - t) x0 + t noise, the UNet predicts noise - x0 (docs/architecture.md#mini-recipe).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler, ModelMixin, UNet2DConditionModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from PIL import Image

SPECIALS = ("[PAD]", "[UNK]")
MAX_WORDS = 12
IMAGE_SIZE = 32
UNSHUFFLE = 2


class MiniTextEncoder(ModelMixin, ConfigMixin):
    """Word-level text conditioning. An empty prompt (all padding) is the unconditional input
    used for classifier-free guidance; unknown words map to [UNK] rather than failing, because
    a platform's own caption may use words this domain never saw."""

    @register_to_config
    def __init__(self, words: list[str], dim: int = 64, max_words: int = MAX_WORDS) -> None:
        super().__init__()
        self.vocab = {w: i for i, w in enumerate([*SPECIALS, *words])}
        self.embed = torch.nn.Embedding(len(self.vocab), dim)
        self.position = torch.nn.Parameter(torch.zeros(max_words, dim))
        self.norm = torch.nn.LayerNorm(dim)

    def tokenize(self, prompts: list[str]) -> torch.Tensor:
        max_words = self.config.max_words
        ids = torch.zeros(len(prompts), max_words, dtype=torch.long)
        for row, prompt in enumerate(prompts):
            words = prompt.lower().split()[:max_words]
            ids[row, : len(words)] = torch.tensor([self.vocab.get(w, 1) for w in words], dtype=torch.long)
        return ids.to(self.position.device)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.norm(self.embed(ids) + self.position[: ids.shape[1]])


def build_unet() -> UNet2DConditionModel:
    """The mini recipe (docs/architecture.md#mini-recipe) narrowed to channels (32, 64, 64),
    ~1.7 M parameters: (64, 128, 128) needs ~0.55 s a step on two idle cores, too slow when the
    cores are shared.
    Cross-attention (no self-attention) on the two lower levels, where it is cheap."""
    return UNet2DConditionModel(
        sample_size=IMAGE_SIZE // UNSHUFFLE, in_channels=3 * UNSHUFFLE**2, out_channels=3 * UNSHUFFLE**2,
        block_out_channels=(32, 64, 64), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        only_cross_attention=True, cross_attention_dim=64, attention_head_dim=8,
    )


def build_scheduler() -> FlowMatchEulerDiscreteScheduler:
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)


def pack(pixels: torch.Tensor) -> torch.Tensor:
    """[0, 1] images (N, 3, 32, 32) -> model space (N, 12, 16, 16) in [-1, 1]."""
    return F.pixel_unshuffle(pixels * 2 - 1, UNSHUFFLE)


def unpack(latents: torch.Tensor) -> torch.Tensor:
    return ((F.pixel_shuffle(latents, UNSHUFFLE) + 1) / 2).clamp(0, 1)


class MiniT2IPipeline(DiffusionPipeline):
    """Text -> 32x32 image in a few Euler steps; seeded per prompt, batched."""

    def __init__(self, unet: UNet2DConditionModel, text_encoder: MiniTextEncoder,
                 scheduler: FlowMatchEulerDiscreteScheduler) -> None:
        super().__init__()
        self.register_modules(unet=unet, text_encoder=text_encoder, scheduler=scheduler)

    @classmethod
    def from_dir(cls, path: str | Path, dtype: torch.dtype = torch.float32) -> MiniT2IPipeline:
        root = Path(path)
        if not (root / "unet").is_dir():
            raise FileNotFoundError(f"mini-t2i dir {str(root)!r} has no unet/ sub-folder")
        unet = UNet2DConditionModel.from_pretrained(root / "unet", torch_dtype=dtype).eval()
        text = MiniTextEncoder.from_pretrained(root / "text_encoder", torch_dtype=dtype).eval()
        scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(root / "scheduler")
        return cls(unet, text, scheduler)

    @torch.no_grad()
    def __call__(
        self,
        prompt: list[str],
        num_inference_steps: int = 10,
        guidance_scale: float = 1.5,
        height: int | None = None,
        width: int | None = None,
        generator: list[torch.Generator] | None = None,
        output_type: str = "pil",
    ) -> ImagePipelineOutput:
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        self._check(prompts, height, width, generator, output_type)
        cond = self._encode(prompts, guidance_scale)
        latents = self._noise(len(prompts), generator)
        self.scheduler.set_timesteps(num_inference_steps, device=self.device)
        for t in self.progress_bar(self.scheduler.timesteps):
            velocity = self._velocity(latents, t, cond, guidance_scale)
            latents = self.scheduler.step(velocity, t, latents).prev_sample
        pixels = unpack(latents.float())
        if output_type == "pt":
            return ImagePipelineOutput(images=pixels.cpu())
        arrays = (pixels * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        return ImagePipelineOutput(images=[Image.fromarray(a) for a in arrays])

    def _check(self, prompts: list[str], height: int | None, width: int | None,
               generator: list[torch.Generator] | None, output_type: str) -> None:
        for name, value in (("height", height), ("width", width)):
            if value not in (None, IMAGE_SIZE):
                raise ValueError(f"{name}={value}: the mini generator draws {IMAGE_SIZE}x{IMAGE_SIZE} only")
        if generator is not None and len(generator) != len(prompts):
            raise ValueError(f"{len(generator)} generators for {len(prompts)} prompts")
        if output_type not in ("pil", "pt"):
            raise ValueError(f"output_type={output_type!r}: expected 'pil' or 'pt'")

    def _encode(self, prompts: list[str], guidance: float) -> torch.Tensor:
        ids = self.text_encoder.tokenize(prompts)
        if guidance != 1.0:  # classifier-free guidance: unconditional rows first
            ids = torch.cat([torch.zeros_like(ids), ids])
        return self.text_encoder(ids).to(self.unet.dtype)

    def _noise(self, n: int, generator: list[torch.Generator] | None) -> torch.Tensor:
        shape = (3 * UNSHUFFLE**2, IMAGE_SIZE // UNSHUFFLE, IMAGE_SIZE // UNSHUFFLE)
        gens = generator or [None] * n
        # One CPU draw per image: an image's noise depends on its own seed, not on the batch.
        noise = torch.stack([torch.randn(shape, generator=g) for g in gens])
        return noise.to(self.device, self.unet.dtype)

    def _velocity(self, latents: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, guidance: float) -> torch.Tensor:
        if guidance == 1.0:
            return self.unet(latents, t, encoder_hidden_states=cond).sample
        both = self.unet(torch.cat([latents, latents]), t, encoder_hidden_states=cond).sample
        uncond, text = both.chunk(2)
        return uncond + guidance * (text - uncond)
