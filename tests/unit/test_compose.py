"""docker-compose.yaml gives the same stack as the local one: checked with the real Compose binary, no engine.

`docker compose config` (Compose v2, installed by scripts/install-compose.sh) parses, validates and
interpolates the file exactly as `docker compose up` would, with a .env made from .env.example.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from covidflow import PROJECT_ROOT, settings
from covidflow.stack.home import StackHome

COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yaml"
ENV_EXAMPLE = PROJECT_ROOT / ".env.example"
INSTALL_SCRIPT = PROJECT_ROOT / "scripts" / "install-compose.sh"

KIBANA_PORT = 5601  # not in covidflow.settings: Kibana exists only in the compose stack
EXPECTED_PORTS: dict[str, set[int]] = {
    "s3": {settings.S3_PORT},
    "kafka": {settings.KAFKA_PORT},
    "cassandra": {settings.CASSANDRA_PORT},
    "elasticsearch": {settings.ELASTICSEARCH_PORT},
    "spark-master": {settings.SPARK_MASTER_PORT, settings.SPARK_MASTER_UI_PORT},
    "spark-worker": {settings.SPARK_WORKER_UI_PORT},
    "airflow-apiserver": {settings.AIRFLOW_PORT},
    "kibana": {KIBANA_PORT},
}
AIRFLOW_SERVICES = {
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
}
SPARK_SERVICES = {"spark-master", "spark-worker"}
ONESHOT_SERVICES = {"airflow-init", "cassandra-init", "elasticsearch-setup", "kibana-setup"}
EXPECTED_SERVICES = set(EXPECTED_PORTS) | AIRFLOW_SERVICES | ONESHOT_SERVICES | {"postgres"}
CONN_IDS = {
    settings.CONN_S3,
    settings.CONN_KAFKA,
    settings.CONN_CASSANDRA,
    settings.CONN_ELASTICSEARCH,
    settings.CONN_SPARK,
}
CODE_DIRS = ("covidflow", "dags", "plugins", "spark_jobs", "include")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|CREDENTIAL|FERNET|ENCRYPTIONKEY|JAAS|IDENTITY", re.IGNORECASE)


def _pinned_version() -> str:
    match = re.search(r"^COMPOSE_VERSION=(v[\d.]+)$", INSTALL_SCRIPT.read_text(), re.MULTILINE)
    assert match, f"no COMPOSE_VERSION=... in {INSTALL_SCRIPT}"
    return match.group(1)


def _compose_binary() -> Path:
    if override := os.environ.get("COVIDFLOW_COMPOSE_BIN"):
        return Path(override)
    return StackHome.from_env().root / "cache" / "compose" / _pinned_version() / "docker-compose"


@pytest.fixture(scope="module")
def compose_bin() -> Path:
    path = _compose_binary()
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"Docker Compose binary not found at {path}: run `bash scripts/install-compose.sh` "
            "(or set COVIDFLOW_COMPOSE_BIN to a Compose v2 binary)",
            pytrace=False,
        )
    return path


def make_env_file(path: Path, drop: str | None = None) -> dict[str, str]:
    """A .env from .env.example, every CHANGE_ME placeholder replaced by a fresh random value."""
    values: dict[str, str] = {}
    lines = []
    for line in ENV_EXAMPLE.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, value = line.partition("=")
        if name == drop:
            continue
        if name == "AIRFLOW_FERNET_KEY":
            value = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
        elif value.startswith("CHANGE_ME"):
            value = "s3cr3t" + secrets.token_urlsafe(18)
        values[name] = value
        lines.append(f"{name}={value}")
    path.write_text("\n".join(lines) + "\n")
    return values


def run_compose(compose_bin: Path, env_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # A clean environment: variables of the caller's shell would win over the .env file.
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(env_file.parent),
        "DOCKER_CONFIG": str(env_file.parent / "docker-config"),
    }
    return subprocess.run(
        [
            str(compose_bin),
            "--project-directory",
            str(PROJECT_ROOT),
            "-f",
            str(COMPOSE_FILE),
            "--env-file",
            str(env_file),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


@pytest.fixture(scope="module")
def rendered(compose_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, str]]:
    env_file = tmp_path_factory.mktemp("compose") / ".env"
    values = make_env_file(env_file)
    result = run_compose(compose_bin, env_file, "config", "--format", "json")
    assert result.returncode == 0, f"docker compose config failed:\n{result.stderr}"
    return json.loads(result.stdout), values


@pytest.fixture(scope="module")
def services(rendered: tuple[dict[str, Any], dict[str, str]]) -> dict[str, dict[str, Any]]:
    return rendered[0]["services"]


def test_binary_is_the_pinned_compose_v2(compose_bin: Path) -> None:
    out = subprocess.run([str(compose_bin), "version", "--short"], capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == _pinned_version().lstrip("v")


def test_every_expected_service_exists(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == EXPECTED_SERVICES


def test_host_ports_are_those_of_settings(services: dict[str, dict[str, Any]]) -> None:
    published = {name: {int(port["published"]) for port in svc.get("ports", [])} for name, svc in services.items()}
    assert {name: ports for name, ports in published.items() if ports} == EXPECTED_PORTS
    for name, svc in services.items():
        for port in svc.get("ports", []):
            # Same port inside and out, so advertised addresses (Kafka) and UIs agree with settings.
            assert int(port["published"]) == port["target"], (name, port)


def test_every_port_binding_is_on_loopback(services: dict[str, dict[str, Any]]) -> None:
    bindings = [(name, port) for name, svc in services.items() for port in svc.get("ports", [])]
    assert bindings
    for name, port in bindings:
        assert port.get("host_ip") == "127.0.0.1", f"{name} publishes {port} beyond 127.0.0.1"


def test_kafka_advertises_the_settings_bootstrap_to_the_host(services: dict[str, dict[str, Any]]) -> None:
    advertised = services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert f"EXTERNAL://127.0.0.1:{settings.KAFKA_PORT}" in advertised


def test_airflow_connections_are_the_settings_ids(services: dict[str, dict[str, Any]]) -> None:
    expected = {f"AIRFLOW_CONN_{conn_id.upper()}" for conn_id in CONN_IDS}
    for name in AIRFLOW_SERVICES:
        env = services[name]["environment"]
        assert {key for key in env if key.startswith("AIRFLOW_CONN_")} == expected, name


def test_airflow_connections_point_at_compose_services(
    services: dict[str, dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from covidflow.stack.connections import connections
    from covidflow.stack.home import StackHome

    monkeypatch.setenv("COVIDFLOW_HOME", str(tmp_path))
    local = connections(StackHome.from_env())
    env = services["airflow-scheduler"]["environment"]
    conns = {conn_id: json.loads(env[f"AIRFLOW_CONN_{conn_id.upper()}"]) for conn_id in CONN_IDS}
    for conn_id, conn in conns.items():
        # Same type and at least the same extras as the local stack's connection of that id.
        assert conn["conn_type"] == local[conn_id]["conn_type"], conn_id
        assert set(local[conn_id].get("extra", {})) <= set(conn.get("extra", {})), conn_id
    assert conns[settings.CONN_S3]["extra"]["endpoint_url"] == f"http://s3:{settings.S3_PORT}"
    assert conns[settings.CONN_KAFKA]["extra"]["bootstrap.servers"] == "kafka:19092"
    assert (conns[settings.CONN_CASSANDRA]["host"], conns[settings.CONN_CASSANDRA]["port"]) == (
        "cassandra",
        settings.CASSANDRA_PORT,
    )
    assert (conns[settings.CONN_ELASTICSEARCH]["host"], conns[settings.CONN_ELASTICSEARCH]["port"]) == (
        "elasticsearch",
        settings.ELASTICSEARCH_PORT,
    )
    assert (conns[settings.CONN_SPARK]["host"], conns[settings.CONN_SPARK]["port"]) == (
        "spark://spark-master",
        settings.SPARK_MASTER_PORT,
    )
    for conn in conns.values():
        host = conn.get("host") or conn["extra"].get("bootstrap.servers") or conn["extra"]["endpoint_url"]
        assert any(svc in host for svc in services), f"{host} is not a compose service"


def test_every_service_has_a_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    oneshots = {name for name, svc in services.items() if svc.get("labels", {}).get("covidflow.oneshot") == "true"}
    assert oneshots == ONESHOT_SERVICES
    for name, svc in services.items():
        if name in oneshots:
            # Run-once jobs have nothing to probe: dependents wait for them to exit 0 instead.
            assert svc.get("restart") == "no", name
            continue
        check = svc.get("healthcheck", {})
        assert check.get("test") and check["test"][0] in ("CMD", "CMD-SHELL") and not check.get("disable"), name


def test_dependencies_wait_for_health_or_completion(services: dict[str, dict[str, Any]]) -> None:
    edges = [
        (name, dep, cond["condition"])
        for name, svc in services.items()
        for dep, cond in svc.get("depends_on", {}).items()
    ]
    assert edges
    for name, dep, condition in edges:
        wanted = "service_completed_successfully" if dep in ONESHOT_SERVICES else "service_healthy"
        assert condition == wanted, f"{name} -> {dep}: {condition}"
    for name in AIRFLOW_SERVICES - {"airflow-init"}:
        assert "airflow-init" in services[name]["depends_on"], name


def test_heaps_are_explicit(services: dict[str, dict[str, Any]]) -> None:
    assert re.search(r"-Xmx\d+[mg]", services["elasticsearch"]["environment"]["ES_JAVA_OPTS"])
    assert re.search(r"-Xmx\d+[mg]", services["kafka"]["environment"]["KAFKA_HEAP_OPTS"])
    cassandra = services["cassandra"]["environment"]
    assert cassandra["MAX_HEAP_SIZE"] and cassandra["HEAP_NEWSIZE"]


def test_code_is_mounted_where_pythonpath_points(services: dict[str, dict[str, Any]]) -> None:
    for name in AIRFLOW_SERVICES | SPARK_SERVICES:
        svc = services[name]
        assert svc["environment"]["PYTHONPATH"] == "/opt/covidflow", name
        mounts = {Path(v["source"]).resolve(): v["target"] for v in svc["volumes"] if v["type"] == "bind"}
        for directory in CODE_DIRS:
            assert mounts.get((PROJECT_ROOT / directory).resolve()) == f"/opt/covidflow/{directory}", (name, directory)
    assert services["airflow-scheduler"]["environment"]["AIRFLOW__CORE__DAGS_FOLDER"] == "/opt/covidflow/dags"


def test_kibana_setup_imports_the_committed_saved_objects(
    services: dict[str, dict[str, Any]], rendered: tuple[dict[str, Any], dict[str, str]]
) -> None:
    svc = services["kibana-setup"]
    mounts = {Path(v["source"]).resolve(): (v["target"], v.get("read_only")) for v in svc["volumes"]}
    ndjson = Path(svc["environment"]["SAVED_OBJECTS"])
    assert mounts[(PROJECT_ROOT / "include" / "kibana").resolve()] == (str(ndjson.parent), True)
    assert (PROJECT_ROOT / "include" / "kibana" / ndjson.name).is_file()
    script = (PROJECT_ROOT / "docker" / "kibana" / "import_saved_objects.py").resolve()
    assert mounts[script] == (svc["command"][-1], True)
    assert svc["environment"]["KIBANA_URL"] == f"http://kibana:{KIBANA_PORT}"
    assert svc["environment"]["ELASTIC_PASSWORD"] == rendered[1]["ELASTIC_PASSWORD"]
    assert svc["depends_on"]["kibana"]["condition"] == "service_healthy"


def _walk_environments(raw: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(where, name, value) of every environment entry written in the YAML file itself."""
    found = []
    blocks = [(f"services.{n}", s) for n, s in raw.get("services", {}).items()]
    blocks += [(k, v) for k, v in raw.items() if k.startswith("x-") and isinstance(v, dict)]
    for where, block in blocks:
        env = block.get("environment") or {}
        items = env.items() if isinstance(env, dict) else (e.partition("=")[::2] for e in env)
        found += [(where, str(k), str(v)) for k, v in items if k != "<<"]
    return found


def test_no_literal_secrets_in_the_compose_file(rendered: tuple[dict[str, Any], dict[str, str]]) -> None:
    config, values = rendered
    text = COMPOSE_FILE.read_text()
    raw = yaml.safe_load(text)
    entries = _walk_environments(raw)
    assert entries
    for where, name, value in entries:
        if SECRET_NAME.search(name) and not name.endswith("_FILE") and value.strip():
            assert "${" in value, f"{where}.{name} holds a literal value, not a variable"
    # Inside JSON / JAAS strings too: every password="..." or "password": "..." is a variable.
    for match in re.finditer(r'password"?\s*[:=]\s*"([^"]*)"', text, re.IGNORECASE):
        assert match.group(1).startswith("${"), f"literal password in {match.group(0)}"
    # Every secret of the .env is used, and so comes from the variable, never from the file.
    rendered_text = json.dumps(config)
    for name, value in values.items():
        if value.startswith("s3cr3t"):
            assert value in rendered_text, f"{name} from .env is used nowhere"
            assert value not in text
    assert "CHANGE_ME" not in rendered_text


def test_a_missing_secret_stops_compose(compose_bin: Path, tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    make_env_file(env_file, drop="ELASTIC_PASSWORD")
    result = run_compose(compose_bin, env_file, "config", "--quiet")
    assert result.returncode != 0
    assert "ELASTIC_PASSWORD" in result.stderr


def test_env_file_is_never_committed() -> None:
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=PROJECT_ROOT, timeout=30, check=False)
    assert ignored.returncode == 0, ".env must be listed in .gitignore"
    assert ENV_EXAMPLE.is_file()
