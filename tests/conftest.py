"""Shared test fixtures: servers the tests start themselves on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

# ---------------------------------------------------------------- S3 (moto server)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """An S3-compatible server (moto) on 127.0.0.1 for the whole session; yields its endpoint URL.

    Fake credentials are set for the session, and the shared AWS config files are pointed
    away so a developer's real ~/.aws profile can never be used by a test.
    """
    from moto.server import ThreadedMotoServer

    with pytest.MonkeyPatch.context() as mp:
        for name, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": "/nonexistent/aws-config",
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
            "AWS_EC2_METADATA_DISABLED": "true",
        }.items():
            mp.setenv(name, value)
        for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_SECURITY_TOKEN"):
            mp.delenv(name, raising=False)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            yield f"http://{host}:{port}"
        finally:
            server.stop()


# ---------------------------------------------------------------- Kafka (real Apache Kafka)


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real broker for the session, started and stopped by deploy/kafka/kafka.sh on free
    loopback ports (or the broker named by KAFKA_BOOTSTRAP, which is then left alone)."""
    from tests.kafka_support import Broker

    broker = Broker(tmp_path_factory.mktemp("kafka"))
    broker.start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


# ---------------------------------------------------------------- models


@pytest.fixture(scope="session")
def tiny_models() -> Path:
    """The tiny random-weight models, built once into the model cache (as `make setup` does)."""
    from streamdetect.settings import Settings
    from streamdetect.models import ensure_tiny_models

    model_dir = Settings.load(env={}).model_dir
    ensure_tiny_models(model_dir)
    return model_dir
