"""Build a model folder once: beside its target, stamped, renamed into place.

Shared by the random-weight profiles (tiny, standard-shapes) so that their builds are lazy,
idempotent and never leave a half-written folder behind, even when two processes race.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

COMPLETE = ".complete"


def ensure_built(target: Path, stamp: dict[str, Any], build: Callable[[Path], None]) -> Path:
    """Return target, first running build(folder) into a fresh folder unless a complete build
    with this stamp is there already (a different stamp is rebuilt: new version, seed or size)."""
    target = Path(target)
    if is_complete(target, stamp):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename: a crash never leaves a half-written target.
    folder = Path(tempfile.mkdtemp(prefix=f".{target.name}-build-", dir=target.parent))
    folder.chmod(0o755)  # mkdtemp makes it private; the renamed folder should read like any other
    try:
        build(folder)
        (folder / COMPLETE).write_text(json.dumps(stamp))
        _swap_in(folder, target, stamp)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return target


def is_complete(target: Path, stamp: dict[str, Any]) -> bool:
    try:
        found = json.loads((Path(target) / COMPLETE).read_text())
    except (OSError, ValueError):
        return False
    return found == stamp


def _swap_in(folder: Path, target: Path, stamp: dict[str, Any]) -> None:
    if target.exists():
        if is_complete(target, stamp):  # another process won the race
            return
        old = target.with_name(f".{target.name}-old-{os.getpid()}")
        os.replace(target, old)
        shutil.rmtree(old, ignore_errors=True)
    try:
        os.replace(folder, target)
    except OSError:
        if not is_complete(target, stamp):
            raise
