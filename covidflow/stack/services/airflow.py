"""Airflow 3: api-server, scheduler, dag-processor and triggerer, on SQLite with the LocalExecutor.

All configuration is environment (``airflow_env``), so the CLI, tests and ``airflow dags test`` see
exactly what the running components see; no ``airflow.cfg`` is edited by hand.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import covidflow
from covidflow import settings
from covidflow.stack.connections import airflow_conn_env
from covidflow.stack.credentials import local_secret
from covidflow.stack.home import StackHome
from covidflow.stack.service import HOST, ProcessSpec, Service, http_json

ADMIN_USER = "admin"
PASSWORDS_FILE = "simple_auth_manager_passwords.json.generated"
# The scheduler's and triggerer's log servers would listen on every interface (Airflow 3.3 hard-codes it);
# on one machine the api-server reads task logs from the local files, so they are not started.
COMMANDS = {
    "api-server": [],
    "scheduler": ["--skip-serve-logs"],
    "dag-processor": [],
    "triggerer": ["--skip-serve-logs"],
}
HEALTH_COMPONENTS = ("metadatabase", "scheduler", "triggerer", "dag_processor")


def airflow_bin() -> Path:
    """The ``airflow`` entry point of the interpreter running us (the project's venv)."""
    return Path(sys.executable).parent / "airflow"


def airflow_home(home: StackHome) -> Path:
    return home.data_dir("airflow")


def scratch_dags_folder(home: StackHome) -> Path:
    """A second DAG bundle, empty but for DAGs an integration test writes and removes (never the repo's dags/)."""
    return airflow_home(home) / "test-dags"


def _bundles(home: StackHome) -> str:
    local = "airflow.dag_processing.bundles.local.LocalDagBundle"
    return json.dumps([
        {"name": "dags-folder", "classpath": local, "kwargs": {}},
        {"name": "covidflow-test-dags", "classpath": local, "kwargs": {"path": str(scratch_dags_folder(home))}},
    ])  # fmt: skip


def passwords_file(home: StackHome) -> Path:
    return airflow_home(home) / PASSWORDS_FILE


def admin_password(home: StackHome | None = None) -> str:
    """The simple-auth admin password (the README points users at the file it is read from)."""
    home = home or StackHome.from_env()
    return json.loads(passwords_file(home).read_text())[ADMIN_USER]


def _spark_client_env(home: StackHome) -> dict[str, str]:
    """What SparkSubmitOperator's ``spark-submit`` needs: Java 17, SPARK_HOME, loopback address, and the Pythons:
    the driver's (this venv) and the executors' default (the workers' bare Python; jobs ship their own)."""
    from covidflow.stack.services.spark import spark_env

    try:
        env = spark_env(home)
    except RuntimeError:  # no Java 17: Airflow still starts, Spark tasks fail with the log saying why
        return {}
    return {k: env[k] for k in ("SPARK_HOME", "JAVA_HOME", "SPARK_LOCAL_IP", "PYSPARK_DRIVER_PYTHON", "PYSPARK_PYTHON")}


#: SQLite connect args (AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS imports them): four processes share one
#: file, so a writer waits up to 60 s for the lock instead of failing after sqlite's default 5 s.
SQLITE_CONNECT_ARGS = {"timeout": 60, "check_same_thread": False}
SQLITE_CONNECT_ARGS_ASYNC = {"timeout": 60}


def airflow_env(home: StackHome) -> dict[str, str]:
    """Every AIRFLOW__* setting of the local Airflow, plus the connections; reused by CLI helpers and tests."""
    ahome = airflow_home(home)
    fernet_key = local_secret(home, "airflow_fernet_key", nbytes=32) + "="  # 32 bytes, urlsafe base64, padded
    base_url = f"http://{HOST}:{settings.AIRFLOW_PORT}"
    venv_bin = str(airflow_bin().parent)
    env = {
        "AIRFLOW_HOME": str(ahome),
        "COVIDFLOW_HOME": str(home.root),
        # spark-submit, airflow and the project's tools come from the venv, whatever PATH the user has
        "PATH": venv_bin + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(covidflow.PROJECT_ROOT / "dags"),
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": _bundles(home),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(covidflow.PROJECT_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        # LocalExecutor starts `parallelism` worker processes up front (default 32): 2 cores need few.
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__FERNET_KEY": fernet_key,
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file(home)),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base_url}/execution/",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{ahome / 'airflow.db'}",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": f"{__name__}.SQLITE_CONNECT_ARGS",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS_ASYNC": f"{__name__}.SQLITE_CONNECT_ARGS_ASYNC",
        "AIRFLOW__API__HOST": HOST,
        "AIRFLOW__API__PORT": str(settings.AIRFLOW_PORT),
        "AIRFLOW__API__BASE_URL": base_url,
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__SECRET_KEY": local_secret(home, "airflow_api_secret_key"),
        # Every component must sign and check task tokens with the same secret.
        "AIRFLOW__API_AUTH__JWT_SECRET": local_secret(home, "airflow_jwt_secret", nbytes=32),
        # New DAG files show up within ~30 s instead of 5 min.
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(ahome / "logs"),
        **_spark_client_env(home),
        **airflow_conn_env(home),
    }
    return env


def health(timeout: float = 3.0) -> dict | None:
    """The API server's health document, or None when it does not answer."""
    return http_json(f"{settings.AIRFLOW_URL}/api/v2/monitor/health", timeout=timeout)


class AirflowService(Service):
    name = "airflow"
    port = settings.AIRFLOW_PORT
    start_timeout = 180.0
    heap = "n/a (Python; about 1 GB for the four components)"

    def prepare(self, home: StackHome) -> None:
        """Seed the admin password (readable by root only), then migrate the database once per Airflow version."""
        pw_file = passwords_file(home)
        if not pw_file.exists():
            pw_file.write_text(json.dumps({ADMIN_USER: local_secret(home, "airflow_admin_password")}) + "\n")
        pw_file.chmod(0o600)
        scratch_dags_folder(home).mkdir(parents=True, exist_ok=True)
        marker = airflow_home(home) / f".db-migrated-{version('apache-airflow')}"
        database = airflow_home(home) / "airflow.db"
        if not (marker.exists() and database.exists()):
            env = {**os.environ, **airflow_env(home)}
            proc = subprocess.run([str(airflow_bin()), "db", "migrate"], env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-20:])
                raise RuntimeError(f"airflow db migrate failed:\n{tail}")
            marker.write_text("ok\n")
        # Write-ahead logging lets the API read while the scheduler writes (the mode is stored in the file).
        with contextlib.closing(sqlite3.connect(database)) as db:
            db.execute("PRAGMA journal_mode=WAL")

    def processes(self, home: StackHome) -> list[ProcessSpec]:
        env = airflow_env(home)
        cwd = airflow_home(home)
        return [
            ProcessSpec(f"airflow-{name}", [str(airflow_bin()), name, *args], env=env, cwd=cwd)
            for name, args in COMMANDS.items()
        ]

    def is_healthy(self) -> bool:
        doc = health()
        if not doc:
            return False
        return all((doc.get(c) or {}).get("status") == "healthy" for c in HEALTH_COMPONENTS)
