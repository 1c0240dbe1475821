"""Settings: file < environment < flags, one reader (pydantic-settings), and a bad or misspelt
value names itself, where it came from and the close match."""

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from streamdetect.cli.main import main
from streamdetect.cli.options import help_text
from streamdetect.settings import ConfigError, Settings


def test_precedence_file_env_flags(tmp_path: Path) -> None:
    config = tmp_path / "sd.toml"
    config.write_text('threshold = 0.3\nprofile = "paper"\nmax_batch = 2\n')
    env = {"STREAMDETECT_THRESHOLD": "0.4", "STREAMDETECT_MAX_BATCH": "6"}
    settings = Settings.load(config, env, {"threshold": 0.45, "profile": None})
    assert settings.threshold == 0.45  # flag wins
    assert settings.max_batch == 6  # env beats file
    assert settings.profile == "paper"  # file beats default; a None flag is not given


def test_kafka_bootstrap_env_is_honoured() -> None:
    assert Settings.load(None, {"KAFKA_BOOTSTRAP": "10.0.0.1:9092"}).bootstrap == "10.0.0.1:9092"
    both = {"KAFKA_BOOTSTRAP": "10.0.0.1:9092", "STREAMDETECT_BOOTSTRAP": "10.0.0.2:9092"}
    assert Settings.load(None, both).bootstrap == "10.0.0.2:9092"  # the project's own name wins


@pytest.mark.parametrize("env, message", [
    ({"STREAMDETECT_THRESHOLD": "high"}, "threshold='high' (from STREAMDETECT_THRESHOLD)"),
    ({"STREAMDETECT_THRESHOLD": "3"}, "threshold='3'"),
    ({"STREAMDETECT_THRESHOLD": "nan"}, "threshold='nan'"),
    ({"STREAMDETECT_MAX_BATCH": "0"}, "max_batch='0'"),
    ({"STREAMDETECT_ALLOW_FILE": "perhaps"}, "allow_file='perhaps'"),
    ({"STREAMDETECT_DTYPE": "fp8"}, "dtype='fp8'"),
    ({"STREAMDETECT_DEVICE": "cuda:x"}, "device='cuda:x'"),
    ({"STREAMDETECT_BOOTSTRAP": "no-port"}, "bootstrap='no-port'"),
])
def test_bad_values_are_named(env: dict, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.load(None, env)
    assert message in str(caught.value)


def test_a_misspelt_environment_variable_is_an_error_with_the_close_match() -> None:
    with pytest.raises(ConfigError, match="STREAMDETECT_MAX_INFLIGHT is not a setting; did you mean "
                                          "STREAMDETECT_MAX_IN_FLIGHT"):
        Settings.load(None, {"STREAMDETECT_MAX_INFLIGHT": "2"})
    assert Settings.load(None, {"STREAMDETECT_CACHE": "/tmp/x"}).max_in_flight == 64  # read by make, not a setting


def test_unknown_file_setting_is_an_error_with_the_close_match(tmp_path: Path) -> None:
    config = tmp_path / "sd.toml"
    config.write_text("threshhold = 0.3\n")
    with pytest.raises(ConfigError, match="unknown setting 'threshhold'; did you mean threshold"):
        Settings.load(config, {})


@pytest.mark.parametrize("line, message", [
    ("max_batch = 8.5", "max_batch=8.5 (from "),
    ("max_batch = true", "max_batch=True"),
    ('device = "cuda:x"', "device='cuda:x'"),
    ("metrics_port = 70000", "metrics_port=70000"),
])
def test_bad_file_types_are_named(tmp_path: Path, line: str, message: str) -> None:
    config = tmp_path / "sd.toml"
    config.write_text(line + "\n")
    with pytest.raises(ConfigError) as caught:
        Settings.load(config, {})
    assert message in str(caught.value)


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(Exception):
        settings.max_batch = 3  # type: ignore[misc]


def test_topic_names_take_the_prefix() -> None:
    assert Settings(topic_prefix="staging-").topic("alerts") == "staging-alerts"


def test_the_default_profile_means_something_and_given_values_are_known() -> None:
    settings = Settings.load(None, {"STREAMDETECT_THRESHOLD": "0.4"})
    assert Settings().profile == "mini"
    assert settings.given("threshold") and not settings.given("max_batch")


def _commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    out: list[tuple[str, click.Command]] = [(prefix or "streamdetect", group)]
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            out += _commands(command, f"{prefix} {name}".strip())
        else:
            out.append((f"{prefix} {name}".strip(), command))
    return out


# Flags that share a setting's name but mean something else: the mini commands do not read
# Settings (their --seed picks scenes and targets), and calibrate's --threshold-file is where to write.
OWN_MEANING = {("calibrate", "threshold_file"), ("mini train", "seed"), ("mini eval", "seed"),
               ("mini scenes", "seed"), ("mini noise", "seed"), ("attack", "seed")}


def test_every_flag_named_after_a_setting_is_generated_from_it() -> None:
    """One flag, one default, one help text: written once, in settings.py."""
    checked = 0
    for where, command in _commands(main):
        for param in command.params:
            if param.name in Settings.model_fields and (where, param.name) not in OWN_MEANING:
                assert param.help == help_text(param.name), f"{where} --{param.name} is written by hand"
                assert param.default is None, f"{where} --{param.name} has a default of its own"
                checked += 1
    assert checked > 40


def test_help_shows_the_settings_default() -> None:
    result = CliRunner().invoke(main, ["worker", "--help"])
    text = " ".join(result.output.split())
    assert result.exit_code == 0
    assert "pauses. [default: 64]" in text and "[default: mini]" in text


def test_a_misspelt_variable_stops_a_command_with_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["models", "prepare", "--profile", "mini"], env={"STREAMDETECT_MAX_INFLIGHT": "2"})
    assert result.exit_code == 2 and "did you mean STREAMDETECT_MAX_IN_FLIGHT" in result.output


def test_a_repeating_library_error_is_let_through_once_per_window_with_a_count() -> None:
    import logging

    from streamdetect.logs import RepeatLimiter

    limiter = RepeatLimiter(window_s=60)

    def record(msg: str, level: int = logging.ERROR) -> logging.LogRecord:
        return logging.LogRecord("aiokafka", level, __file__, 1, msg, None, None)

    kept = [limiter.filter(record("Unable connect to node 1")) for _ in range(76)]
    assert kept.count(True) == 1  # 76 a second in an outage: one line
    assert limiter.filter(record("another error"))  # other messages are not held back
    assert all(limiter.filter(record("info", logging.INFO)) for _ in range(3))
    limiter.window_s = 0
    later = record("Unable connect to node 1")
    assert limiter.filter(later) and "75 more like it" in later.msg
