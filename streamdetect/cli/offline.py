"""`streamdetect eval`, `calibrate` and `rescore`: offline commands. They need no broker, except
when told to read a topic (`calibrate --labels topic`, `rescore --from-topic`): the topic is read
here, and the records handed to the offline layer, which knows no Kafka."""

from __future__ import annotations

import asyncio
import json
import sys
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Iterator

import click

from streamdetect.cli.context import settings_from_context, warn_if_tiny
from streamdetect.cli.options import MODEL_SETTINGS, setting_options
from streamdetect.cli.stream import TIME_FORMATS, require_topic, utc
from streamdetect.settings import ConfigError, Settings

PATH_DIR = click.Path(exists=True, file_okay=False, path_type=Path)
PATH_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.command("eval")
@click.option("--clean-dir", type=PATH_DIR, help="Folder of clean input images.")
@click.option("--adv-dir", type=PATH_DIR, help="Folder of adversarial input images.")
@click.option("--clean-generated-dir", type=PATH_DIR, help="Precomputed regenerations of the clean images.")
@click.option("--adv-generated-dir", type=PATH_DIR, help="Precomputed regenerations of the adversarial images.")
@click.option("--pairing", type=click.Choice(["name", "index"]), default="name", show_default=True,
              help="Pair inputs with regenerations by file name (or stem), or by sorted index.")
@click.option("--recursive", is_flag=True, help="Search the folders recursively.")
@click.option("--mapping-csv", type=PATH_FILE,
              help="CSV instead of folders: columns input, label (0/clean, 1/adversarial), optional generated "
                   "and caption (the victim VLM's output).")
@click.option("--mapping-root", type=PATH_DIR, help="Root of relative paths in the CSV (default: its folder).")
@click.option("--max-samples", type=click.IntRange(min=1), help="At most this many clean and this many adversarial.")
@click.option("--threshold", "threshold_value", default="auto", show_default=True,
              help="auto (fit by --threshold-mode on this data), config (the worker's threshold or "
                   "threshold file), or a number.")
@click.option("--threshold-mode", type=click.Choice(["equal_tpr_tnr", "youden", "target_fpr"]),
              default="equal_tpr_tnr", show_default=True, help="How --threshold auto is fitted.")
@click.option("--target-fpr", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.01,
              show_default=True, help="For --threshold-mode target_fpr (fitted on the clean scores only).")
@click.option("--draw-seed", type=click.IntRange(0, 2**53 - 1),
              help="Stochastic mode: one draw for every image (the reference's config sampling); "
                   "default: a draw per image, seeded from --seed and its name.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Output folder: scores.csv, summary.json, summary.csv, roc.png, report.html, regenerated/.")
@click.option("--report-samples", type=click.IntRange(min=1), default=6, show_default=True,
              help="Sample pairs per label in report.html.")
@click.option("--quiet", is_flag=True, help="No progress bar or summary on the terminal.")
@setting_options(*MODEL_SETTINGS)
@click.pass_context
def eval_command(ctx: click.Context, clean_dir: Path | None, adv_dir: Path | None, clean_generated_dir: Path | None,
                 adv_generated_dir: Path | None, pairing: str, recursive: bool, mapping_csv: Path | None,
                 mapping_root: Path | None, max_samples: int | None, threshold_value: str, threshold_mode: str,
                 target_fpr: float, draw_seed: int | None, out_dir: Path, report_samples: int, quiet: bool,
                 **overrides: Any) -> None:
    """Evaluate MirrorCheck on labelled clean and adversarial images: AUROC, accuracy, TPR, FPR,
    precision, confusion counts and TPR at 1% FPR, with an ROC plot and an HTML report.

    \b
    streamdetect eval --clean-dir clean/ --adv-dir adv/ --out results/
    streamdetect eval --clean-dir c/ --clean-generated-dir c_gen/ --adv-dir a/ --adv-generated-dir a_gen/ \\
        --pairing index --out results/
    streamdetect eval --mapping-csv pairs.csv --mode stochastic -k 3 --noise-scale 5e-4 --out results/
    """
    from streamdetect.offline import evaluate, scoring
    from streamdetect.offline import items as items_lib

    settings = settings_from_context(ctx, **overrides)
    warn_if_tiny(settings)
    try:
        if mapping_csv is not None:
            if clean_dir or adv_dir or clean_generated_dir or adv_generated_dir:
                raise click.UsageError("give either --mapping-csv or folders, not both")
            items, unpaired = items_lib.collect_csv(mapping_csv, mapping_root), []
        elif clean_dir and adv_dir:
            items, unpaired = items_lib.collect_folders(clean_dir, adv_dir, clean_generated_dir, adv_generated_dir,
                                                       pairing, recursive)
        else:
            raise click.UsageError("give --clean-dir and --adv-dir (folders), or --mapping-csv")
        if unpaired and not quiet:
            click.echo(f"warning: {len(unpaired)} inputs have no regeneration to pair with and are left out, "
                       f"e.g. {', '.join(unpaired[:3])}", err=True)
        items = items_lib.limit_per_class(items, max_samples)
        choice = evaluate.ThresholdChoice(threshold_value, threshold_mode, target_fpr)
        options = scoring.RunOptions(seed=settings.seed, draw_seed=draw_seed, batch=settings.max_batch)
        result = evaluate.run_eval(settings, items, choice, out_dir, options, unpaired, quiet, report_samples)
    except (ValueError, ConfigError) as exc:
        raise click.ClickException(str(exc)) from exc
    if not quiet:
        s = result.summary
        auroc = "n/a" if s["auroc"] is None else f"{s['auroc']:.4f}"
        click.echo(f"{s['n_clean']} clean, {s['n_adversarial']} adversarial: AUROC {auroc}, "
                   f"accuracy {s['accuracy']:.4f}, TPR {s['tpr']:.4f}, FPR {s['fpr']:.4f} at threshold "
                   f"{s['threshold']:.6f} ({s['threshold_mode']}); outputs in {out_dir}")


@click.command("calibrate")
@click.option("--audit", "audit_path", type=click.Path(dir_okay=False, allow_dash=True),
              help="Audit log as JSON lines (`streamdetect replay > audit.jsonl`), or - for stdin.")
@click.option("--clean-dir", type=PATH_DIR, help="Or: a folder of clean images to run through the detector.")
@click.option("--labels", "labels_from", metavar="FILE|topic",
              help="Moderators' labels, as JSON lines (`streamdetect replay --topic labels > labels.jsonl`, - for "
                   "stdin; a file named topic as ./topic) or `topic` to read the labels topic. With --audit, "
                   "confirmed uploads leave the clean set and dismissed ones the audit lacks join it (when judged "
                   "with this configuration); alone, the dismissed labels' scores are the clean set. The latest "
                   "label of an upload counts.")
@click.option("--recursive", is_flag=True, help="Search --clean-dir recursively.")
@click.option("--max-samples", type=click.IntRange(min=1), help="Use at most this many images from --clean-dir.")
@click.option("--target-fpr", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.01,
              show_default=True, help="False-positive rate wanted on clean traffic.")
@click.option("--confidence", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.95,
              show_default=True, help="Level of the reported interval of the achieved FPR.")
@click.option("--threshold-file", help="Where to write the fit (default: the threshold_file setting, which "
                                       "the worker reads).")
@click.option("--json", "as_json", is_flag=True, help="Print the written record as JSON.")
@setting_options(*MODEL_SETTINGS, "cascade", "cascade_vocabulary", "cascade_exit_share")
@click.pass_context
def calibrate_command(ctx: click.Context, audit_path: str | None, clean_dir: Path | None, labels_from: str | None,
                      recursive: bool, max_samples: int | None, target_fpr: float, confidence: float,
                      threshold_file: str | None, as_json: bool, **overrides: Any) -> None:
    """Fit the threshold for a target false-positive rate from clean traffic only, and write it
    where the worker reads it (threshold_file). Reports how many samples were used and the
    confidence interval of the FPR the threshold will have on new clean traffic. Moderators'
    labels (--labels) take uploads confirmed as attacks out of the clean set and count
    dismissed false positives in; the report says how many of each. With --cascade agreement or
    margin it also fits the cascade's exit threshold, on the clean samples' first-stage scores, for the
    budget --cascade-exit-share (the share of clean uploads that may skip regeneration).

    \b
    streamdetect replay --since 2026-11-01 > audit.jsonl
    streamdetect calibrate --profile standard --audit audit.jsonl --target-fpr 0.01 --threshold-file /etc/sd/threshold.json
    streamdetect calibrate --profile mini --clean-dir clean/ --threshold-file threshold.json
    streamdetect calibrate --audit audit.jsonl --labels topic --threshold-file threshold.json
    """
    from streamdetect.app.detector_config import cascade_swaps, fingerprint
    from streamdetect.detector.threshold_file import describe, fit_record, write_record
    from streamdetect.offline.calibrate import audit_source, read_audit_file

    settings = settings_from_context(ctx, **overrides)
    warn_if_tiny(settings)
    target = threshold_file or settings.threshold_file
    if not target:
        raise click.UsageError("say where to write the threshold: --threshold-file or the threshold_file "
                               "setting (STREAMDETECT_THRESHOLD_FILE), which the worker reads")
    _check_calibrate_sources(audit_path, clean_dir, labels_from)
    cascade = settings.cascade != "off"
    if cascade and labels_from is not None:
        raise click.UsageError("the cascade's exit threshold is fitted from --audit or --clean-dir without --labels "
                               "(labels carry no caption agreement yet)")
    try:
        fp = fingerprint(settings)
        swaps = cascade_swaps(settings)
        vocabulary = None if swaps is None else swaps.fingerprint()
        agreements: dict[str, float] = {}
        if labels_from is not None:
            scores, source = _labelled(settings, audit_path, labels_from, fp)
        elif audit_path is not None:
            found = read_audit_file(audit_path, fp)
            scores, source, by_upload, agreements = found.scores, audit_source(audit_path, found), found.by_upload, \
                found.agreements
            wanted = settings.cascade if vocabulary is None else f"swap:{vocabulary}"
            if cascade and found.first_stage_kinds - {wanted}:
                raise click.ClickException(
                    f"the audit log's verdicts recorded the first stage {', '.join(sorted(found.first_stage_kinds))}, "
                    f"not {wanted}: fit --cascade {settings.cascade} on a clean folder (--clean-dir), or on "
                    f"an audit log of a worker run with it (and, for swap, the same vocabulary)")
        else:
            agreed: list[float | None] | None = [] if cascade else None
            scores, source = _clean_folder(settings, clean_dir, recursive, max_samples, agreed)  # type: ignore[arg-type]
            by_upload = {str(i): s for i, s in enumerate(scores)}
            agreements = {str(i): a for i, a in enumerate(agreed or []) if a is not None}
        section = None
        if cascade:
            scores, section, source = _cascade_fit(by_upload, agreements, settings.cascade_exit_share, source,
                                                   settings.cascade, vocabulary)
        if not scores:
            raise click.ClickException(f"no clean scores to fit on ({source})")
        record = fit_record(scores, target_fpr, confidence, fp, source)
        if section is not None:
            record["cascade"] = section
        write_record(Path(target), record)
    except (ValueError, ConfigError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(record, indent=2, sort_keys=True) if as_json else f"{describe(record)}\nwrote {target}")


def _cascade_fit(mirrorcheck: dict[str, float], agreements: dict[str, float], exit_share: float,
                 source: str, mode: str, vocabulary: str | None) -> tuple[list[float], dict[str, Any], str]:
    """The exit threshold for the budget, and the cascade's scores that the MirrorCheck threshold
    is then fitted on (so the target FPR is the whole cascade's)."""
    from streamdetect.detector.threshold_file import cascade_record
    from streamdetect.offline.calibrate import cascade_scores

    if not agreements:
        raise click.ClickException(f"no caption agreement to fit the cascade on ({source}): an audit log needs "
                                   "verdicts from a worker with the cascade on")
    section = cascade_record(list(agreements.values()), exit_share, mode, vocabulary)
    scores, missing = cascade_scores(mirrorcheck, agreements, section["exit_threshold"])
    note = f"; cascade: {len(agreements)} agreements, {missing} without a MirrorCheck score left out" \
        if missing else f"; cascade: {len(agreements)} agreements"
    return scores, section, source + note


def _check_calibrate_sources(audit_path: str | None, clean_dir: Path | None, labels_from: str | None) -> None:
    if labels_from is not None and clean_dir is not None:
        raise click.UsageError("--labels corrects an audit log or stands alone; it does not go with --clean-dir "
                               "(folder images have no upload ids to label)")
    if labels_from is None and (audit_path is None) == (clean_dir is None):
        raise click.UsageError("give exactly one of --audit or --clean-dir (or --labels, alone or with --audit)")
    if audit_path == "-" and labels_from == "-":
        raise click.UsageError("--audit and --labels cannot both read stdin")


def _labelled(settings: Settings, audit_path: str | None, labels_from: str,
              fp: dict[str, Any]) -> tuple[list[float], str]:
    """Clean scores with the labels applied; the labels topic is read here (no Kafka below cli).
    A file named ``topic`` is given as ``./topic``."""
    from streamdetect.offline.calibrate import labelled_scores

    if labels_from == "topic":
        return labelled_scores(audit_path, topic_events(settings, "labels"), f"topic {settings.topic('labels')}", fp)
    with _lines(labels_from) as lines:
        return labelled_scores(audit_path, lines, labels_from, fp)


def _clean_folder(settings: Any, folder: Path, recursive: bool, max_samples: int | None,
                  agreements: list[float | None] | None = None) -> tuple[list[float], str]:
    from tqdm import tqdm

    from streamdetect.offline.calibrate import clean_folder_scores

    with tqdm(desc="calibrate", unit="img", file=sys.stderr) as bar:
        return clean_folder_scores(settings, folder, recursive, max_samples, bar.update, agreements)


# rescore fetches inputs like the worker does (evidence stores, s3://, https://, file://); the
# regeneration seed and batch size are not among its settings: each record brings its seed.
RESCORE_SETTINGS = (*(n for n in MODEL_SETTINGS if n not in ("seed", "max_batch")), "allow_file", "file_root", "allow_http", "allow_private_hosts",
                    "fetch_timeout_s", "s3_endpoint", "s3_region")


@click.command("rescore")
@click.argument("audit_file", metavar="[FILE]", required=False,
                type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@click.option("--from-topic", is_flag=True, help="Read the audit topic (up to its current end) instead of FILE.")
@click.option("--since", type=click.DateTime(formats=TIME_FORMATS),
              help="With --from-topic: only verdicts written at or after this time (UTC unless a zone is given).")
@click.option("--until", type=click.DateTime(formats=TIME_FORMATS),
              help="With --from-topic: only verdicts written before this time.")
@click.option("--tolerance", type=click.FloatRange(min=0), default=1e-4, show_default=True,
              help="Largest difference, in the score and in each encoder's score, that still matches.")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per record on stdout (the summary goes to stderr).")
@setting_options(*RESCORE_SETTINGS)
@click.pass_context
def rescore_command(ctx: click.Context, audit_file: str | None, from_topic: bool, since: datetime | None,
                    until: datetime | None, tolerance: float, as_json: bool, **overrides: Any) -> None:
    """Re-score audit verdicts with the seeds and draws they recorded and check each comes back to
    its score: the recorded caption is regenerated with the recorded generator and seed, and
    scored with the recorded encoders under the recorded perturbation. The models must be in the
    configured profile (or zoo). The input is read from the verdict's evidence store (--s3-endpoint
    for S3) or, failing that, fetched from its image reference under the usual image policy.

    Prints, per record, the recorded and recomputed score, their difference, whether they match,
    and the recorded and recomputed regeneration hash when the evidence has one (a batched
    regeneration may differ by a pixel, so a different hash alone does not fail a record). Exits
    1 when any record did not match or could not be re-scored (no input image, models not
    loaded, a schema v1 verdict of an inline upload); the summary line names them.

    \b
    streamdetect replay --since 2026-11-01 > audit.jsonl && streamdetect rescore audit.jsonl
    streamdetect rescore --from-topic --since 2026-11-01T08:00:00 --profile mini --json
    """
    from streamdetect.offline.rescore import Rescorer, Summary, records_from_lines

    if from_topic == (audit_file is not None):
        raise click.UsageError("give FILE (or - for stdin), or --from-topic")
    if not from_topic and (since or until):
        raise click.UsageError("--since and --until select from the topic: use them with --from-topic")
    settings = settings_from_context(ctx, **overrides)
    warn_if_tiny(settings)
    records = topic_events(settings, "audit", since, until) if from_topic else None
    try:
        rescorer = Rescorer.from_settings(settings, tolerance)
    except (ValueError, ConfigError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    summary = Summary()
    with _lines(audit_file) as lines:
        for record in records if records is not None else records_from_lines(lines):
            result = rescorer.rescore(record)
            summary.results.append(result)
            click.echo(json.dumps(result.as_dict(), sort_keys=True) if as_json else result.line())
    click.echo(summary.line(), err=as_json)
    if summary.failed:
        ctx.exit(1)


def topic_events(settings: Settings, which: str, since: datetime | None = None,
                 until: datetime | None = None) -> list[dict[str, Any]]:
    """Every event of one of the project's topics, up to its current end (read here: the offline
    layer knows no Kafka)."""
    from streamdetect.stream.clients import replay

    require_topic(settings, which)

    async def collect() -> list[dict[str, Any]]:
        return [event async for event in replay(settings.bootstrap, settings.topic(which), utc(since), utc(until))]

    try:
        return asyncio.run(collect())
    except LookupError as exc:
        raise click.ClickException(str(exc)) from exc


@contextmanager
def _lines(path: str | None) -> Iterator[Iterable[str]]:
    """The lines of a file, of stdin for ``-``, or none for no file (a topic is read instead)."""
    if path is None:
        yield iter(())
    elif path == "-":
        yield sys.stdin
    else:
        try:
            f = open(path)
        except OSError as exc:
            raise click.FileError(path, exc.strerror) from exc
        with f:
            yield f
