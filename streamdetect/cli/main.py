"""The root ``streamdetect`` group: global flags, and every command group registered on it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from streamdetect.cli.options import ROOT_SETTINGS, setting_options


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
@setting_options(*ROOT_SETTINGS)
@click.pass_context
def main(ctx: click.Context, config_file: Path | None, **overrides: Any) -> None:
    """Catch adversarial images aimed at vision-language models, in real time (MirrorCheck on Kafka).

    \b
    Typical use:
      streamdetect topics apply               create the topics (idempotent)
      streamdetect worker                     judge uploads as they arrive (mini profile)
      streamdetect submit cat.png s3://b/k    publish uploads
      streamdetect alerts                     follow flagged uploads
      streamdetect replay --since 2026-11-01  read the audit log as JSON lines

    Every setting can also come from STREAMDETECT_<NAME> (e.g. STREAMDETECT_THRESHOLD=0.6) or a
    --config file; flags win over the environment, which wins over the file. A misspelt name
    or a bad value stops the command with an error that names it.
    """
    ctx.obj = {"config": config_file, "overrides": overrides}


def _register() -> None:
    from streamdetect.cli.bench import bench, bench_recovery, bench_soak
    from streamdetect.cli.cascade import bench_cascade
    from streamdetect.cli.console import console
    from streamdetect.cli.demo import demo
    from streamdetect.cli.dlq import dlq
    from streamdetect.cli.mini import attack, mini
    from streamdetect.cli.models import models
    from streamdetect.cli.offline import calibrate_command, eval_command, rescore_command
    from streamdetect.cli.stream import alerts, replay, submit, worker
    from streamdetect.cli.topics import topics

    for command in (worker, submit, alerts, replay, console, dlq, topics, models, demo, bench, bench_recovery,
                    bench_soak, bench_cascade, eval_command, calibrate_command, rescore_command, mini, attack):
        main.add_command(command)


_register()

if __name__ == "__main__":
    main()
