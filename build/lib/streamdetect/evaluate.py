"""Offline evaluation: labelled clean and adversarial images through the configured detector.

Inputs, as the reference evaluation scripts take them: two folders (clean, adversarial), each
optionally with a folder of precomputed regenerations paired by file name or by sorted index,
or a CSV with columns input, label (0/clean, 1/adversarial) and optionally generated and
caption (the victim VLM's output; without it the profile's captioner captions the image).
Items without a regeneration are captioned (unless the CSV gives the caption) and regenerated
by the configured generator(s); all are scored by the same detector code the worker runs,
stochastic draws included. Outputs: scores.csv, summary.json, summary.csv, roc.png, report.html.
"""

from __future__ import annotations

import csv
import hashlib
import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from PIL import Image

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


@dataclass(frozen=True)
class RunOptions:
    seed: int = 0  # regeneration seed base, as the worker's `seed`
    draw_seed: int | None = None  # one draw for every item (the reference's 'config' sampling)
    batch: int = 8
    regenerated_dir: Path | None = None  # keep regenerations here (eval --out DIR/regenerated)


# ---------------------------------------------------------------- collecting items


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


# ---------------------------------------------------------------- scoring


def regeneration_seed(name: str, seed: int) -> int:
    """Per item and independent of order, like the worker's per-upload seed."""
    return (zlib.crc32(name.encode()) + seed) % 2**31


def item_draw_seed(name: str, seed: int) -> int:
    digest = hashlib.sha256(f"draw:{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 2**53


def score_items(
    items: Sequence[EvalItem], models: Any, stochastic: Any, options: RunOptions,
    progress: Callable[[int], None] = lambda n: None,
) -> list[Scored]:
    """Caption, regenerate and score every item in batches of ``options.batch``.
    ``models`` has captioner, generators, encoders (models.zoo.LoadedZoo)."""
    if options.batch < 1:
        raise ValueError(f"batch must be >= 1, got {options.batch}")
    out: list[Scored] = []
    for start in range(0, len(items), options.batch):
        chunk = items[start : start + options.batch]
        out += _score_chunk(chunk, models, stochastic, options)
        progress(len(chunk))
    return out


def _score_chunk(chunk: Sequence[EvalItem], models: Any, stochastic: Any, options: RunOptions) -> list[Scored]:
    from streamdetect.detector import PairToScore, decide, draw, score_batch

    images = [_open(i.input) for i in chunk]
    captions = _captions(chunk, images, models)
    seeds = [regeneration_seed(i.name, options.seed) for i in chunk]
    draws = [None if stochastic is None else draw(
        options.draw_seed if options.draw_seed is not None else item_draw_seed(i.name, options.seed),
        max(len(models.generators), 1), len(models.encoders), stochastic) for i in chunk]
    regenerated = _regenerate(chunk, captions, seeds, draws, models)
    paths = [i.generated or _keep(options.regenerated_dir, i, im) for i, im in zip(chunk, regenerated)]
    per_encoder = score_batch(models.encoders, [PairToScore(a, b, d) for a, b, d in zip(images, regenerated, draws)])
    scored = []
    for item, caption, seed, drawn, path, scores in zip(chunk, captions, seeds, draws, paths, per_encoder):
        record = None if drawn is None else {
            "seed": drawn.seed, "noise_scale": drawn.noise_scale,
            "generator": models.generators[drawn.generator].spec if item.generated is None else None,
            "encoders": [models.encoders[j].spec for j in drawn.encoders]}
        scored.append(Scored(item, decide(scores, 0.0)[0], scores, caption, path, seed, record))
    return scored


def _open(path: Path) -> Image.Image:
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except OSError as exc:
        raise ValueError(f"cannot read image {path}: {exc}") from exc


def _captions(chunk: Sequence[EvalItem], images: list[Image.Image], models: Any) -> list[str]:
    """The CSV's caption; else the captioner's; items with a regeneration and no caption get ''."""
    need = [k for k, i in enumerate(chunk) if i.caption is None and i.generated is None]
    captions = [i.caption or "" for i in chunk]
    if need:
        for k, text in zip(need, models.captioner.caption([images[k] for k in need])):
            captions[k] = text
    return captions


def _regenerate(chunk: Sequence[EvalItem], captions: list[str], seeds: list[int], draws: list[Any],
                models: Any) -> list[Image.Image]:
    out: list[Image.Image | None] = [_open(i.generated) if i.generated else None for i in chunk]
    groups: dict[int, list[int]] = {}
    for k, item in enumerate(chunk):
        if item.generated is None:
            groups.setdefault(draws[k].generator if draws[k] else 0, []).append(k)
    for index, members in sorted(groups.items()):
        images = models.generators[index].generate([captions[k] for k in members], [seeds[k] for k in members])
        for k, image in zip(members, images):
            out[k] = image
    return [im for im in out if im is not None]


def _keep(folder: Path | None, item: EvalItem, image: Image.Image) -> Path | None:
    if folder is None:
        return None
    path = folder / f"{Path(item.name).with_suffix('')}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


# ---------------------------------------------------------------- thresholds and outputs


@dataclass(frozen=True)
class ThresholdChoice:
    """'auto' fits by ``mode`` on this data; 'config' is the worker's; else a number."""

    value: str = "auto"
    mode: str = "equal_tpr_tnr"  # or youden, target_fpr
    target_fpr: float = 0.01

    def resolve(self, scores: Sequence[float], labels: Sequence[int], configured: float) -> float:
        from streamdetect.detector.thresholds import fit_labelled, fit_target_fpr

        if self.value == "config":
            return configured
        if self.value != "auto":
            try:
                return float(self.value)
            except ValueError:
                raise ValueError(f"threshold {self.value!r} is not auto, config or a number") from None
        if self.mode == "target_fpr":
            return fit_target_fpr([s for s, y in zip(scores, labels) if y == 0], self.target_fpr).threshold
        return fit_labelled(scores, labels, self.mode)


def summary(scored: Sequence[Scored], threshold: float, extra: dict[str, Any]) -> dict[str, Any]:
    from streamdetect.detector.metrics import summarize

    return {**summarize([s.score for s in scored], [s.item.label for s in scored], threshold), **extra}


SCORE_COLUMNS = ("name", "input", "generated", "label", "label_name", "caption", "score", "threshold",
                 "decision", "correct", "encoder_scores", "seed", "draw")


def write_scores(path: Path, scored: Iterable[Scored], threshold: float) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=SCORE_COLUMNS)
        writer.writeheader()
        for s in scored:
            flagged = s.score < threshold
            writer.writerow({
                "name": s.item.name, "input": str(s.item.input), "generated": str(s.regenerated or ""),
                "label": s.item.label, "label_name": LABEL_NAMES[s.item.label], "caption": s.caption,
                "score": repr(s.score), "threshold": repr(threshold),
                "decision": "adversarial" if flagged else "clean", "correct": int(flagged == bool(s.item.label)),
                "encoder_scores": json.dumps(s.scores, sort_keys=True), "seed": s.seed,
                "draw": json.dumps(s.draw, sort_keys=True) if s.draw else "",
            })


def write_summary(out: Path, data: dict[str, Any]) -> None:
    (out / "summary.json").write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    flat = {k: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in sorted(data.items())}
    with (out / "summary.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(flat))
        writer.writeheader()
        writer.writerow(flat)


@dataclass
class EvalResult:
    scored: list[Scored]
    threshold: float
    summary: dict[str, Any]
    unpaired: list[str] = field(default_factory=list)


def run_eval(
    settings: Any, items: list[EvalItem], choice: ThresholdChoice, out: Path | None, options: RunOptions,
    unpaired: Sequence[str] = (), quiet: bool = False, report_samples: int = 6,
) -> EvalResult:
    """Score ``items`` with the configured detector, pick the threshold, write the outputs to ``out``."""
    from tqdm import tqdm

    from streamdetect.detector_settings import load_detector_models, resolve_threshold, settings_zoo
    from streamdetect.detector_settings import stochastic_settings

    if not items:
        raise ValueError("no images to evaluate: check the folders, the CSV and the pairing mode")
    configured = resolve_threshold(settings) if choice.value == "config" else settings.threshold
    need_generation = any(i.generated is None for i in items)
    models = load_detector_models(settings, captioner=any(i.generated is None and i.caption is None for i in items),
                                  generators=need_generation)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        options = RunOptions(options.seed, options.draw_seed, options.batch, options.regenerated_dir or out / "regenerated")
    with tqdm(total=len(items), desc="eval", unit="img", disable=quiet) as bar:
        scored = score_items(items, models, stochastic_settings(settings), options, bar.update)
    scores, labels = [s.score for s in scored], [s.item.label for s in scored]
    threshold = choice.resolve(scores, labels, configured)
    zoo = settings_zoo(settings)
    data = summary(scored, threshold, {
        "threshold_mode": choice.mode if choice.value == "auto" else choice.value if choice.value == "config"
        else "fixed",
        "target_fpr": choice.target_fpr if choice.mode == "target_fpr" else None,
        "profile": settings.profile, "mode": settings.mode, "generators": list(zoo.generators),
        "encoders": list(zoo.encoders), "encoders_per_request": (settings.encoders_per_request if settings.mode == "stochastic" else 0)
        or len(zoo.encoders),
        "noise_scale": settings.noise_scale if settings.mode == "stochastic" else 0.0,
        "seed": options.seed, "draw_seed": options.draw_seed, "n_unpaired": len(unpaired),
    })
    if out is not None:
        from streamdetect.report import write_html, write_roc_png

        write_scores(out / "scores.csv", scored, threshold)
        write_summary(out, data)
        write_roc_png(out / "roc.png", scores, labels, threshold)
        write_html(out / "report.html", scored, data, threshold, report_samples)
    return EvalResult(scored, threshold, data, list(unpaired))
