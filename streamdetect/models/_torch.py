"""Small torch helpers shared by the model wrappers."""

from __future__ import annotations

import torch

from .specs import check_device, check_dtype

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def torch_dtype(dtype: str) -> torch.dtype:
    return _DTYPES[check_dtype(dtype)]


def torch_device(device: str) -> torch.device:
    check_device(device)
    if device.startswith("cuda") and not torch.cuda.is_available():
        # Fail at load time with a clear message rather than deep inside a forward pass.
        raise ValueError(f"device {device!r} requested but torch sees no CUDA device")
    return torch.device(device)
