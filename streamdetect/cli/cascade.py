"""`streamdetect bench-cascade`: what the cascade saves on a mostly clean stream, in one run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from streamdetect.cli.context import settings_from_context
from streamdetect.cli.options import MODEL_SETTINGS, setting_options


def _budgets(ctx: click.Context, param: click.Parameter, value: str) -> tuple[float, ...]:
    try:
        budgets = tuple(float(v) for v in value.split(",") if v.strip())
    except ValueError:
        budgets = ()
    if not budgets or not all(0 < b < 1 for b in budgets):
        raise click.BadParameter(f"expected comma-separated shares in (0, 1), got {value!r}")
    return budgets


def _first_stages(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    from streamdetect.detector.cascade import FIRST_STAGES

    kinds = tuple(k.strip() for k in value.split(",") if k.strip())
    if not kinds or set(kinds) - set(FIRST_STAGES):
        raise click.BadParameter(f"expected some of {', '.join(FIRST_STAGES)}, got {value!r}")
    return kinds


@click.command("bench-cascade")
@setting_options(*(n for n in MODEL_SETTINGS if n not in ("mode", "encoder_zoo", "generator_zoo",
                                                           "encoders_per_request", "noise_scale")))
@click.option("--uploads", "n", type=click.IntRange(min=20), default=300, show_default=True,
              help="Uploads in the stream.")
@click.option("--attacked-share", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.01,
              show_default=True, help="Share of the stream that is PGD-attacked (eps 8/255, toward a wrong caption).")
@click.option("--budgets", default="0.8,0.9,0.95", show_default=True, callback=_budgets,
              help="Exit budgets to measure: the share of clean validation scenes the first stage may decide.")
@click.option("--first-stages", default="agreement,margin,swap", show_default=True, callback=_first_stages,
              help="The cascade's first stages to measure (comma-separated): agreement, margin, swap.")
@click.option("--n-val", type=click.IntRange(min=20), default=100, show_default=True,
              help="Clean validation scenes both detectors' thresholds are fitted on.")
@click.option("--target-fpr", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.02,
              show_default=True, help="FPR both detectors' MirrorCheck thresholds are fitted for.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Also write the result here.")
@click.pass_context
def bench_cascade(ctx: click.Context, n: int, attacked_share: float, budgets: tuple[float, ...],
                  first_stages: tuple[str, ...], n_val: int, target_fpr: float, json_path: Path | None,
                  **overrides: Any) -> None:
    """Judge one stream of mostly clean mini scenes (and a few attacked ones) always regenerating,
    then with the cascade at each exit budget, on the same models in one run: throughput and its
    ratio, the share of uploads that skipped regeneration, attacks flagged and clean FPR. Mini
    profiles only (the stream is mini scenes)."""
    settings = settings_from_context(ctx, **overrides)
    if not settings.profile.startswith("mini"):
        raise click.UsageError("bench-cascade streams mini scenes: use --profile mini or mini-robust")
    from streamdetect.bench.cascade import CascadeBench, format_cascade, run_cascade_bench

    result = run_cascade_bench(settings, CascadeBench(n=n, attacked_share=attacked_share, budgets=budgets,
                                                      first_stages=first_stages, n_val=n_val, target_fpr=target_fpr))
    if json_path:
        json_path.write_text(json.dumps(result, indent=2))
    click.echo(format_cascade(result))
