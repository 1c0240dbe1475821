"""Offline checks of what an operator deploys: docker-compose.yml (+ deploy/compose.gpu.yml),
deploy/Dockerfile and deploy/k8s/. No Docker engine or cluster runs here, so these tests check
the files against their schemas (the Compose specification, Kubernetes in strict mode, KEDA's
documented ScaledObject fields) and against the project itself: setting names and values,
topic names, the consumer group, ports, health paths and CLI commands."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from importlib.metadata import distribution
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from streamdetect.settings import ENV_PREFIX, OTHER_VARIABLES, Settings
from streamdetect.events.topic_specs import load_specs

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
GPU_OVERRIDE = ROOT / "deploy" / "compose.gpu.yml"
ENV_EXAMPLE = ROOT / "deploy" / "compose.env.example"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / "deploy" / "Dockerfile.dockerignore"
K8S = ROOT / "deploy" / "k8s"
# The newest Kubernetes release whose schemas kubernetes-validate (1.37.0, in the lock) ships.
K8S_VERSION = "1.37.0"
DEPLOY_TEXT_FILES = [COMPOSE, GPU_OVERRIDE, ENV_EXAMPLE, DOCKERFILE, *sorted(K8S.glob("*.yaml"))]


# ---------------------------------------------------------------- helpers


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _k8s_objects() -> list[tuple[Path, dict]]:
    """Every object of deploy/k8s, with its file; the kustomization is not a cluster object."""
    return [(path, doc) for path in sorted(K8S.glob("*.yaml")) if path.name != "kustomization.yaml"
            for doc in yaml.safe_load_all(path.read_text()) if doc]


def _k8s_one(kind: str) -> dict:
    found = [doc for _, doc in _k8s_objects() if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind} in {K8S}, found {len(found)}"
    return found[0]


def _environment(service: dict) -> dict[str, str]:
    """A compose service's environment, as a mapping, whichever of the two forms it uses."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


_INTERPOLATION = re.compile(r"\$\{([A-Za-z0-9_]+)(?:(:?[-?])([^}]*))?\}")


def _interpolate(value: str) -> str:
    """Resolve compose's ${VAR:-default} with its default and ${VAR:?error} (a required secret
    from .env) with a placeholder, as with an empty host environment."""
    def resolve(match: re.Match[str]) -> str:
        name, op, arg = match.groups()
        assert op is not None, f"${{{name}}} in the compose file has neither a default nor an error message"
        return arg if op.endswith("-") else f"<{name}>"

    return _INTERPOLATION.sub(resolve, value)


def _merge(base: Any, override: Any) -> Any:
    """Compose's merge of an override file for mappings: keys merge, scalars are replaced."""
    if isinstance(base, dict) and isinstance(override, dict):
        return {**base, **{k: _merge(base.get(k), v) for k, v in override.items()}}
    return override


def _services(gpu: bool = False) -> dict[str, dict]:
    services = _yaml(COMPOSE)["services"]
    return _merge(services, _yaml(GPU_OVERRIDE)["services"]) if gpu else services


def _resolved_env(service: dict) -> dict[str, str]:
    return {key: _interpolate(value) for key, value in _environment(service).items()}


def _project_env_names() -> set[str]:
    """STREAMDETECT_* names the project reads: one per Settings field, plus the few read directly
    from os.environ in streamdetect/ (found in the source, not listed by hand), and KAFKA_BOOTSTRAP."""
    names = {ENV_PREFIX + name.upper() for name in Settings.model_fields} | {"KAFKA_BOOTSTRAP"} | set(OTHER_VARIABLES)
    read_directly = re.compile(r"environ(?:\.get)?[(\[]\s*[\"'](STREAMDETECT_[A-Z0-9_]+)")
    for source in (ROOT / "streamdetect").rglob("*.py"):
        names |= set(read_directly.findall(source.read_text()))
    return names


def _unknown_env_names(text: str) -> set[str]:
    return set(re.findall(r"STREAMDETECT_[A-Z0-9_]+", text)) - _project_env_names()


def _seconds(duration: str) -> float:
    """A compose duration such as 120s, 2m or 1m30s."""
    parts = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", duration)
    assert parts and any(parts.groups()), f"unexpected compose duration {duration!r}"
    return int(parts[1] or 0) * 60 + int(parts[2] or 0)


def _cli_command_exists(argv: list[str]) -> bool:
    """Whether argv names a `streamdetect` command or subcommand (e.g. ["topics", "apply"])."""
    import click

    from streamdetect.cli.main import main

    command: click.Command = main
    for word in argv:
        if word.startswith("-"):
            break
        if not isinstance(command, click.Group) or word not in command.commands:
            return False
        command = command.commands[word]
    return command is not main


def _compose_schema_validator() -> jsonschema.protocols.Validator:
    # check-jsonschema vendors the Compose specification's schema. Its CLI cannot be imported with
    # the click pinned here (click.ParamType is not subscriptable in 8.3), and importing the
    # package runs that CLI import, so the file is located through the distribution instead.
    path = distribution("check-jsonschema").locate_file("check_jsonschema/builtin_schemas/vendor/compose-spec.json")
    schema = json.loads(Path(str(path)).read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def _errors(validator: jsonschema.protocols.Validator, document: Any) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in validator.iter_errors(document)]


# ---------------------------------------------------------------- names used anywhere in deploy files


@pytest.mark.parametrize("path", DEPLOY_TEXT_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_streamdetect_variable_in_deploy_files_is_a_project_setting(path: Path) -> None:
    unknown = _unknown_env_names(path.read_text())
    assert not unknown, f"{path.relative_to(ROOT)} names {sorted(unknown)}, which the project does not read"


def test_a_misspelt_setting_name_is_caught() -> None:
    assert _unknown_env_names("STREAMDETECT_MAX_INFLIGHT: 64\nSTREAMDETECT_MAX_IN_FLIGHT: 64") == {
        "STREAMDETECT_MAX_INFLIGHT"}


# ---------------------------------------------------------------- docker-compose.yml


@pytest.mark.parametrize("path", [COMPOSE, GPU_OVERRIDE], ids=lambda p: p.name)
def test_compose_file_matches_the_compose_specification(path: Path) -> None:
    errors = _errors(_compose_schema_validator(), _yaml(path))
    assert not errors, f"{path.name} breaks the Compose specification: {errors}"


def test_the_compose_schema_check_rejects_a_misspelt_key() -> None:
    document = _yaml(COMPOSE)
    document["services"]["worker"]["healthchek"] = document["services"]["worker"].pop("healthcheck")
    assert _errors(_compose_schema_validator(), document)


def test_compose_runs_the_stack_the_issue_asks_for() -> None:
    services = _services()
    assert services["kafka"]["image"] == f"apache/kafka:{_tested_kafka_version()}"
    assert services["minio"]["image"].startswith("minio/minio:RELEASE.")
    assert services["topics"]["command"] == ["topics", "apply"]
    assert services["worker"]["command"] == ["worker"]
    assert services["alerts"]["command"][0] == "alerts"
    for name in ("topics", "worker", "alerts"):
        assert _cli_command_exists(services[name]["command"]), f"{name}: {services[name]['command']}"


def _tested_kafka_version() -> str:
    pom = (ROOT / "deploy" / "kafka" / "pom.xml").read_text()
    match = re.search(r"<artifactId>kafka_2\.13</artifactId>\s*<version>([^<]+)</version>", pom)
    assert match, "deploy/kafka/pom.xml no longer pins org.apache.kafka:kafka_2.13"
    version = match[1]
    if version.startswith("${"):  # a Maven property, e.g. ${kafka.version}
        prop = re.search(rf"<{re.escape(version[2:-1])}>([^<]+)</", pom)
        assert prop, f"deploy/kafka/pom.xml uses {version} but does not define it"
        version = prop[1]
    return version


@pytest.mark.parametrize("gpu", [False, True], ids=["cpu", "gpu"])
def test_compose_depends_on_names_services_with_the_right_conditions(gpu: bool) -> None:
    services = _services(gpu)
    for name, service in services.items():
        for target, rule in (service.get("depends_on") or {}).items():
            assert target in services, f"{name} depends on {target!r}, which is not a service"
            condition = rule["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target} to be healthy; it has no healthcheck"
            else:
                assert condition == "service_completed_successfully", f"{name} -> {target}: {condition}"
                assert services[target].get("restart") == "no", f"{target} is waited on to finish but restarts"
    assert set(_yaml(GPU_OVERRIDE)["services"]) <= set(_yaml(COMPOSE)["services"])


def test_compose_workers_wait_for_topics_and_storage() -> None:
    services = _services()
    for name in ("worker", "alerts"):
        assert services[name]["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    assert services["worker"]["depends_on"]["minio-setup"]["condition"] == "service_completed_successfully"
    assert services["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"


def _listeners(value: str) -> dict[str, tuple[str, int]]:
    """KAFKA_LISTENERS-style text, NAME://host:port,... -> {NAME: (host, port)}."""
    out = {}
    for item in value.split(","):
        name, _, address = item.partition("://")
        host, _, port = address.rpartition(":")
        out[name] = (host, int(port))
    return out


def test_compose_kafka_bootstrap_is_the_kafka_service_listener() -> None:
    services = _services()
    kafka_env = _environment(services["kafka"])
    listening = _listeners(kafka_env["KAFKA_LISTENERS"])
    advertised = _listeners(kafka_env["KAFKA_ADVERTISED_LISTENERS"])
    in_network = {f"{host}:{port}" for name, (host, port) in advertised.items()
                  if host in ("kafka", services["kafka"].get("hostname")) and listening[name][1] == port}
    users = [name for name, service in services.items() if "KAFKA_BOOTSTRAP" in _environment(service)]
    assert {"topics", "worker", "alerts"} <= set(users)
    for name in users:
        bootstrap = _resolved_env(services[name])["KAFKA_BOOTSTRAP"]
        assert bootstrap in in_network, f"{name}: KAFKA_BOOTSTRAP={bootstrap} is not a kafka listener {in_network}"
        assert Settings.load(env={"KAFKA_BOOTSTRAP": bootstrap}).bootstrap == bootstrap


def test_compose_kafka_answers_the_host_on_the_default_bootstrap() -> None:
    kafka = _services()["kafka"]
    default_host, default_port = Settings().bootstrap.rsplit(":", 1)
    advertised = _listeners(_environment(kafka)["KAFKA_ADVERTISED_LISTENERS"])
    assert (default_host, int(default_port)) in advertised.values()
    assert f"{default_host}:{default_port}:{default_port}" in kafka["ports"]


@pytest.mark.parametrize("gpu", [False, True], ids=["cpu", "gpu"])
def test_compose_worker_environment_loads_as_valid_settings(gpu: bool) -> None:
    worker = _services(gpu)["worker"]
    settings = Settings.load(env=_resolved_env(worker))
    assert settings.group_id == Settings().group_id
    assert settings.metrics_host == "0.0.0.0"  # reachable from outside the container
    assert settings.device.startswith("cuda") if gpu else settings.device == "cpu"
    assert str(settings.metrics_port) in worker["expose"]
    assert f":{settings.metrics_port}/readyz" in " ".join(worker["healthcheck"]["test"])


def test_compose_gpu_override_reserves_a_gpu_and_builds_the_cuda_image() -> None:
    worker = _services(gpu=True)["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    assert f"python-{worker['build']['args']['VARIANT']}" in _stage_names()
    assert f"models-{worker['build']['args']['MODELS']}" in _stage_names()
    assert worker["build"]["dockerfile"] == "deploy/Dockerfile"


def test_compose_holds_no_secret_and_documents_every_required_variable() -> None:
    text = COMPOSE.read_text() + GPU_OVERRIDE.read_text()
    for name, service in _services(gpu=True).items():
        for key, value in _environment(service).items():
            if re.search(r"PASSWORD|SECRET|ACCESS_KEY", key):
                assert re.fullmatch(r"\$\{[A-Z0-9_]+:\?[^}]+\}", value), (
                    f"{name}.{key} must come from the environment with no default (${{NAME:?message}})")
    required = {m[0] for m in _INTERPOLATION.findall(text) if m[1] == ":?"}
    documented = set(re.findall(r"^#?\s*([A-Z0-9_]+)=", ENV_EXAMPLE.read_text(), flags=re.M))
    assert required and required <= documented, f"not in {ENV_EXAMPLE.name}: {sorted(required - documented)}"
    optional = {m[0] for m in _INTERPOLATION.findall(text) if m[1] == ":-"}
    assert optional <= documented, f"not in {ENV_EXAMPLE.name}: {sorted(optional - documented)}"


def test_compose_stop_grace_matches_the_kubernetes_drain_time() -> None:
    grace = _seconds(_services()["worker"]["stop_grace_period"])
    pod = _k8s_one("Deployment")["spec"]["template"]["spec"]
    assert grace == pod["terminationGracePeriodSeconds"] > 30  # Kubernetes' default is 30 s, Docker's 10 s


# ---------------------------------------------------------------- deploy/Dockerfile


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per logical line, continuations joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines
            if line and not line.startswith("#")]


def _stage_names() -> set[str]:
    return {args.split()[-1] for op, args in _instructions() if op == "FROM" and " AS " in args.upper()}


def _env_values() -> dict[str, str]:
    values: dict[str, str] = {}
    for op, args in _instructions():
        if op == "ENV":
            values.update(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=(\S+)", args))
    return values


def _image_uid() -> str:
    """The user the image runs as, with a build-arg default resolved (USER ${UID}:${UID})."""
    instructions = _instructions()
    args = dict(re.findall(r"^([A-Z_]+)=(\S+)$", "\n".join(a for op, a in instructions if op == "ARG"), flags=re.M))
    user = [a for op, a in instructions if op == "USER"][-1].split(":")[0]
    return re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], user)


def test_k8s_pods_run_as_the_image_user() -> None:
    for kind in ("Deployment", "Job"):
        context = _k8s_one(kind)["spec"]["template"]["spec"]["securityContext"]
        assert context["runAsNonRoot"] is True and str(context["runAsUser"]) == _image_uid()


def test_dockerfile_builds_cpu_and_cuda_variants_and_each_models_choice() -> None:
    stages = _stage_names()
    assert {"python-cpu", "python-cuda", "models-none", "models-local", "models-tiny"} <= stages
    froms = [args for op, args in _instructions() if op == "FROM"]
    assert any(f.startswith("python:3.11") for f in froms) and any(f.startswith("nvidia/cuda:") for f in froms)
    assert "FROM python-${VARIANT}" in DOCKERFILE.read_text() and "FROM models-${MODELS}" in DOCKERFILE.read_text()


def test_dockerfile_runs_streamdetect_offline_as_a_non_root_user() -> None:
    instructions = _instructions()
    assert int(_image_uid()) > 0
    assert [args for op, args in instructions if op == "ENTRYPOINT"][-1] == '["streamdetect"]'
    env = _env_values()
    assert env["HF_HUB_OFFLINE"] == "1"
    assert Settings.load(env={k: v for k, v in env.items() if k.startswith(ENV_PREFIX)}).model_dir == Path("/models")
    exposed = [args for op, args in instructions if op == "EXPOSE"]
    assert exposed == [str(Settings().metrics_port)]


def test_dockerfile_copies_what_exists_and_installs_the_lock() -> None:
    ignored = {line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and not line.startswith("#")}
    for op, args in _instructions():
        if op != "COPY" or "--from=" in args:
            continue
        sources = [word for word in args.split()[:-1] if not word.startswith("--")]
        for source in sources:
            if "$" in source:  # the MODELS_SRC folder, chosen at build time
                continue
            assert (ROOT / source).exists(), f"Dockerfile copies {source}, which is not in the repository"
            assert source.rstrip("/") not in ignored, f"{source} is copied but excluded by {DOCKERIGNORE.name}"
    runs = " ".join(args for op, args in _instructions() if op == "RUN")
    assert "pip install -r /tmp/requirements.lock" in runs and "pip install --no-deps /tmp/src" in runs


# ---------------------------------------------------------------- deploy/k8s


@pytest.mark.parametrize(
    "path,obj", [(p, o) for p, o in _k8s_objects() if o["kind"] != "ScaledObject"],
    ids=lambda v: v.name if isinstance(v, Path) else v["kind"])
def test_k8s_object_matches_the_kubernetes_schema_in_strict_mode(path: Path, obj: dict) -> None:
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_the_strict_kubernetes_check_rejects_a_misspelt_field() -> None:
    deployment = _k8s_one("Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_kustomization_applies_every_manifest() -> None:
    listed = set(_yaml(K8S / "kustomization.yaml")["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


# KEDA's ScaledObject is a custom resource, so the Kubernetes schemas do not cover it, and no KEDA
# CRD schema is available offline here. This schema is written from KEDA's documentation
# (keda.sh/docs/2.x: "ScaledObject specification" and the "Apache Kafka" scaler): it checks the
# apiVersion and kind, the mandatory scaleTargetRef.name and triggers, the types of the replica
# fields, and the kafka trigger's metadata, which KEDA reads as a map of strings.
KEDA_SCALED_OBJECT = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "required": ["scaleTargetRef", "triggers"],
            "additionalProperties": False,
            "properties": {
                "scaleTargetRef": {
                    "type": "object", "required": ["name"], "additionalProperties": False,
                    "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                                   "name": {"type": "string"}, "envSourceContainerName": {"type": "string"}},
                },
                **{key: {"type": "integer", "minimum": 0} for key in (
                    "pollingInterval", "cooldownPeriod", "initialCooldownPeriod", "idleReplicaCount",
                    "minReplicaCount", "maxReplicaCount")},
                "advanced": {"type": "object"},
                "fallback": {"type": "object"},
                "triggers": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/trigger"}},
            },
        },
    },
    "$defs": {
        "trigger": {
            "type": "object",
            "required": ["type", "metadata"],
            "properties": {
                "type": {"type": "string"},
                "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
            },
            "if": {"properties": {"type": {"const": "kafka"}}},
            "then": {"properties": {"metadata": {
                "required": ["bootstrapServers", "consumerGroup"],
                "additionalProperties": False,
                "properties": {key: {"type": "string"} for key in (
                    "bootstrapServers", "consumerGroup", "topic", "lagThreshold", "activationLagThreshold",
                    "offsetResetPolicy", "allowIdleConsumers", "scaleToZeroOnInvalidOffset",
                    "excludePersistentLag", "limitToPartitionsWithLag", "version", "partitionLimitation",
                    "sasl", "tls", "unsafeSsl")} | {
                    "offsetResetPolicy": {"enum": ["latest", "earliest"]},
                    "lagThreshold": {"type": "string", "pattern": "^[0-9]+$"},
                },
            }}},
        },
    },
}


def test_scaledobject_matches_kedas_documented_fields() -> None:
    validator = jsonschema.Draft202012Validator(KEDA_SCALED_OBJECT)
    scaled = _k8s_one("ScaledObject")
    assert not _errors(validator, scaled)
    scaled["spec"]["triggers"][0]["metadata"]["consumergroup"] = "typo"
    assert _errors(validator, scaled)


def _settings_configmap() -> dict[str, str]:
    return _k8s_one("ConfigMap")["data"]


def _pod() -> dict:
    return _k8s_one("Deployment")["spec"]["template"]


def _worker_container() -> dict:
    (container,) = _pod()["spec"]["containers"]
    return container


def test_k8s_settings_load_as_valid_settings() -> None:
    settings = Settings.load(env={**_settings_configmap(), "STREAMDETECT_WORKER_NAME": "pod-0"})
    assert settings.device.startswith("cuda") and settings.metrics_host == "0.0.0.0"
    assert settings.group_id == Settings().group_id
    assert settings.metrics_port == Settings().metrics_port
    container = _worker_container()
    assert {"name": "STREAMDETECT_WORKER_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in container["env"]
    assert {"configMapRef": {"name": _k8s_one("ConfigMap")["metadata"]["name"]}} in container["envFrom"]


def test_scaledobject_scales_the_worker_on_its_group_lag_for_uploads() -> None:
    scaled = _k8s_one("ScaledObject")["spec"]
    (trigger,) = scaled["triggers"]
    settings = Settings.load(env=_settings_configmap())
    uploads = next(spec for spec in load_specs() if spec.name == "uploads")
    assert scaled["scaleTargetRef"]["name"] == _k8s_one("Deployment")["metadata"]["name"]
    assert scaled["scaleTargetRef"].get("kind", "Deployment") == "Deployment"
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == settings.group_id
    assert trigger["metadata"]["topic"] == settings.topic(uploads.name)
    assert trigger["metadata"]["bootstrapServers"] == settings.bootstrap
    assert 1 <= scaled["minReplicaCount"] <= scaled["maxReplicaCount"] <= uploads.partitions


def test_scaledobject_offset_reset_matches_the_worker() -> None:
    worker_source = (ROOT / "streamdetect" / "stream" / "worker.py").read_text()
    match = re.search(r"consumer_auto_offset_reset=\"(\w+)\"", worker_source)
    assert match, "the worker no longer sets consumer_auto_offset_reset; update scaledobject.yaml to match"
    assert _k8s_one("ScaledObject")["spec"]["triggers"][0]["metadata"]["offsetResetPolicy"] == match[1]


def test_k8s_worker_requests_a_gpu_and_probes_the_metrics_port() -> None:
    container = _worker_container()
    assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    (port,) = [p for p in container["ports"] if p["name"] == "metrics"]
    assert port["containerPort"] == int(_settings_configmap()["STREAMDETECT_METRICS_PORT"])
    probes = {kind: container[kind]["httpGet"] for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert probes["readinessProbe"]["path"] == "/readyz"
    assert probes["livenessProbe"]["path"] == probes["startupProbe"]["path"] == "/healthz"
    assert {probe["port"] for probe in probes.values()} == {"metrics"}
    assert _cli_command_exists(container["args"])
    assert _cli_command_exists(_k8s_one("Job")["spec"]["template"]["spec"]["containers"][0]["args"])


def test_k8s_service_and_budget_select_the_worker_pods() -> None:
    labels = _pod()["metadata"]["labels"]
    deployment = _k8s_one("Deployment")
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = _k8s_one("Service")["spec"]
    assert service["selector"].items() <= labels.items()
    assert service["ports"][0]["targetPort"] == "metrics"
    assert service["ports"][0]["port"] == Settings().metrics_port
    assert _k8s_one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_the_probed_paths_are_served_by_the_worker_endpoint() -> None:
    """Start the worker's real metrics server and ask it the paths the probes and compose use."""
    from streamdetect.stream.metrics import Health, WorkerMetrics
    from streamdetect.stream.metrics_server import MetricsServer

    health = Health(models_loaded=True)
    health.set_assignment({"uploads/0"})
    health.heartbeat()
    server = MetricsServer(WorkerMetrics(), health, "127.0.0.1", 0).start()
    try:
        container = _worker_container()
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            url = f"http://127.0.0.1:{server.address[1]}{container[probe]['httpGet']['path']}"
            with urllib.request.urlopen(url, timeout=5) as response:
                assert response.status == 200, f"{probe} {url}"
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"http://127.0.0.1:{server.address[1]}/nope", timeout=5)
    finally:
        server.stop()


def test_the_image_installs_the_runtime_lock_only_and_the_locks_do_not_overlap() -> None:
    def names(path: Path) -> set[str]:
        return {line.split("==")[0].lower().replace("_", "-") for line in path.read_text().splitlines() if line.strip()}

    runtime, test = names(ROOT / "requirements.lock"), names(ROOT / "requirements-test.lock")
    assert not runtime & test
    assert {"pytest", "moto", "import-linter", "scikit-learn"} <= test and not {"pytest", "moto"} & runtime
    assert {"torch", "faust-streaming", "pydantic-settings", "scipy", "rfc3339-validator"} <= runtime
    assert "requirements-test.lock" not in DOCKERFILE.read_text()


def test_the_message_limit_the_code_uses_is_the_topics():
    from streamdetect.events.topic_specs import MAX_MESSAGE_BYTES

    for spec in load_specs():
        if "max.message.bytes" in spec.config:
            assert int(spec.config["max.message.bytes"]) == MAX_MESSAGE_BYTES, spec.name
