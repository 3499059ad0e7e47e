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


def test_code_is_in_the_image_not_mounted(services: dict[str, dict[str, Any]]) -> None:
    # Runnable by construction: the containers run the code built into the image, not the host's checkout.
    code = {(PROJECT_ROOT / directory).resolve() for directory in CODE_DIRS}
    for name, svc in services.items():
        for volume in svc.get("volumes", []):
            if volume["type"] == "bind":
                assert Path(volume["source"]).resolve() not in code, (name, volume)
    runtime = _stages()[RUNTIME_STAGE]
    assert ("ENV", "PYTHONPATH=/opt/covidflow") in _env_lines(runtime)
    for directory in CODE_DIRS:
        assert f"COPY --chown=airflow:0 {directory} /opt/covidflow/{directory}" in runtime, directory
    assert "RUN pip install --no-cache-dir --no-deps -e /opt/covidflow" in runtime
    assert services["airflow-scheduler"]["environment"]["AIRFLOW__CORE__DAGS_FOLDER"] == "/opt/covidflow/dags"


# --- The image (docker/airflow/Dockerfile): read as text, since no engine can build it here ----------------------

DOCKERFILE = PROJECT_ROOT / "docker" / "airflow" / "Dockerfile"
DOCKERIGNORE = PROJECT_ROOT / "docker" / "airflow" / "Dockerfile.dockerignore"
RUNTIME_REQUIREMENTS = PROJECT_ROOT / "docker" / "airflow" / "runtime-requirements.sh"
SPARK_DEFAULTS = PROJECT_ROOT / "docker" / "airflow" / "spark-defaults.sh"
RUNTIME_STAGE = "runtime"
JARS_STAGE = "connector-jars"
FINAL_STAGE = "final"
TEST_TOOLS = {"pytest", "pytest-timeout", "moto", "ruff", "aiosmtpd", "websocket-client", "playwright"}
IMAGE_SERVICES = AIRFLOW_SERVICES | SPARK_SERVICES


def _instructions(text: str) -> list[str]:
    """Dockerfile instructions, continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#")))
    return [" ".join(line.split()) for line in joined.splitlines() if line.strip()]


def _stages() -> dict[str, list[str]]:
    """Instructions per build stage (``FROM ... AS name``; the last, unnamed stage is "final")."""
    stages: dict[str, list[str]] = {}
    current: list[str] = []
    for instruction in _instructions(DOCKERFILE.read_text()):
        if instruction.startswith("FROM "):
            parts = instruction.split()
            current = stages.setdefault(parts[3] if len(parts) > 3 else FINAL_STAGE, [])
        current.append(instruction)
    return stages


def _env_lines(stage: list[str]) -> list[tuple[str, str]]:
    return [("ENV", item) for ins in stage if ins.startswith("ENV ") for item in ins.split()[1:]]


def _image_env(name: str) -> str:
    values = dict(item.partition("=")[::2] for _, item in _env_lines(_stages()[RUNTIME_STAGE]))
    return values[name]


def _runtime_requirements(path: Path = PROJECT_ROOT / "requirements.txt") -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(RUNTIME_REQUIREMENTS), str(path)], capture_output=True, text=True, timeout=30)


def _names(requirements: str) -> set[str]:
    lines = [ln.split("#")[0].strip() for ln in requirements.splitlines()]
    return {re.split(r"[=<>\[ ]", ln)[0].lower() for ln in lines if ln}


def test_airflow_and_spark_run_one_image_built_here(services: dict[str, dict[str, Any]]) -> None:
    # One image: the driver (Airflow's scheduler) and the executors (Spark's worker) share Python, packages and code.
    images = {services[name]["image"] for name in IMAGE_SERVICES}
    assert len(images) == 1, images
    for name in IMAGE_SERVICES:
        svc = services[name]
        assert Path(svc["build"]["context"]).resolve() == PROJECT_ROOT.resolve(), name
        assert svc["build"]["dockerfile"] == "docker/airflow/Dockerfile", name
        assert svc["pull_policy"] == "build", f"{name} could pull a look-alike image from a registry"
    for name in SPARK_SERVICES:
        entrypoint = services[name]["entrypoint"]
        assert entrypoint[-1] == "/opt/covidflow-docker/spark-class.sh", name
        assert services[name]["command"][0].startswith("org.apache.spark.deploy."), name
    assert "docker/spark/spark-class.sh" in " ".join(_stages()[RUNTIME_STAGE])


def test_build_context_holds_every_copied_file() -> None:
    allowed = [ln[1:].rstrip("/") for ln in DOCKERIGNORE.read_text().splitlines() if ln.startswith("!")]
    copies = [ins.split() for ins in _instructions(DOCKERFILE.read_text()) if ins.startswith("COPY ")]
    sources = [src for parts in copies if not any(p.startswith("--from=") for p in parts) for src in parts[1:-1]]
    sources = [src for src in sources if not src.startswith("--")]
    assert sources
    for src in sources:
        assert (PROJECT_ROOT / src).exists(), f"COPY {src}: no such file in the repository"
        assert any(src == a or src.startswith(a + "/") for a in allowed), f"COPY {src}: excluded from the context"


def test_image_installs_no_test_tools() -> None:
    result = _runtime_requirements()
    assert result.returncode == 0, result.stderr
    runtime = _names(result.stdout)
    everything = _names((PROJECT_ROOT / "requirements.txt").read_text())
    assert not runtime & TEST_TOOLS, runtime & TEST_TOOLS
    assert {"apache-airflow", "pyspark", "cassandra-driver", "elasticsearch", "confluent-kafka"} <= runtime
    assert everything - runtime <= TEST_TOOLS, (
        f"runtime packages left out of the image: {everything - runtime - TEST_TOOLS}"
    )
    pip = [ins for stage in _stages().values() for ins in stage if "pip install" in ins]
    assert pip and all("requirements.txt -c" not in ins for ins in pip), pip
    assert any("-r /tmp/covidflow/runtime.txt" in ins for ins in pip)


def test_runtime_requirements_refuse_a_file_without_the_marker(tmp_path: Path) -> None:
    path = tmp_path / "requirements.txt"
    path.write_text("pyspark==4.2.0\npytest==9.2.0\n")
    result = _runtime_requirements(path)
    assert result.returncode != 0 and "development and tests" in result.stderr


def test_production_code_imports_no_test_tool() -> None:
    # What the image leaves out must not be needed by the code it runs.
    import ast

    modules = {"pytest", "moto", "ruff", "aiosmtpd", "websocket", "playwright"}
    for directory in ("covidflow", "dags", "plugins", "spark_jobs"):
        for path in (PROJECT_ROOT / directory).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module]
                for name in names:
                    assert name.split(".")[0] not in modules, f"{path.relative_to(PROJECT_ROOT)} imports {name}"


def test_connector_jars_are_resolved_at_build_time_without_maven_in_the_image() -> None:
    stages = _stages()
    assert list(stages)[-1] == FINAL_STAGE
    jars, final = stages[JARS_STAGE], stages[FINAL_STAGE]
    assert jars[0] == f"FROM {RUNTIME_STAGE} AS {JARS_STAGE}" and final[0] == f"FROM {RUNTIME_STAGE}"
    # Resolved with Maven on PATH in its own stage, through the same function the operator calls at run time...
    assert "ENV PATH=/opt/maven/bin:${PATH}" in jars
    assert any(ins.startswith("RUN python") and "kafka_connector_jars" in ins for ins in jars)
    # ...into COVIDFLOW_HOME's cache (covidflow.stack.fetch.maven_classpath: <cache>/maven/<name>), copied over.
    cache = f"{_image_env('COVIDFLOW_HOME')}/cache/maven"
    assert f"COPY --from={JARS_STAGE} --chown=airflow:0 {cache} {cache}" in final
    # The final image has no Maven (checked again at build time) and never asks for it.
    assert not any("maven" in ins.lower() for ins in final if not ins.startswith("COPY --from"))
    assert not any("apt-get install" in ins and "maven" in ins for stage in stages.values() for ins in stage)
    checks = [ins for ins in final if ins.startswith("RUN python")]
    assert checks and "shutil.which('mvn') is None" in checks[0] and "kafka_connector_jars" in checks[0]


def test_the_executor_environment_is_packed_into_the_image_at_build_time() -> None:
    """ADR 0020: submit_conf ships it with every job; built in the final image, a submission never needs PyPI."""
    final = _stages()[FINAL_STAGE]
    assert "RUN python -m covidflow.stack.executor_env" in final
    script = PROJECT_ROOT / "docker" / "airflow" / "runtime-requirements.sh"
    runtime = subprocess.run(["bash", str(script), str(PROJECT_ROOT / "requirements.txt")],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "venv-pack==" in runtime


def test_stream_state_is_on_a_named_volume(
    services: dict[str, dict[str, Any]], rendered: tuple[dict[str, Any], dict[str, str]]
) -> None:
    state = _image_env("COVIDFLOW_STREAM_STATE_DIR")
    declared = set(rendered[0]["volumes"])
    # The scheduler runs the driver and the supervisor (heartbeat, committed offsets); executors run on the worker.
    for name in ("airflow-scheduler", "spark-worker"):
        mounts = [v for v in services[name]["volumes"] if v["target"] == state]
        assert len(mounts) == 1 and mounts[0]["type"] == "volume", (name, services[name]["volumes"])
        assert mounts[0]["source"] in declared, name
        assert services[name].get("environment", {}).get("COVIDFLOW_STREAM_STATE_DIR", state) == state, name
    sources = {v["source"] for n in ("airflow-scheduler", "spark-worker") for v in services[n]["volumes"]
               if v["target"] == state}  # fmt: skip
    assert len(sources) == 1, "driver and executors must see one checkpoint"


def test_master_ui_and_driver_host_come_from_configuration(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from covidflow.normalise.supervise import master_ui_url

    ui = f"http://spark-master:{settings.SPARK_MASTER_UI_PORT}"
    for name in AIRFLOW_SERVICES:
        assert services[name]["environment"]["COVIDFLOW_SPARK_MASTER_UI"] == ui, name
    monkeypatch.setenv("COVIDFLOW_SPARK_MASTER_UI", ui)
    assert master_ui_url() == ui  # the supervisor and the operator read it there
    scheduler = services["airflow-scheduler"]
    assert scheduler["environment"]["COVIDFLOW_SPARK_DRIVER_HOST"] == scheduler["hostname"] == "airflow-scheduler"
    worker = services["spark-worker"]
    assert worker["command"][worker["command"].index("--host") + 1] == worker["hostname"]
    master = services["spark-master"]
    assert master["command"][master["command"].index("--host") + 1] == master["hostname"] == "spark-master"
    assert settings.CONN_SPARK.upper()  # the connection (test above) points at spark-master:7077
    entrypoint = (PROJECT_ROOT / "docker" / "airflow" / "entrypoint.sh").read_text()
    assert "bash /opt/covidflow-docker/spark-defaults.sh\nexec /entrypoint" in entrypoint
    assert '"/opt/covidflow-docker/entrypoint.sh"]' in _stages()[FINAL_STAGE][-1]


def _spark_defaults(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    run_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "COVIDFLOW_HOME": str(tmp_path), **env}
    result = subprocess.run(["bash", str(SPARK_DEFAULTS)], capture_output=True, text=True, env=run_env, timeout=30)
    return result, tmp_path / "conf" / "spark" / "spark-defaults.conf"


def test_spark_defaults_put_the_configured_driver_host_where_spark_submit_reads_it(tmp_path: Path) -> None:
    from covidflow.stack.home import StackHome

    result, conf = _spark_defaults(tmp_path, COVIDFLOW_SPARK_DRIVER_HOST="airflow-scheduler")
    assert result.returncode == 0, result.stderr
    assert conf.read_text() == "spark.driver.host airflow-scheduler\nspark.driver.bindAddress 0.0.0.0\n"
    # The folder spark_env() hands spark-submit as SPARK_CONF_DIR for this COVIDFLOW_HOME.
    assert conf.parent == StackHome(tmp_path.resolve()).conf_dir("spark")


def test_spark_defaults_write_nothing_without_a_driver_host_and_refuse_a_bad_one(tmp_path: Path) -> None:
    result, conf = _spark_defaults(tmp_path)
    assert result.returncode == 0 and not conf.exists()
    result, conf = _spark_defaults(tmp_path, COVIDFLOW_SPARK_DRIVER_HOST="host\nspark.evil true")
    assert result.returncode != 0 and not conf.exists()


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
