"""What can be checked of deploy/ without a cluster, a registry or an image builder.

- Every manifest of deploy/k8s matches the Kubernetes API's JSON schemas (kubernetes-validate, strict:
  an unknown or misspelt field fails, like `kubectl apply --validate=strict` would).
- The ConfigMap's config file loads with the project's own loader, for the pipeline and for the proxy.
- The proxy serves the probe paths of its Deployment, started from that very config file.
- The Helm values use only keys of the dagster/dagster chart (1.13) and their Kubernetes objects match the
  API schemas; the instance the chart renders from them (PostgreSQL storage, K8sRunLauncher, queued runs)
  validates against the config schemas of dagster, dagster-postgres and dagster-k8s.
- The Dockerfile copies what exists, installs extras that exist, and runs commands that exist.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
MANIFESTS = sorted((DEPLOY / "k8s").glob("*.yaml"))
VALUES = DEPLOY / "helm" / "values.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
# Oldest Kubernetes the manifests are for: native sidecar containers (restartPolicy: Always on an init
# container) are on by default from 1.29.
K8S_VERSION = "1.29"
VENV_BIN = Path(sys.executable).parent


def _documents() -> list[tuple[str, dict]]:
    return [(f"{p.name}#{i}", doc) for p in MANIFESTS for i, doc in enumerate(yaml.safe_load_all(p.read_text())) if doc]


def _by_kind(kind: str) -> dict:
    (doc,) = [d for _, d in _documents() if d["kind"] == kind]
    return doc


def _config_text() -> str:
    return _by_kind("ConfigMap")["data"]["bifrost_pipeline.yaml"]


def _env_for(text: str) -> dict[str, str]:
    """A placeholder value for every ${VAR} the text names (the Secrets would fill them in a cluster)."""
    return {name: f"test-{name.lower()}" for name in re.findall(r"\$\{([A-Z0-9_]+)", text)}


# --- Kubernetes manifests -----------------------------------------------------------------------------------


@pytest.mark.parametrize("where,doc", _documents(), ids=[w for w, _ in _documents()])
def test_manifest_matches_the_kubernetes_api_schema(where, doc):
    import kubernetes_validate

    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as err:
        pytest.fail(f"{where} ({doc['kind']}) at {'.'.join(map(str, err.absolute_path))}: {err.message}")


def test_strict_validation_rejects_a_misspelt_field():
    import kubernetes_validate

    deployment = _by_kind("Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_proxy_deployment_wiring():
    deployment, service = _by_kind("Deployment"), _by_kind("Service")
    pod = deployment["spec"]["template"]["spec"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["replicas"] >= 2
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    (proxy,) = pod["containers"]
    port_names = {p["name"] for p in proxy["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    assert proxy["readinessProbe"]["httpGet"]["path"] == "/health"
    assert proxy["livenessProbe"]["httpGet"]["path"] == "/health/live"
    # the sidecar tells live writers from dead ones by process id: it must see the proxy's processes
    assert pod["shareProcessNamespace"] is True
    (sidecar,) = pod["initContainers"]
    assert sidecar["restartPolicy"] == "Always" and sidecar["command"][:2] == ["bifrost-pipeline", "upload-landing"]
    # both write and read the same landing directory, the config's landing.local_path
    app = yaml.safe_load(_config_text())
    for container in (proxy, sidecar):
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert mounts.get(app["landing"]["local_path"]) == "landing"
        assert mounts.get("/etc/bifrost") == "config"
    config_volume = next(v for v in pod["volumes"] if v["name"] == "config")
    assert config_volume["configMap"]["name"] == _by_kind("ConfigMap")["metadata"]["name"]
    # room for proxy.shutdown_grace_s of draining, then the sidecar's last upload
    from bifrost_pipeline.config.proxy import ProxyConfig

    grace = app.get("proxy", {}).get("shutdown_grace_s", ProxyConfig().shutdown_grace_s)
    assert pod["terminationGracePeriodSeconds"] > grace


def test_configmap_config_loads_for_the_pipeline_and_the_proxy(tmp_path):
    from bifrost_pipeline.config import load_config

    text = _config_text()
    path = tmp_path / "bifrost_pipeline.yaml"
    path.write_text(text)
    app = load_config(path, env=_env_for(text))
    assert app.landing_is_remote and app.landing.local_path
    assert [e.name for e in app.exports] == ["daily_s3_export", "warehouse"]
    # the proxy and its sidecar need only the proxy's variables, not the exports' credentials
    exports_text = text.split("client:")[0]
    proxy_env = {k: v for k, v in _env_for(text).items() if k not in _env_for(exports_text)}
    assert load_config(path, env=proxy_env, with_exports=False).providers


def test_proxy_serves_the_probe_paths_of_its_deployment(tmp_path):
    """The proxy, started from the ConfigMap's config (landing moved to a temporary directory), answers the
    readiness and liveness paths of the Deployment with 200."""
    import httpx

    from bifrost_pipeline_tests.emulators.servers import free_port, port_open

    app = yaml.safe_load(_config_text())
    app["landing"]["local_path"] = str(tmp_path / "landing")
    app["pipeline"]["data_dir"] = str(tmp_path / "data")
    config = tmp_path / "bifrost_pipeline.yaml"
    config.write_text(yaml.safe_dump(app))
    (proxy,) = _by_kind("Deployment")["spec"]["template"]["spec"]["containers"]
    port = free_port()
    command = [str(VENV_BIN / proxy["command"][0]), *proxy["command"][1:]]
    command[command.index("--host") + 1], command[command.index("--port") + 1] = "127.0.0.1", str(port)
    env = {"PATH": str(VENV_BIN), "BIFROST_PIPELINE_CONFIG": str(config), "PYTHONPATH": str(ROOT)}
    env |= _env_for(_config_text())
    process = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not port_open(port):
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the proxy did not open its port"
            time.sleep(0.1)
        for probe in ("readinessProbe", "livenessProbe"):
            path = proxy[probe]["httpGet"]["path"]
            answer = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5)
            assert answer.status_code == 200, f"{probe} {path}: {answer.status_code} {answer.text}"
    finally:
        process.terminate()
        process.wait(timeout=30)


# --- Helm values for the dagster/dagster chart --------------------------------------------------------------

K8S = "k8s"  # a Kubernetes object: checked against the API schema of its type instead of key by key
ANY = "any"  # a free-form mapping in the chart's schema
# The keys of the dagster/dagster chart's values.schema.json (chart 1.13), for the sections deploy/helm sets.
# Written from the chart's schema (helm/dagster/values.schema.json in dagster-io/dagster), which no package
# registry ships; a key outside these lists is a typo or a key of another chart version.
_IMAGE = {"repository": str, "tag": str, "pullPolicy": str}
_QUEUED = {
    "maxConcurrentRuns": int,
    "tagConcurrencyLimits": [{"key": str, "value": ANY, "limit": int}],
    "dequeueIntervalSeconds": int,
    "dequeueNumWorkers": int,
    "dequeueUseThreads": bool,
    "blockOpConcurrencyLimitedRuns": {"enabled": bool, "opConcurrencySlotBuffer": int},
}
_POD = {
    "env": ["io.k8s.api.core.v1.EnvVar"],
    "envConfigMaps": ["io.k8s.api.core.v1.ConfigMapEnvSource"],
    "envSecrets": ["io.k8s.api.core.v1.SecretEnvSource"],
    "labels": ANY,
    "annotations": ANY,
    "nodeSelector": ANY,
    "affinity": "io.k8s.api.core.v1.Affinity",
    "tolerations": ["io.k8s.api.core.v1.Toleration"],
    "podSecurityContext": "io.k8s.api.core.v1.PodSecurityContext",
    "securityContext": "io.k8s.api.core.v1.SecurityContext",
    "resources": "io.k8s.api.core.v1.ResourceRequirements",
    "livenessProbe": "io.k8s.api.core.v1.Probe",
    "readinessProbe": "io.k8s.api.core.v1.Probe",
    "startupProbe": "io.k8s.api.core.v1.Probe",
    "volumes": ["io.k8s.api.core.v1.Volume"],
    "volumeMounts": ["io.k8s.api.core.v1.VolumeMount"],
    "schedulerName": str,
}
CHART_KEYS: dict[str, Any] = {
    "global": {"postgresqlSecretName": str, "dagsterHome": str, "serviceAccountName": str, "celeryConfigSecretName": str},
    "postgresql": {
        "image": _IMAGE,
        "enabled": bool,
        "postgresqlHost": str,
        "postgresqlUsername": str,
        "postgresqlPassword": str,
        "postgresqlDatabase": str,
        "postgresqlParams": ANY,
        "postgresqlScheme": str,
        "service": {"port": int},
    },
    "generatePostgresqlPasswordSecret": bool,
    "dagster-user-deployments": {
        "enabled": bool,
        "enableSubchart": bool,
        "imagePullSecrets": [ANY],
        "deployments": [
            {
                **_POD,
                "name": str,
                "image": _IMAGE,
                "dagsterApiGrpcArgs": [str],
                "codeServerArgs": [str],
                "includeConfigInLaunchedRuns": {"enabled": bool},
                "deploymentNamespace": str,
                "port": int,
                "initContainers": ["io.k8s.api.core.v1.Container"],
                "sidecarContainers": ["io.k8s.api.core.v1.Container"],
            }
        ],
    },
    "runLauncher": {
        "type": str,
        "config": {
            "k8sRunLauncher": {
                "image": _IMAGE,
                "imagePullPolicy": str,
                "jobNamespace": str,
                "loadInclusterConfig": bool,
                "kubeconfigFile": str,
                "envConfigMaps": ["io.k8s.api.core.v1.ConfigMapEnvSource"],
                "envSecrets": ["io.k8s.api.core.v1.SecretEnvSource"],
                "envVars": [str],
                "volumeMounts": ["io.k8s.api.core.v1.VolumeMount"],
                "volumes": ["io.k8s.api.core.v1.Volume"],
                "labels": ANY,
                "failPodOnRunFailure": bool,
                "resources": "io.k8s.api.core.v1.ResourceRequirements",
                "schedulerName": str,
                "securityContext": "io.k8s.api.core.v1.SecurityContext",
                "runK8sConfig": {
                    "containerConfig": ANY,
                    "podSpecConfig": ANY,
                    "podTemplateSpecMetadata": ANY,
                    "jobSpecConfig": ANY,
                    "jobMetadata": ANY,
                },
            }
        },
    },
    "dagsterDaemon": {
        **_POD,
        "enabled": bool,
        "image": _IMAGE,
        "runCoordinator": {"enabled": bool, "type": str, "config": {"queuedRunCoordinator": _QUEUED}},
        "heartbeatTolerance": int,
        "deploymentLabels": ANY,
        "runMonitoring": ANY,
        "runRetries": ANY,
        "sensors": ANY,
        "schedules": ANY,
    },
    "dagsterWebserver": {
        **_POD,
        "replicaCount": int,
        "image": _IMAGE,
        "nameOverride": str,
        "pathPrefix": str,
        "service": {"type": str, "port": int, "annotations": ANY},
        "workspace": ANY,
        "deploymentLabels": ANY,
        "enableReadOnly": bool,
        "dbStatementTimeout": int,
        "dbPoolRecycle": int,
        "logLevel": str,
    },
    "telemetry": {"enabled": bool},
}


def _k8s_definition_problems(value: Any, definition: str) -> list[str]:
    """Problems of `value` as the Kubernetes type `definition` (strict schema of kubernetes-validate)."""
    import importlib.resources
    import json

    import jsonschema

    root = importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema" / f"v{K8S_VERSION}.0-local-strict"
    definitions = json.loads((root / "_definitions.json").read_text())
    schema = {**definitions, "$ref": f"#/$defs/{definition}"}
    errors = jsonschema.Draft202012Validator(schema).iter_errors(value)
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]


def _value_problems(value: Any, spec: Any, path: str) -> list[str]:
    if spec is ANY:
        return []
    if isinstance(spec, str) and spec.startswith("io.k8s."):
        if isinstance(value, dict) and spec.endswith(".Probe"):
            value = {k: v for k, v in value.items() if k != "enabled"}  # the chart's own switch
        return [f"{path}: {p}" for p in _k8s_definition_problems(value, spec)]
    if isinstance(spec, list):
        if not isinstance(value, list):
            return [f"{path}: expected a list"]
        return [p for i, item in enumerate(value) for p in _value_problems(item, spec[0], f"{path}[{i}]")]
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            return [f"{path}: expected a mapping"]
        problems = [f"{path}.{k}: not a key of the dagster chart" for k in value if k not in spec]
        return problems + [p for k, v in value.items() if k in spec for p in _value_problems(v, spec[k], f"{path}.{k}")]
    return [] if isinstance(value, spec) else [f"{path}: expected {spec.__name__}, got {value!r}"]


def _values() -> dict:
    return yaml.safe_load(VALUES.read_text())


def test_helm_values_use_only_keys_of_the_dagster_chart():
    assert _value_problems(_values(), CHART_KEYS, "values") == []


def test_helm_value_check_catches_a_wrong_key_and_a_bad_kubernetes_object():
    values = _values()
    deployment = values["dagster-user-deployments"]["deployments"][0]
    deployment["envSecret"] = deployment.pop("envSecrets")
    deployment["volumeMounts"][0]["mountpath"] = deployment["volumeMounts"][0].pop("mountPath")
    problems = "\n".join(_value_problems(values, CHART_KEYS, "values"))
    assert "deployments[0].envSecret: not a key" in problems
    assert "deployments[0].volumeMounts[0]" in problems and "mountpath" in problems


def _camel_to_snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def _rendered_instance(values: dict) -> dict:
    """The parts of dagster.yaml that the chart's instance ConfigMap renders from these values (templates
    helpers/instance/_*.tpl: PostgreSQL storage, K8sRunLauncher, QueuedRunCoordinator)."""
    pg = values["postgresql"]
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    run_k8s = {_camel_to_snake(k): v for k, v in launcher.get("runK8sConfig", {}).items()}
    k8s_config = {_camel_to_snake(k): v for k, v in launcher.items() if k != "runK8sConfig"}
    queued = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    return {
        "postgres_db": {
            "hostname": pg["postgresqlHost"],
            "username": pg["postgresqlUsername"],
            "password": {"env": "DAGSTER_PG_PASSWORD"},
            "db_name": pg["postgresqlDatabase"],
            "port": pg["service"]["port"],
            "params": pg["postgresqlParams"],
            "scheme": pg["postgresqlScheme"],
        },
        "k8s_run_launcher": {
            **k8s_config,
            "run_k8s_config": run_k8s,
            # what the chart always adds
            "service_account_name": "dagster",
            "instance_config_map": "dagster-instance",
            "postgres_password_secret": values["global"]["postgresqlSecretName"],
            "dagster_home": "/opt/dagster/dagster_home",
            "job_namespace": "bifrost",
        },
        "queued_run_coordinator": {_camel_to_snake(k): v for k, v in queued.items()},
    }


def _config_problems(config_type, value: dict) -> list[str]:
    from dagster._config import process_config

    result = process_config(config_type, value)
    return [] if result.success else [str(e.message) for e in result.errors]


PG_ENV = ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB")


@pytest.fixture
def pg_env(monkeypatch):
    """The variables the instance configs read (`env:` values are resolved when the config is processed)."""
    for name in PG_ENV:
        monkeypatch.setenv(name, "5432" if name.endswith("PORT") else f"test-{name.lower()}")


def test_instance_rendered_from_the_values_validates_with_dagster_k8s_and_dagster_postgres(pg_env):
    from dagster._core.run_coordinator import QueuedRunCoordinator
    from dagster_k8s import K8sRunLauncher
    from dagster_postgres import PostgresRunStorage
    from dagster_postgres.utils import pg_config

    rendered = _rendered_instance(_values())
    assert _config_problems(K8sRunLauncher.config_type(), rendered["k8s_run_launcher"]) == []
    assert _config_problems(QueuedRunCoordinator.config_type(), rendered["queued_run_coordinator"]) == []
    assert _config_problems(pg_config(), {"postgres_db": rendered["postgres_db"]}) == []
    assert PostgresRunStorage.config_type() is not None
    # the checks have teeth: a misspelt launcher key is refused
    assert _config_problems(K8sRunLauncher.config_type(), {**rendered["k8s_run_launcher"], "env_secret": []})


def test_user_deployment_runs_this_code_location():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (deployment,) = _values()["dagster-user-deployments"]["deployments"]
    assert deployment["codeServerArgs"] == ["-m", pyproject["tool"]["dagster"]["module_name"]]
    env = {e["name"]: e.get("value") for e in deployment["env"]}
    mounts = {m["mountPath"]: m["name"] for m in deployment["volumeMounts"]}
    config_path = Path(env["BIFROST_PIPELINE_CONFIG"])
    assert mounts[str(config_path.parent)] == "config"
    app = yaml.safe_load(_config_text())
    data_mount = next(p for p, name in mounts.items() if name == "data")
    assert Path(app["pipeline"]["data_dir"]).is_relative_to(data_mount), "pipeline.data_dir is not on the shared volume"
    # the proxy image and the code location's image are the same
    proxy_image = _by_kind("Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert proxy_image == f"{deployment['image']['repository']}:{deployment['image']['tag']}"


def test_dagster_postgres_instance_config_validates(pg_env):
    """deploy/dagster-postgres.yaml against Dagster's instance schema and each configured class's schema."""
    from dagster._core.instance.config import dagster_instance_config_schema
    from dagster._core.run_coordinator import QueuedRunCoordinator
    from dagster_postgres.utils import pg_config

    instance = yaml.safe_load((DEPLOY / "dagster-postgres.yaml").read_text())
    assert _config_problems(dagster_instance_config_schema(), instance) == []
    assert _config_problems(pg_config(), instance["storage"]["postgres"]) == []
    assert _config_problems(QueuedRunCoordinator.config_type(), instance["run_coordinator"]["config"]) == []


# --- Dockerfile ---------------------------------------------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def test_dockerfile_copies_what_exists_and_installs_existing_extras():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    extras = set(pyproject["project"]["optional-dependencies"])
    instructions = _instructions()
    for op, args in instructions:
        if op == "COPY" and not args.startswith("--from"):
            *sources, _ = args.split()
            for source in sources:
                assert (ROOT / source).exists(), f"Dockerfile COPY {source}: no such path in the repository"
    (install,) = [a for op, a in instructions if op == "RUN" and "uv pip install" in a]
    (wanted,) = re.findall(r"\.\[([a-z,]+)\]", install)
    assert set(wanted.split(",")) <= extras and "deploy" in wanted.split(",")
    env = dict(re.findall(r"(\w+)=(\S+)", " ".join(a for op, a in instructions if op == "ENV")))
    copied = {a.split()[-1] for op, a in instructions if op == "COPY"}
    assert env["BIFROST_PIPELINE_SCHEMAS"] in copied, "the schemas are not where BIFROST_PIPELINE_SCHEMAS points"
    (cmd,) = [yaml.safe_load(a) for op, a in instructions if op == "CMD"]
    assert cmd == _by_kind("Deployment")["spec"]["template"]["spec"]["containers"][0]["command"]


def _commands() -> list[list[str]]:
    pod = _by_kind("Deployment")["spec"]["template"]["spec"]
    sidecar = pod["initContainers"][0]
    (deployment,) = _values()["dagster-user-deployments"]["deployments"]
    return [
        pod["containers"][0]["command"],
        sidecar["command"],
        sidecar["lifecycle"]["preStop"]["exec"]["command"],
        deployment["readinessProbe"]["exec"]["command"],
        ["dagster", "code-server", "start", *deployment["codeServerArgs"]],
    ]


@pytest.mark.parametrize("command", _commands(), ids=lambda c: " ".join(c[:3]))
def test_commands_of_the_manifests_exist_in_the_image(command):
    """Each command the pods run is a console script of the image's packages and its subcommand exists."""
    program = VENV_BIN / command[0]
    assert program.exists(), f"{command[0]}: not installed by the project's dependencies"
    words = [w for w in command[1:] if not w.startswith("-")][:2]
    subcommand = words if command[0] == "dagster" else words[:1]
    done = subprocess.run([str(program), *subcommand, "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{' '.join([command[0], *subcommand])}: {done.stderr[-1000:]}"
