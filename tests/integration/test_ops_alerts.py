"""Alerts through the running Airflow: a failing task is e-mailed, an overrun Deadline Alert is posted and e-mailed.

The running scheduler, triggerer and api-server read ``AIRFLOW_CONN_*`` only at start, so the alert connections
are created through the REST API (Airflow's database, which every component consults after the environment) and
deleted afterwards; a connection already defined there is never overwritten. They point at a webhook receiver and
an aiosmtpd server this test starts on 127.0.0.1.

The DAGs are test-only: their file goes into the local Airflow's second DAG bundle, ``covidflow-test-dags``
(``$COVIDFLOW_HOME/data/airflow/test-dags``, outside the repository), and is removed with its metadata at the end.
Needs: ``covidflow stack up airflow``.
"""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from covidflow import settings
from covidflow.ops.callbacks import SMTP_CONN_ID, WEBHOOK_CONN_ID
from covidflow.stack.airflow_api import AirflowClient
from covidflow.stack.airflow_api import request as _request
from covidflow.stack.home import StackHome
from covidflow.stack.services.airflow import airflow_home, scratch_dags_folder

pytestmark = pytest.mark.integration

TAG = uuid.uuid4().hex[:8]
FAIL_DAG = f"it_ops_alerts_fail_{TAG}"
SLOW_DAG = f"it_ops_alerts_slow_{TAG}"
ERROR = f"RuntimeError: disk on fire {TAG}"
FAIL_DEADLINE_S = 90  # far beyond the failing run: its deadline passes after the run has failed
SLOW_DEADLINE_S = 5  # far below the slow run: its deadline passes while the task still sleeps
DAG_FILE = scratch_dags_folder(StackHome.from_env()) / f"it_ops_alerts_{TAG}.py"
RECIPIENTS = ["oncall@example.org", "data-team@example.org"]

DAGS = f'''"""Test-only DAGs of tests/integration/test_ops_alerts.py (written by the test, removed after it)."""

import time
from datetime import datetime, timedelta

from airflow.sdk import DAG, AsyncCallback, DeadlineAlert, DeadlineReference, task

from covidflow.ops.callbacks import dag_defaults, deadline_missed, on_failure


def alert(dag_id, seconds):
    callback = AsyncCallback(deadline_missed, kwargs={{"dag_id": dag_id, "message": "test run overran"}})
    return DeadlineAlert(reference=DeadlineReference.DAGRUN_QUEUED_AT, interval=timedelta(seconds=seconds),
                         callback=callback)


common = dict(schedule=None, start_date=datetime(2024, 1, 1), catchup=False, tags=["covidflow", "test"],
              doc_md=__doc__, default_args=dag_defaults(0, timedelta(seconds=1), owner="covidflow-test"),
              on_failure_callback=on_failure)

with DAG(dag_id="{FAIL_DAG}", deadline=alert("{FAIL_DAG}", {FAIL_DEADLINE_S}), **common):

    @task(task_id="explode")
    def explode():
        raise RuntimeError("disk on fire {TAG}")

    explode()

with DAG(dag_id="{SLOW_DAG}", deadline=alert("{SLOW_DAG}", {SLOW_DEADLINE_S}), **common):

    @task(task_id="dawdle")
    def dawdle():
        time.sleep(25)

    dawdle()
'''


# -- receivers --------------------------------------------------------------------------------------------------


class Webhook:
    """A local HTTP server that records every JSON body POSTed to it."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


class Mailbox:
    """aiosmtpd handler: keeps every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], EmailMessage]] = []
        self.port = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.content, policy=policy.default)
        self.messages.append((list(envelope.rcpt_tos), message))  # type: ignore[arg-type]
        return "250 Message accepted for delivery"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def body_text(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("html", "plain"))
    return part.get_content() if part is not None else ""


def eventually(find: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := find():
            return found
        time.sleep(1)
    pytest.fail(f"{what}: nothing after {timeout:.0f} s")


# -- fixtures ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client() -> AirflowClient:
    try:
        _request("GET", "/api/v2/monitor/health")
    except OSError as exc:
        pytest.fail(f"Airflow does not answer at {settings.AIRFLOW_URL} ({exc}); run `covidflow stack up airflow`")
    return AirflowClient()


@pytest.fixture(scope="module")
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.server.shutdown()


@pytest.fixture(scope="module")
def mailbox() -> Iterator[Mailbox]:
    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=free_port())
    controller.start()
    box.port = controller.port
    yield box
    controller.stop()


@pytest.fixture(scope="module")
def alert_connections(client: AirflowClient, webhook: Webhook, mailbox: Mailbox) -> Iterator[None]:
    """``covidflow_alerts_webhook`` and ``covidflow_alerts_smtp`` in Airflow's database, for this module only."""
    smtp_extra = {"from_email": "airflow@example.org", "to": RECIPIENTS, "disable_ssl": True, "disable_tls": True,
                  "timeout": 10, "retry_limit": 0}  # fmt: skip
    wanted = {
        WEBHOOK_CONN_ID: {"conn_type": "http", "host": "127.0.0.1", "port": webhook.port, "schema": "http",
                          "extra": json.dumps({"endpoint": "/alerts"})},
        SMTP_CONN_ID: {"conn_type": "smtp", "host": "127.0.0.1", "port": mailbox.port,
                       "extra": json.dumps(smtp_extra)},
    }  # fmt: skip
    for conn_id in wanted:  # someone's real alert connection is never overwritten nor deleted
        if "connection_id" in client.call("GET", f"/api/v2/connections/{conn_id}", ok=(200, 404)):
            pytest.fail(f"connection {conn_id} already exists in the running Airflow: not overwritten")
    created = []
    try:
        for conn_id, conn in wanted.items():
            client.call("POST", "/api/v2/connections", {"connection_id": conn_id, **conn}, ok=(201,))
            created.append(conn_id)
        yield
    finally:
        for conn_id in created:
            client.call("DELETE", f"/api/v2/connections/{conn_id}", ok=(204, 404))


@pytest.fixture(scope="module")
def test_dags(client: AirflowClient) -> Iterator[None]:
    assert DAG_FILE.parent.is_dir(), f"{DAG_FILE.parent} is missing: restart Airflow (covidflow stack up airflow)"
    DAG_FILE.write_text(DAGS)
    try:
        client.wait_for_dags([FAIL_DAG, SLOW_DAG], timeout=300)
        yield
    finally:
        DAG_FILE.unlink(missing_ok=True)
        for dag_id in (FAIL_DAG, SLOW_DAG):
            client.retire_dag(dag_id)
        logs = airflow_home(StackHome.from_env()) / "logs"  # task and parse logs of these DAGs only
        for folder in (logs / f"dag_id={FAIL_DAG}", logs / f"dag_id={SLOW_DAG}"):
            shutil.rmtree(folder, ignore_errors=True)
        for parse_log in logs.glob(f"dag_processor/*/covidflow-test-dags/{DAG_FILE.name}.log"):
            parse_log.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def failed_run(client: AirflowClient, alert_connections: None, test_dags: None) -> str:
    """One run of the failing DAG, finished (failed): its run id."""
    run_id = client.trigger(FAIL_DAG)
    assert client.wait(FAIL_DAG, run_id, timeout=300) == ("failed", {"explode": "failed"})
    return run_id


def run_info(client: AirflowClient, dag_id: str, run_id: str) -> dict[str, Any]:
    return client.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id)}")


def deadlines(client: AirflowClient, dag_id: str, run_id: str) -> list[dict[str, Any]]:
    """The run's deadlines as the UI shows them (``missed`` flips when the scheduler hands the callback over)."""
    return client.call("GET", f"/ui/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id)}/deadlines")["deadlines"]


def mails_about(mailbox: Mailbox, prefix: str) -> list[tuple[list[str], EmailMessage]]:
    return [(to, m) for to, m in mailbox.messages if str(m["Subject"]).startswith(prefix)]


# -- tests ------------------------------------------------------------------------------------------------------


def test_a_failing_task_is_emailed_and_posted(webhook: Webhook, mailbox: Mailbox, failed_run: str) -> None:
    run_id = failed_run
    line = f"FAILED dag={FAIL_DAG} run={run_id} task=explode try=1 error={ERROR}"
    found = eventually(lambda: mails_about(mailbox, line), 60, f"no e-mail with subject {line!r}")
    to, message = found[0]
    assert to == RECIPIENTS
    assert message["From"] == "airflow@example.org"
    assert message["To"] == ", ".join(RECIPIENTS)
    assert f"<pre>{line}</pre>" in body_text(message)
    assert {"text": line, "event": "failed", "dag_id": FAIL_DAG, "run_id": run_id, "task_id": "explode"} in (
        webhook.bodies
    )
    # The DAG-level callback (the dag-processor runs it once the run has failed) only logs: one alert, not two.
    logs = airflow_home(StackHome.from_env()) / "logs" / "dag_processor"
    dag_line = f"FAILED dag={FAIL_DAG} run={run_id} task=explode try=1 error=task_failure"

    def dag_callback_logged() -> list[str]:
        return [x for f in logs.glob(f"*/*/{DAG_FILE.name}.log") for x in f.read_text(errors="replace").splitlines()
                if dag_line in x and "alerted by the failed task's callback" in x]  # fmt: skip

    eventually(dag_callback_logged, 120, f"the DAG-level failure callback did not log {dag_line!r}")
    assert len(mails_about(mailbox, f"FAILED dag={FAIL_DAG} run={run_id}")) == 1
    assert len([b for b in webhook.bodies if b["text"].startswith(f"FAILED dag={FAIL_DAG} run={run_id}")]) == 1


def test_an_overrun_deadline_is_posted_and_emailed_by_the_triggerer(
    client: AirflowClient, webhook: Webhook, mailbox: Mailbox, alert_connections: None, test_dags: None
) -> None:
    run_id = client.trigger(SLOW_DAG)
    prefix = f"DEADLINE dag={SLOW_DAG} run={run_id} state="

    def posted() -> list[dict[str, Any]]:
        return [b for b in webhook.bodies if b["text"].startswith(prefix)]

    body = eventually(posted, 180, f"no webhook POST starting {prefix!r}")[0]
    assert body["event"] == "deadline" and (body["dag_id"], body["run_id"], body["task_id"]) == (SLOW_DAG, run_id, None)
    assert body["text"].split(" state=")[1].split(" ")[0] in ("queued", "running")  # still going at the deadline
    assert body["text"].endswith(" error=test run overran")
    queued = datetime.fromisoformat(run_info(client, SLOW_DAG, run_id)["queued_at"])
    due = datetime.fromisoformat(body["text"].split(" deadline=")[1].split(" error=")[0])
    assert abs((due - queued).total_seconds() - SLOW_DEADLINE_S) < 1  # DAGRUN_QUEUED_AT + interval
    to, message = eventually(lambda: mails_about(mailbox, prefix), 60, "no DEADLINE e-mail")[0]
    assert to == RECIPIENTS and str(message["Subject"]) == body["text"]
    assert [d["missed"] for d in deadlines(client, SLOW_DAG, run_id)] == [True]
    assert client.wait(SLOW_DAG, run_id, timeout=300) == ("success", {"dawdle": "success"})


def test_a_run_that_failed_before_its_deadline_is_not_alerted_again(
    client: AirflowClient, webhook: Webhook, mailbox: Mailbox, failed_run: str
) -> None:
    """Airflow 3.3.2 still fires a failed run's deadline later (apache/airflow#60927); the callback only logs it."""
    run_id = failed_run
    run = run_info(client, FAIL_DAG, run_id)
    (deadline,) = deadlines(client, FAIL_DAG, run_id)
    assert datetime.fromisoformat(run["end_date"]) < datetime.fromisoformat(deadline["deadline_time"])
    eventually(lambda: deadlines(client, FAIL_DAG, run_id)[0]["missed"], FAIL_DEADLINE_S + 120, "deadline not missed")
    line = f"DEADLINE dag={FAIL_DAG} run={run_id} state=failed"
    log = StackHome.from_env().log_file("airflow-triggerer")
    logged = eventually(
        lambda: [x for x in log.read_text(errors="replace").splitlines() if line in x and "not alerted" in x],
        60, f"no 'not alerted' line in {log}",
    )  # fmt: skip
    assert "(the run ended before its deadline: not alerted)" in logged[0]
    assert not [b for b in webhook.bodies if b["text"].startswith(line)]
    assert not mails_about(mailbox, line)
