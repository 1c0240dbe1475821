"""The labelled images an evaluation runs on: from two folders (clean, adversarial), each
optionally with a folder of precomputed regenerations paired by file name or by sorted index,
or from a CSV with columns input, label (0/clean, 1/adversarial) and optionally generated and
caption (the victim VLM's output). ``Scored`` is one item's result."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
LABELS = {"0": 0, "clean": 0, "1": 1, "adversarial": 1, "adv": 1}
LABEL_NAMES = ("clean", "adversarial")


@dataclass(frozen=True)
class EvalItem:
    name: str  # unique within a run: '<label>/<relative path>'
    input: Path
    label: int
    generated: Path | None = None
    caption: str | None = None


@dataclass
class Scored:
    item: EvalItem
    score: float
    scores: dict[str, float]
    caption: str
    regenerated: Path | None  # where the regeneration can be read back (None if not kept)
    seed: int
    draw: dict[str, Any] | None = None
    agreement: float | None = None  # the cascade's caption agreement, when asked for (RunOptions.agreement)


def image_files(folder: Path, recursive: bool = False) -> list[Path]:
    if not folder.is_dir():
        raise ValueError(f"image folder {folder} does not exist or is not a folder")
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in found if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def pair_folder(
    inputs: Path, generated: Path | None, pairing: str, recursive: bool = False
) -> tuple[list[tuple[Path, Path | None]], list[str]]:
    """(input, regeneration) pairs and the input names left unpaired. 'name' pairs the same
    relative path (or, failing that, the same stem); 'index' pairs by sorted order."""
    files = image_files(inputs, recursive)
    if generated is None:
        return [(f, None) for f in files], []
    regens = image_files(generated, recursive)
    if pairing == "index":
        n = min(len(files), len(regens))
        return list(zip(files[:n], regens[:n])), [f.relative_to(inputs).as_posix() for f in files[n:]]
    if pairing != "name":
        raise ValueError(f"pairing {pairing!r} is unknown; use name or index")
    by_path = {g.relative_to(generated).as_posix(): g for g in regens}
    stems: dict[str, list[Path]] = {}
    for g in regens:
        stems.setdefault(g.relative_to(generated).with_suffix("").as_posix(), []).append(g)
    pairs, missing = [], []
    for f in files:
        rel = f.relative_to(inputs)
        match = by_path.get(rel.as_posix())
        same_stem = stems.get(rel.with_suffix("").as_posix(), [])
        match = match or (same_stem[0] if len(same_stem) == 1 else None)
        if match is None:
            missing.append(rel.as_posix())
        else:
            pairs.append((f, match))
    return pairs, missing


def collect_folders(
    clean: Path, adversarial: Path, clean_generated: Path | None = None, adv_generated: Path | None = None,
    pairing: str = "name", recursive: bool = False,
) -> tuple[list[EvalItem], list[str]]:
    items: list[EvalItem] = []
    unpaired: list[str] = []
    for label, folder, regens in ((0, clean, clean_generated), (1, adversarial, adv_generated)):
        pairs, missing = pair_folder(folder, regens, pairing, recursive)
        prefix = LABEL_NAMES[label]
        unpaired += [f"{prefix}/{m}" for m in missing]
        items += [EvalItem(f"{prefix}/{f.relative_to(folder).as_posix()}", f, label, g) for f, g in pairs]
    return items, unpaired


def collect_csv(path: Path, root: Path | None = None) -> list[EvalItem]:
    """Rows of input,label[,generated][,caption]; relative paths are taken from ``root``
    (default: the CSV's folder)."""
    root = root or path.parent
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = {"input", "label"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"mapping CSV {path} lacks columns {sorted(missing)}; it needs input, label "
                             f"and optionally generated, caption")
        items = [_csv_item(row, line, path, root) for line, row in enumerate(reader, start=2)]
    names = [i.name for i in items]
    if len(set(names)) != len(names):
        raise ValueError(f"mapping CSV {path} lists an input twice under the same label")
    return items


def _csv_item(row: dict[str, str], line: int, path: Path, root: Path) -> EvalItem:
    label = LABELS.get((row.get("label") or "").strip().lower())
    if label is None:
        raise ValueError(f"{path}:{line}: label {row.get('label')!r} is not 0/clean or 1/adversarial")
    inp = _resolve(root, row["input"], path, line, "input")
    generated = row.get("generated") or ""
    caption = (row.get("caption") or "").strip() or None
    return EvalItem(f"{LABEL_NAMES[label]}/{row['input'].strip()}", inp, label,
                    _resolve(root, generated, path, line, "generated") if generated.strip() else None, caption)


def _resolve(root: Path, value: str, path: Path, line: int, column: str) -> Path:
    resolved = Path(value.strip()).expanduser()
    resolved = resolved if resolved.is_absolute() else root / resolved
    if not resolved.is_file():
        raise ValueError(f"{path}:{line}: {column} file {resolved} does not exist")
    return resolved


def limit_per_class(items: list[EvalItem], max_samples: int | None) -> list[EvalItem]:
    """The first ``max_samples`` clean and first ``max_samples`` adversarial items."""
    if max_samples is None:
        return items
    if max_samples < 1:
        raise ValueError(f"max_samples must be >= 1, got {max_samples}")
    return [i for label in (0, 1) for i in [x for x in items if x.label == label][:max_samples]]
