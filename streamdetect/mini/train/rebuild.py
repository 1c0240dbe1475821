"""`streamdetect mini train`: rebuild every shipped mini model from one seed.

Each part is written beside its target and renamed into place, so an interrupted run never
leaves a half-written model where the `mini` profile loads from.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from streamdetect.mini.train.captioner import train_captioner
from streamdetect.mini.train.encoders import ENCODERS, train_encoder
from streamdetect.mini.train.generator import train_generator
from streamdetect.mini.train.robust import ROBUST, train_robust
from streamdetect.mini.train.common import Log

PARTS = ("generator", "captioner", *ENCODERS, *ROBUST)  # a robust encoder after its base


def train_part(part: str, out: Path, seed: int, log: Log) -> None:
    """Train one part into out/<part>. Seeds: generator seed, captioner seed + 1, encoders
    seed + their own offsets, so parts can be retrained alone and come out the same."""
    if part not in PARTS:
        raise ValueError(f"unknown mini part {part!r}; expected one of {', '.join(PARTS)}")
    out.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f".{part}-build-", dir=out))
    try:
        if part == "generator":
            train_generator(build / part, seed, log)
        elif part == "captioner":
            train_captioner(build / part, seed + 1, log)
        elif part in ROBUST:
            train_robust(build, part, seed, log, base_dir=out)
        else:
            train_encoder(build, part, seed, log)
        target = out / part
        if target.exists():
            shutil.rmtree(target)
        os.replace(build / part, target)
    finally:
        shutil.rmtree(build, ignore_errors=True)


def train_all(out: Path, seed: int, parts: tuple[str, ...], log: Log) -> None:
    for part in parts:
        log(f"training {part}")
        train_part(part, out, seed, log)
