"""The running Airflow (``covidflow stack up airflow``): health, simple-auth login, DAGs served by the API."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from covidflow import settings
from covidflow.stack.home import StackHome
from covidflow.stack.services.airflow import ADMIN_USER, admin_password, passwords_file

pytestmark = pytest.mark.integration


def _request(method: str, path: str, body: dict | None = None, token: str | None = None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{settings.AIRFLOW_URL}{path}", data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@pytest.fixture(scope="module")
def airflow_up() -> None:
    try:
        _request("GET", "/api/v2/monitor/health")
    except OSError as exc:
        pytest.fail(f"Airflow does not answer at {settings.AIRFLOW_URL} ({exc}); run `covidflow stack up airflow`")


@pytest.fixture(scope="module")
def token(airflow_up: None) -> str:
    home = StackHome.from_env()
    if not passwords_file(home).exists():
        pytest.fail(f"no simple-auth password file at {passwords_file(home)}; was Airflow started by the stack?")
    status, body = _request("POST", "/auth/token", {"username": ADMIN_USER, "password": admin_password(home)})
    assert status == 201, body
    return body["access_token"]


def test_every_component_is_healthy(airflow_up: None) -> None:
    status, health = _request("GET", "/api/v2/monitor/health")
    assert status == 200
    assert {name: part["status"] for name, part in health.items()} == {
        "metadatabase": "healthy",
        "scheduler": "healthy",
        "triggerer": "healthy",
        "dag_processor": "healthy",
    }


def test_wrong_password_is_refused(airflow_up: None) -> None:
    status, body = _request("POST", "/auth/token", {"username": ADMIN_USER, "password": "not-the-password"})
    assert (status, body) == (401, {"detail": "Invalid credentials"})


def test_api_needs_a_token(airflow_up: None) -> None:
    assert _request("GET", "/api/v2/dags")[0] == 401


def test_admin_lists_the_stack_check_dag(token: str) -> None:
    status, body = _request("GET", "/api/v2/dags?dag_id_pattern=covidflow_stack_check", token=token)
    assert status == 200, body
    dags = {d["dag_id"]: d for d in body["dags"]}
    assert "covidflow_stack_check" in dags
    assert dags["covidflow_stack_check"]["relative_fileloc"] == "covidflow_stack_check.py"
    assert sorted(t["name"] for t in dags["covidflow_stack_check"]["tags"]) == ["covidflow", "stack"]


def test_dag_processor_reports_no_import_errors(token: str) -> None:
    status, body = _request("GET", "/api/v2/importErrors", token=token)
    assert status == 200, body
    assert body["total_entries"] == 0, body["import_errors"]


def test_stack_check_dag_succeeds_through_the_scheduler(token: str) -> None:
    """Needs the whole stack up: each task reaches one service through its AIRFLOW_CONN_* connection."""
    dag = "/api/v2/dags/covidflow_stack_check"
    status, body = _request("PATCH", dag, {"is_paused": False}, token=token)
    assert status == 200, body
    status, run = _request("POST", f"{dag}/dagRuns", {"logical_date": None}, token=token)
    assert status == 200, run
    run_url = f"{dag}/dagRuns/{urllib.parse.quote(run['dag_run_id'])}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        state = _request("GET", run_url, token=token)[1]["state"]
        if state in ("success", "failed"):
            break
        time.sleep(2)
    tasks = _request("GET", f"{run_url}/taskInstances", token=token)[1]["task_instances"]
    assert {t["task_id"]: t["state"] for t in tasks} == {
        name: "success" for name in ("s3", "kafka", "cassandra", "elasticsearch", "spark")
    }
    assert state == "success"
