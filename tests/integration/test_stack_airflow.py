"""The running Airflow (``covidflow stack up airflow``): health, simple-auth login, DAGs served by the API."""

from __future__ import annotations

import urllib.parse

import pytest

from covidflow import settings
from covidflow.stack.airflow_api import AirflowClient
from covidflow.stack.airflow_api import request as _request
from covidflow.stack.home import StackHome
from covidflow.stack.services.airflow import ADMIN_USER, admin_password, passwords_file

pytestmark = pytest.mark.integration


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
    client = AirflowClient()
    run_id = client.trigger("covidflow_stack_check")
    state, tasks = client.wait("covidflow_stack_check", run_id, timeout=180)
    assert tasks == {name: "success" for name in ("s3", "kafka", "cassandra", "elasticsearch", "spark")}
    assert state == "success"
    # On-call reads task logs in the UI: served from the local files (the log servers are not started).
    run = urllib.parse.quote(run_id)
    log = client.call("GET", f"/api/v2/dags/covidflow_stack_check/dagRuns/{run}/taskInstances/kafka/logs/1")
    events = [line.get("event", "") for line in log["content"]]
    assert any(e.endswith("task_id=kafka/attempt=1.log") for e in events), events[:5]
    assert any(e.startswith("Done. Returned value was: [") and "__consumer_offsets" in e for e in events), events
