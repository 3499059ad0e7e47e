"""The failure convention: one log line, and a POST to a real local HTTP server when the webhook connection exists."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import airflow.providers.http.hooks.http  # noqa: F401  (configures Airflow's logging before caplog attaches)
import pytest

from covidflow.ops.callbacks import WEBHOOK_CONN_ID, deadline_missed, on_failure, on_retry

ENV = f"AIRFLOW_CONN_{WEBHOOK_CONN_ID.upper()}"


class Receiver:
    def __init__(self, status: int) -> None:
        self.requests: list[tuple[str, str, dict[str, Any]]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((self.path, self.headers["Content-Type"], json.loads(body)))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture()
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    r = Receiver(204)
    conn = {"conn_type": "http", "host": "127.0.0.1", "port": r.port, "schema": "http", "extra": {"endpoint": "/hook"}}
    monkeypatch.setenv(ENV, json.dumps(conn))
    yield r
    r.server.shutdown()


def context(exc: Exception | None = None) -> dict[str, Any]:
    ti = SimpleNamespace(dag_id="covidflow_freshness", run_id="manual__1", task_id="check_freshness",
                         map_index=-1, try_number=1)  # fmt: skip
    return {"ti": ti, "exception": exc}


EXPECTED_LINE = (
    "FAILED dag=covidflow_freshness run=manual__1 task=check_freshness try=1 "
    "error=AirflowFailException: 1 source(s) late:"
)


def _exc() -> Exception:
    from airflow.sdk.exceptions import AirflowFailException

    return AirflowFailException("1 source(s) late:\nLATE spf_vacsi: ...")


def test_failure_is_logged_and_posted(receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="covidflow.failures"):
        on_failure(context(_exc()))
    assert receiver.requests == [
        ("/hook", "application/json",
         {"text": EXPECTED_LINE, "event": "failed", "dag_id": "covidflow_freshness", "run_id": "manual__1",
          "task_id": "check_freshness"})
    ]  # fmt: skip
    assert [r.getMessage() for r in caplog.records] == [
        EXPECTED_LINE,
        f"failure summary posted to {WEBHOOK_CONN_ID}: HTTP 204",
    ]


def test_without_the_connection_it_only_logs(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv(ENV, raising=False)
    with caplog.at_level(logging.INFO, logger="covidflow.failures"):
        on_failure(context(_exc()))
    assert [r.getMessage() for r in caplog.records] == [EXPECTED_LINE]


def test_a_failing_webhook_never_raises(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    r = Receiver(500)
    conn = {"conn_type": "http", "host": "127.0.0.1", "port": r.port, "schema": "http"}
    monkeypatch.setenv(ENV, json.dumps(conn))
    try:
        with caplog.at_level(logging.INFO, logger="covidflow.failures"):
            on_failure(context(_exc()))
    finally:
        r.server.shutdown()
    assert len(r.requests) == 1
    messages = [rec.getMessage() for rec in caplog.records]
    assert messages[0] == EXPECTED_LINE
    assert messages[1].startswith(f"failure summary NOT posted to {WEBHOOK_CONN_ID}: AirflowException: 500:")


def test_a_run_failed_by_a_task_is_logged_not_alerted_again(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    """The DAG-level callback of a run failed by a task (the task's own callback already alerted, with the error)."""
    with caplog.at_level(logging.INFO, logger="covidflow.failures"):
        on_failure({**context(), "reason": "task_failure"})
    assert receiver.requests == []
    assert [r.getMessage() for r in caplog.records] == [
        "FAILED dag=covidflow_freshness run=manual__1 task=check_freshness try=1 error=task_failure "
        "(alerted by the failed task's callback)"
    ]


def test_a_run_failed_for_another_reason_is_alerted(receiver: Receiver) -> None:
    on_failure({**context(), "reason": "timed_out"})
    assert [body["text"] for _, _, body in receiver.requests] == [
        "FAILED dag=covidflow_freshness run=manual__1 task=check_freshness try=1 error=timed_out"
    ]


def test_a_retry_is_logged_not_posted(receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="covidflow.failures"):
        on_retry(context(_exc()))
    assert receiver.requests == []
    assert [r.getMessage() for r in caplog.records] == [EXPECTED_LINE.replace("FAILED", "RETRY", 1)]


def test_a_missed_deadline_is_logged_and_posted(receiver: Receiver) -> None:
    # The context the Airflow 3.3 scheduler builds (Deadline.handle_miss): the run as the REST API shows it.
    ctx = {"dag_run": {"dag_id": "covidflow_freshness", "dag_run_id": "scheduled__2", "state": "running",
                       "end_date": None},
           "deadline": {"id": "0193", "deadline_time": "2026-01-01T06:30:00+00:00"}}  # fmt: skip
    text = asyncio.run(deadline_missed(context=ctx, dag_id="covidflow_freshness", message="freshness check overran"))
    line = (
        "DEADLINE dag=covidflow_freshness run=scheduled__2 state=running deadline=2026-01-01 06:30:00+00:00 "
        "error=freshness check overran"
    )
    assert text == line
    assert receiver.requests == [
        ("/hook", "application/json",
         {"text": line, "event": "deadline", "dag_id": "covidflow_freshness", "run_id": "scheduled__2",
          "task_id": None})
    ]  # fmt: skip
