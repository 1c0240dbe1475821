"""The ``streamdetect`` command. Thin: it reads settings once and wires the parts together."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import click

from streamdetect.cli.context import settings_from_context

from streamdetect.settings import ConfigError

KAFKA_HELP = "Kafka bootstrap servers, host:port[,...] (env KAFKA_BOOTSTRAP or STREAMDETECT_BOOTSTRAP; default 127.0.0.1:19092)."


_settings = settings_from_context


class _Group(click.Group):
    """Turns an unreachable broker into one clear line instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        from aiokafka.errors import KafkaConnectionError

        try:
            return super().invoke(ctx)
        except KafkaConnectionError as exc:
            raise click.ClickException(
                f"cannot reach Kafka ({exc}). Is the broker running? Start the local one with "
                "`deploy/kafka/kafka.sh start`, or point --bootstrap / KAFKA_BOOTSTRAP at yours."
            ) from exc


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="TOML file of settings (same names as the flags, with underscores). Flags and "
                   "STREAMDETECT_* environment variables override it.")
@click.option("--bootstrap", help=KAFKA_HELP)
@click.option("--topic-prefix", help="Prefix for the topic names uploads, alerts, audit, dlq (default none).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), help="Default info.")
@click.option("--log-json/--log-text", default=None, help="Logs as JSON lines (for collectors) or text (default).")
@click.pass_context
def main(ctx: click.Context, config_file: Path | None, **overrides: Any) -> None:
    """Catch adversarial images aimed at vision-language models, in real time (MirrorCheck on Kafka).

    \b
    Typical use:
      streamdetect topics apply               create the topics (idempotent)
      streamdetect worker                     judge uploads as they arrive
      streamdetect submit cat.png s3://b/k    publish uploads
      streamdetect alerts                     follow flagged uploads
      streamdetect replay --since 2026-11-01  read the audit log as JSON lines

    Every setting can also come from STREAMDETECT_<NAME> (e.g. STREAMDETECT_THRESHOLD=0.6) or a
    --config file; flags win over the environment, which wins over the file.
    """
    ctx.obj = {"config": config_file, "overrides": overrides}


@main.command()
@click.option("--profile", help="Model profile: mini (trained, shipped), tiny (random weights, plumbing), "
                                    "paper, standard. Default tiny.")
@click.option("--model-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Folder holding local model weights (default ~/.cache/streamdetect/models).")
@click.option("--device", help="cpu (default) or cuda[:N].")
@click.option("--dtype", type=click.Choice(["fp32", "fp16", "bf16"]), help="Model precision (default fp32).")
@click.option("--threshold", type=float, help="Flag when the mean cosine similarity is below this (default 0.5).")
@click.option("--group", "group_id", help="Consumer group; workers sharing it share the partitions.")
@click.option("--max-batch", type=int, help="Most items per batched model call (default 8).")
@click.option("--max-wait-ms", type=float, help="Longest wait for a batch to fill after its first item (default 20).")
@click.option("--max-in-flight", type=int, help="Most uploads open at once before consumption pauses (default 64).")
@click.option("--allow-file/--no-allow-file", default=None, help="Accept file:// references (default: refused).")
@click.option("--allow-http/--no-allow-http", default=None, help="Accept plain http:// references (default: https only).")
@click.option("--allow-private-hosts/--no-allow-private-hosts", default=None,
              help="Fetch http(s) references from loopback, private and link-local addresses "
                   "(default: refused, an SSRF guard).")
@click.option("--s3-endpoint", help="S3-compatible endpoint URL for s3:// references (e.g. MinIO); default AWS.")
@click.option("--mode", type=click.Choice(["vanilla", "stochastic"]),
              help="vanilla: the profile's ensemble; stochastic: per upload a drawn generator, k drawn "
                   "encoders and one-time weight noise (default vanilla).")
@click.option("--encoders-per-request", "-k", type=int, help="Stochastic mode: encoders drawn per upload (0 = all).")
@click.option("--noise-scale", type=float, help="Stochastic mode: std of the one-time weight noise (default 5e-4).")
@click.option("--threshold-file", type=click.Path(dir_okay=False),
              help="Threshold fitted by `streamdetect calibrate`; replaces --threshold.")
@click.pass_context
def worker(ctx: click.Context, **overrides: Any) -> None:
    """Consume uploads, judge each with MirrorCheck, publish verdicts to audit (and alerts when
    flagged) and anything that cannot be judged to dlq. Runs until SIGINT or SIGTERM.

    Offsets are committed only after an upload's verdict or dead letter is on the broker, so a
    crash re-judges at most the uploads that were in flight (at-least-once, keyed by upload_id).
    """
    settings = _settings(ctx, **overrides)
    from streamdetect.stream.worker import MissingTopics, check_topics, run_worker
    from streamdetect.app.wiring import build_handler

    try:
        asyncio.run(check_topics(settings))  # before loading models: fail in a second, not a minute
        handler = build_handler(settings)
    except (MissingTopics, ConfigError) as exc:
        raise click.ClickException(str(exc)) from exc
    except (ValueError, OSError) as exc:  # a model that cannot load: missing files, no CUDA, bad spec
        raise click.ClickException(f"could not load the {settings.profile} models: {exc}") from exc
    run_worker(settings, handler)


@main.command()
@click.argument("targets", nargs=-1, required=True)
@click.option("--caption", help="The platform's own VLM caption for these images; skips the caption stage.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per upload instead of text.")
@click.pass_context
def submit(ctx: click.Context, targets: tuple[str, ...], caption: str | None, as_json: bool) -> None:
    """Publish one upload per TARGET: a local image file (sent inline) or a reference
    (s3://bucket/key, https://..., data:image/...;base64,..., file:///... if the worker allows it).
    Prints each upload id with where it landed."""
    settings = _settings(ctx)
    from streamdetect.stream.clients import submit as submit_uploads

    try:
        sent = asyncio.run(submit_uploads(settings.bootstrap, settings.topic("uploads"), list(targets), caption))
    except FileNotFoundError as exc:
        raise click.UsageError(str(exc)) from exc
    for s in sent:
        if as_json:
            click.echo(json.dumps({"upload_id": s.upload_id, "target": s.target, "partition": s.partition,
                                   "offset": s.offset}))
        else:
            click.echo(f"{s.upload_id}  {s.target[:80]}  -> partition {s.partition} offset {s.offset}")


@main.command()
@click.option("--from-beginning", is_flag=True, help="Start with the oldest alert kept, not the next new one.")
@click.option("--json", "as_json", is_flag=True, help="Print each alert as one JSON line.")
@click.option("--idle-timeout", type=float, help="Exit after this many seconds without an alert (default: follow forever).")
@click.pass_context
def alerts(ctx: click.Context, from_beginning: bool, as_json: bool, idle_timeout: float | None) -> None:
    """Follow the alert topic and print each flagged upload as it arrives (Ctrl-C to stop)."""
    settings = _settings(ctx)
    from streamdetect.stream.clients import follow

    async def run() -> None:
        async for alert in follow(settings.bootstrap, settings.topic("alerts"), from_beginning, idle_timeout):
            click.echo(json.dumps(alert, sort_keys=True) if as_json else format_verdict(alert))

    _run_until_interrupted(run())


@main.command()
@click.option("--since", type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S%z"]),
              help="Only verdicts written at or after this time (UTC unless a zone is given).")
@click.option("--until", type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S%z"]),
              help="Only verdicts written before this time.")
@click.option("--topic", "which", type=click.Choice(["audit", "alerts", "dlq"]), default="audit", show_default=True,
              help="Which log to read.")
@click.pass_context
def replay(ctx: click.Context, since: Any, until: Any, which: str) -> None:
    """Print the audit log (every verdict) as JSON lines, oldest first per partition, and exit at
    its current end. Verdicts are keyed by upload_id: a replayed upload may appear twice."""
    settings = _settings(ctx)
    from streamdetect.stream.clients import replay as replay_topic

    async def run() -> None:
        async for event in replay_topic(settings.bootstrap, settings.topic(which), _utc(since), _utc(until)):
            click.echo(json.dumps(event, sort_keys=True))

    _run_until_interrupted(run())


@main.group()
def topics() -> None:
    """Manage the project's topics (specs in topics/*.yaml)."""


@topics.command("apply")
@click.pass_context
def topics_apply(ctx: click.Context) -> None:
    """Create missing topics, raise partition counts and set configs to match topics/. Idempotent."""
    settings = _settings(ctx)
    from streamdetect.stream.admin import apply_topics
    from streamdetect.events.topic_specs import load_specs

    changes = asyncio.run(apply_topics(settings.bootstrap, load_specs(), settings.topic_prefix))
    for change in changes:
        click.echo(f"{change.topic:30} {change.action:14} {change.detail}")


@main.group()
def models() -> None:
    """Prepare and inspect model weights."""


@models.command("prepare")
@click.option("--profile", default="tiny", show_default=True,
              help="tiny builds random-weight models from configs into the model folder; for other "
                   "profiles it prints the model specs they load (weights come from the Hugging Face "
                   "cache or the shipped mini folder).")
@click.option("--model-dir", type=click.Path(file_okay=False, path_type=Path), help="Model folder.")
@click.pass_context
def models_prepare(ctx: click.Context, profile: str, model_dir: Path | None) -> None:
    """Make the models of a profile ready to load offline, and show what the profile loads."""
    settings = _settings(ctx, profile=profile, model_dir=model_dir)
    from streamdetect.app.wiring import prepare_models

    click.echo(prepare_models(settings))


@main.command()
@click.option("--timeout", type=float, default=300, show_default=True, help="Seconds to wait for every verdict.")
@click.option("--profile", type=click.Choice(["mini", "tiny", "paper", "standard"]), default="mini", show_default=True,
              help="mini: trained models, real attacks, a calibrated threshold. tiny: random weights, plumbing only.")
@click.pass_context
def demo(ctx: click.Context, timeout: float, profile: str) -> None:
    """Calibrate a threshold on clean scenes, attack a few, start a worker, submit clean, attacked
    and three bad uploads, print verdicts, dead letters and alerts as they arrive, stop the worker.
    Needs a broker (make demo starts one). Pictures and the threshold file stay in .run/demo/."""
    settings = _settings(ctx, profile=profile)
    from streamdetect.demo.run import run_demo

    sys.exit(asyncio.run(run_demo(settings, timeout)))


def format_verdict(event: dict) -> str:
    mark = "FLAGGED" if event.get("flagged") else "ok     "
    return (f"{mark} {event.get('upload_id')}  score={event.get('score', float('nan')):.3f} "
            f"threshold={event.get('threshold')}  caption[{event.get('caption_source')}]={event.get('caption')!r}")


def _utc(moment: Any) -> Any:
    from datetime import timezone

    return None if moment is None else (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc))


def _run_until_interrupted(coro: Any) -> None:
    try:
        asyncio.run(coro)
    except KeyboardInterrupt:
        pass
    except LookupError as exc:
        raise click.ClickException(str(exc)) from exc


from streamdetect.bench.run import bench  # noqa: E402 - registered after main is defined

main.add_command(bench)

from streamdetect.cli.offline import calibrate_command, eval_command  # noqa: E402

main.add_command(eval_command)
main.add_command(calibrate_command)

from streamdetect.cli.mini import attack as mini_attack, mini  # noqa: E402

main.add_command(mini)
main.add_command(mini_attack)

if __name__ == "__main__":
    main()
