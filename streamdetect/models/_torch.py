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


def set_cpu_threads(threads: int) -> None:
    """Intra-op threads for CPU work; 0 leaves torch's default (one per core).

    Why this exists: model calls run on a device thread, off the event loop, and on the 2-core
    machines this project is measured on, torch's OpenMP parallelism from a non-main thread ran
    each call at about half the speed of the same call from the main thread, while one thread
    ran at full speed from either (batch of 8, tiny profile). One thread is the default; raise
    it where a CPU profile's matrices are large enough to gain from more.
    """
    if threads > 0:
        torch.set_num_threads(threads)


def quiet_model_libraries() -> None:
    """No progress bars and only warnings from diffusers and transformers: a service's log is
    read by collectors, one record a line, not drawn on a terminal."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    for library in (diffusers_logging, transformers_logging):
        library.disable_progress_bar()
        library.set_verbosity_warning()
        library.disable_default_handler()  # their own stderr handler: records go to the root's instead
        library.enable_propagation()
