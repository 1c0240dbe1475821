"""Settings: file < environment < flags, and a bad value names itself."""

from pathlib import Path

import pytest

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


@pytest.mark.parametrize("env, message", [
    ({"STREAMDETECT_THRESHOLD": "high"}, "threshold='high'"),
    ({"STREAMDETECT_THRESHOLD": "3"}, "threshold=3.0"),
    ({"STREAMDETECT_MAX_BATCH": "0"}, "max_batch=0"),
    ({"STREAMDETECT_ALLOW_FILE": "perhaps"}, "allow_file='perhaps'"),
    ({"STREAMDETECT_DTYPE": "fp8"}, "dtype='fp8'"),
])
def test_bad_values_are_named(env: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        Settings.load(None, env)


def test_unknown_file_setting_is_an_error(tmp_path: Path) -> None:
    config = tmp_path / "sd.toml"
    config.write_text("threshhold = 0.3\n")
    with pytest.raises(ConfigError, match="unknown settings \\['threshhold'\\]"):
        Settings.load(config, {})


def test_topic_names_take_the_prefix() -> None:
    assert Settings(topic_prefix="staging-").topic("alerts") == "staging-alerts"
