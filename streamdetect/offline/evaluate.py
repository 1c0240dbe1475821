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
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from streamdetect.offline.items import LABEL_NAMES, EvalItem, Scored
from streamdetect.offline.scoring import RunOptions, score_items


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

    from streamdetect.app.detector_config import load_detector_models, resolve_threshold, settings_zoo
    from streamdetect.app.detector_config import stochastic_settings

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
        from streamdetect.offline.report import write_html, write_roc_png

        write_scores(out / "scores.csv", scored, threshold)
        write_summary(out, data)
        write_roc_png(out / "roc.png", scores, labels, threshold)
        write_html(out / "report.html", scored, data, threshold, report_samples)
    return EvalResult(scored, threshold, data, list(unpaired))
