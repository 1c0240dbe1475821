"""`streamdetect mini train|eval|scenes` and `streamdetect attack`."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from streamdetect.mini import ATTACKS, DEFAULT_METHODS, TARGET_SETS

PARTS_HELP = ("generator, captioner, encoder-vit-a, encoder-vit-b, encoder-rn, surrogate-vit, "
              "robust-vit-a, robust-vit-b, robust-rn")


def _log(message: str) -> None:
    click.echo(message, err=True)


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected comma-separated numbers") from None


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected comma-separated integers") from None


@click.group("mini")
def mini() -> None:
    """The mini domain: small models trained on synthetic scenes, shipped with the package."""


@mini.command("train")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Weights folder (default: the package's streamdetect/mini/weights).")
@click.option("--only", multiple=True, help=f"Train only these parts (repeatable): {PARTS_HELP}.")
@click.option("--threads", type=int, help="torch CPU threads (default: torch's choice).")
def mini_train(seed: int, out: Path | None, only: tuple[str, ...], threads: int | None) -> None:
    """Rebuild the mini models' weights from a seed (CPU; about 22 minutes on 2 cores, README)."""
    import torch

    from streamdetect.mini.train.rebuild import PARTS, train_all
    from streamdetect.models.profiles import MINI_WEIGHTS

    bad = sorted(set(only) - set(PARTS))
    if bad:
        raise click.BadParameter(f"unknown part(s) {bad}; expected {PARTS_HELP}", param_hint="--only")
    if threads:
        torch.set_num_threads(threads)
    start = time.monotonic()
    train_all(out or MINI_WEIGHTS, seed, tuple(p for p in PARTS if not only or p in only), _log)
    _log(f"trained in {time.monotonic() - start:.0f}s")


@mini.command("eval")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Write the table here as {\"rows\": [...], ...}.")
@click.option("--n", type=int, default=100, show_default=True, help="Clean test images (and attacked copies).")
@click.option("--eps", default="4,8,16", show_default=True, help="L-inf budgets in 1/255 units.")
@click.option("--attacks", default=",".join(ATTACKS), show_default=True,
              help="pgd (targeted, captioner only), transfer (surrogate encoder), untargeted (the smallest change "
                   "that moves the caption), adaptive (pgd + every signal of the detector aimed at), easiest "
                   "(adaptive toward each image's easiest wrong caption, kept where it holds after rounding), weakest "
                   "(the same toward the rival caption the detector's encoders are least sure against).")
@click.option("--methods", default=",".join(DEFAULT_METHODS), show_default=True,
              help="Detectors to judge with; private and private_margin also need --private-weights.")
@click.option("--targets", default="one", show_default=True,
              help="Target sets of the targeted attacks (comma-separated): one (shape, size or position), "
                   "shape, colour, size, position, background, any (one attribute), pair (two attributes).")
@click.option("--n-val", type=int, default=0, show_default=True,
              help="Clean validation scenes the thresholds and the fusion are fitted on (0: as many as --n).")
@click.option("--fpr", type=float, default=0.05, show_default=True,
              help="Target FPR of the validation threshold the undetected-success rate is counted at.")
@click.option("--attack-steps", type=int, default=60, show_default=True, help="PGD iterations of every attack.")
@click.option("--adaptive-weight", type=float, default=2.0, show_default=True,
              help="Adaptive attacks: weight of the detector's signals against the caption loss.")
@click.option("--stochastic-noise", type=float, default=1e-3, show_default=True,
              help="The eval's stochastic MirrorCheck: std of the one-time weight noise (randomness the attacker "
                   "averages over); not the worker's noise_scale setting.")
@click.option("--stochastic-k", type=int, default=2, show_default=True,
              help="Stochastic MirrorCheck: encoders drawn per image, of the profile's 3.")
@click.option("--steps-sweep", default="1,2,5,10,20", show_default=True,
              help="Euler step counts for the detection-vs-cost sweep ('' to skip).")
@click.option("--euler-steps", type=click.IntRange(min=0), default=0, show_default=True,
              help="The generator's Euler steps for the detectors and the attacks alike (0: the profile's 10): "
                   "the adaptive suite at a cheaper step count.")
@click.option("--exit-share", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.8,
              show_default=True, help="Methods cascade, robust_cascade, swap_cascade and beam_cascade: the share of "
                                      "clean validation scenes their first stage may decide without regeneration "
                                      "(their budget).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--weights", type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="Weights folder written by `mini train --out` (default: the shipped weights).")
@click.option("--private-weights", type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="Folder with robust-* encoders trained from a private seed (the grey-box 'private' row).")
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the table as Markdown (as README shows it).")
def mini_eval(json_path: Path, n: int, eps: str, attacks: str, methods: str, targets: str, n_val: int, fpr: float,
              attack_steps: int, adaptive_weight: float, stochastic_noise: float, stochastic_k: int, steps_sweep: str,
              euler_steps: int, exit_share: float, seed: int, weights: Path | None,
              private_weights: Path | None, markdown_path: Path | None) -> None:
    """Attack the mini captioner and measure every detector: the paper's table in miniature, with
    the adaptive attacks that break MirrorCheck and the robust defences measured against them."""
    from streamdetect.mini.eval.run import EvalSettings, run_eval
    from streamdetect.models.profiles import MINI_WEIGHTS

    try:
        settings = EvalSettings(n=n, n_val=n_val, seed=seed, eps=_floats(eps), attacks=tuple(attacks.split(",")),
                                methods=tuple(methods.split(",")), targets=tuple(targets.split(",")), fpr=fpr,
                                attack_steps=attack_steps, adaptive_weight=adaptive_weight,
                                noise_scale=stochastic_noise, stochastic_k=stochastic_k,
                                steps_sweep=_ints(steps_sweep), cascade_exit_share=exit_share,
                                euler_steps=euler_steps)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    if {"private", "private_margin"} & set(settings.methods) and private_weights is None:
        raise click.BadParameter("methods private and private_margin need --private-weights (robust encoders "
                                 "trained from a private seed)", param_hint="--methods")
    result = run_eval(settings, _log, weights or MINI_WEIGHTS, private_weights)
    from streamdetect.mini.eval.table import format_table, markdown_table, markdown_worst_case

    json_path.write_text(json.dumps(result, indent=2))
    if markdown_path:
        markdown_path.write_text(markdown_worst_case(result) + "\n\n" + markdown_table(result) + "\n")
    click.echo(format_table(result["rows"]))


@mini.command("fusions")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, exists=True, path_type=Path), required=True,
              help="A `mini eval --json` result that judged with robust and robust_margin.")
def mini_fusions(json_path: Path) -> None:
    """Score other rules for fusing robust MirrorCheck and the caption margin on an eval's
    per-image scores (fitted on its clean validation scores; no attack is rerun)."""
    from streamdetect.mini.eval.fusion_rules import fusion_rules

    try:
        rows = fusion_rules(json.loads(json_path.read_text()))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--json") from exc
    for r in rows:
        auroc = "  n/a" if r["auroc"] is None else f"{r['auroc']:.3f}"
        click.echo(f"{r['attack']:10} eps {r['eps']:<3g} {r['rule']:12} auroc {auroc} "
                   f"undetected {r['undetected_success_rate']:.2f} clean fpr {r['clean_fpr_test']:.2f}")


@mini.command("compare")
@click.argument("candidate", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.argument("baseline", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Also write the rows here.")
def mini_compare(candidate: Path, baseline: Path, json_path: Path | None) -> None:
    """Two `mini eval --json` results on the same seed and n (e.g. `--euler-steps 5` against the
    default 10), row by row: undetected-success and TPR at 1% FPR of each, and the paired
    difference (candidate - baseline) with its standard error. Exit 1 if any row is worse beyond
    two standard errors."""
    from streamdetect.mini.eval.paired import compare_runs

    try:
        rows = compare_runs(json.loads(candidate.read_text()), json.loads(baseline.read_text()))
    except (ValueError, KeyError) as exc:
        raise click.BadParameter(str(exc), param_hint="CANDIDATE BASELINE") from exc
    if not rows:
        raise click.BadParameter("the two results share no (method, attack) row", param_hint="CANDIDATE BASELINE")
    if json_path:
        json_path.write_text(json.dumps(rows, indent=2))
    click.echo(f"{'method':12} {'attack':24} {'undetected cand/base':>21} {'difference':>15} "
               f"{'TPR@1%FPR cand/base':>20} {'difference':>15}  within noise")
    for r in rows:
        und, tpr = r["undetected_success_rate"], r["tpr_at_1pct_fpr"]
        click.echo(f"{r['method']:12} {r['attack'] + '@' + str(r['aimed_at'] or '-'):24} "
                   f"{und['candidate']:10.2f}/{und['baseline']:<10.2f} {_signed(und)} "
                   f"{_num(tpr['candidate']):>9}/{_num(tpr['baseline']):<10} {_signed(tpr)}  "
                   f"{'yes' if r['within_noise'] else 'NO'}")
    if not all(r["within_noise"] for r in rows):
        sys.exit(1)


def _signed(metric: dict) -> str:
    return f"{metric['difference']:+.2f} ± {metric['se']:.2f}".rjust(15)


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


@mini.command("noise")
@click.option("--n", type=click.IntRange(min=2), default=100, show_default=True, help="Clean validation scenes.")
@click.option("--k", type=click.IntRange(min=2), default=4, show_default=True, help="Regeneration seeds per scene.")
@click.option("--seed", type=int, default=0, show_default=True, help="Picks the scenes.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Also write the JSON here.")
def mini_noise(n: int, k: int, seed: int, json_path: Path | None) -> None:
    """How much of the clean-score spread is regeneration noise (which seed drew the picture),
    and what averaging several regenerations would buy in clean-score spread."""
    from streamdetect.mini.eval.regeneration_noise import regeneration_noise

    result = regeneration_noise(n, k, seed, log=_log)
    if json_path:
        json_path.write_text(json.dumps(result, indent=2))
    click.echo(json.dumps(result, indent=2))


@mini.command("scenes")
@click.option("--split", type=click.Choice(["train", "val", "test"]), default="val", show_default=True)
@click.option("--n", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--start", type=click.IntRange(min=0), default=0, show_default=True, help="First scene index.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for NNNN.png and captions.csv (file, caption).")
def mini_scenes(split: str, n: int, start: int, seed: int, out: Path) -> None:
    """Write clean domain scenes as PNGs, e.g. to calibrate on or to submit."""
    from streamdetect.mini.eval.show import write_scenes

    write_scenes(seed, split, n, start, out)
    click.echo(f"{n} {split} scenes in {out}")


@click.command("attack")
@click.option("--kind", type=click.Choice(ATTACKS), default="pgd", show_default=True)
@click.option("--eps", type=float, default=8.0, show_default=True, help="L-inf budget in 1/255 units.")
@click.option("--n", type=int, default=8, show_default=True, help="Test images to attack.")
@click.option("--steps", type=int, default=60, show_default=True, help="PGD iterations.")
@click.option("--against", type=click.Choice(["vanilla", "stochastic", "robust"]), default="vanilla", show_default=True,
              help="adaptive and easiest: the detector the attack optimises against (stochastic: EoT; robust: "
                   "MirrorCheck and caption agreement on the robust encoders); its scores are the ones shown.")
@click.option("--targets", type=click.Choice(list(TARGET_SETS)), default="one", show_default=True,
              help="Which attributes a targeted attack's wrong caption changes.")
@click.option("--seed", type=int, default=0, show_default=True, help="Picks the test images and the targets.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for grid.png (input | regeneration | attacked | regeneration, a row per image), "
                   "clean/ and attacked/ PNGs, and results.json.")
@click.option("--weights", type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="Weights folder written by `mini train --out` (default: the shipped weights).")
def attack(kind: str, eps: float, n: int, steps: int, against: str, targets: str, seed: int, out: Path,
           weights: Path | None) -> None:
    """Attack the mini captioner (toward a chosen wrong caption, the easiest one, or anywhere);
    show what MirrorCheck sees."""
    from streamdetect.mini.eval.show import run_attack
    from streamdetect.models.profiles import MINI_WEIGHTS

    summary = run_attack(kind, eps, n, steps, against, targets, seed, out, weights or MINI_WEIGHTS)
    click.echo(json.dumps(summary, indent=2))
