"""E-mail alerts of the failure convention, and the Deadline Alert callback, with a fake SmtpHook.

The connection comes from ``AIRFLOW_CONN_COVIDFLOW_ALERTS_SMTP`` as in production; only the hook that would talk
SMTP is replaced. The real SMTP round trip is tests/integration/test_ops_alerts.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, ClassVar

import airflow.providers.http.hooks.http  # noqa: F401  (configures Airflow's logging before caplog attaches)
import airflow.providers.smtp.hooks.smtp as smtp_module
import pytest

from covidflow.ops.callbacks import SMTP_CONN_ID, WEBHOOK_CONN_ID, deadline_missed, on_failure, on_retry, send_email

REAL_SMTP_HOOK = smtp_module.SmtpHook
SMTP_ENV = f"AIRFLOW_CONN_{SMTP_CONN_ID.upper()}"
WEBHOOK_ENV = f"AIRFLOW_CONN_{WEBHOOK_CONN_ID.upper()}"
LINE = "FAILED dag=covidflow_quality run=manual__1 task=check[2] try=1 error=ValueError: 3 < 4 & 5 > 2"


class FakeSmtpHook:
    """Records what SmtpHook would send; ``fail`` makes the send raise like a refused connection."""

    sent: ClassVar[list[dict[str, Any]]] = []
    fail: ClassVar[Exception | None] = None

    def __init__(self, smtp_conn_id: str) -> None:
        self.conn_id = smtp_conn_id

    def __enter__(self) -> FakeSmtpHook:
        if FakeSmtpHook.fail:
            raise FakeSmtpHook.fail
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def send_email_smtp(self, **kwargs: Any) -> None:
        FakeSmtpHook.sent.append({"conn_id": self.conn_id, **kwargs})


@pytest.fixture(autouse=True)
def fake_smtp(monkeypatch: pytest.MonkeyPatch) -> type[FakeSmtpHook]:
    monkeypatch.setattr(smtp_module, "SmtpHook", FakeSmtpHook)
    monkeypatch.setattr(FakeSmtpHook, "sent", [])
    monkeypatch.setattr(FakeSmtpHook, "fail", None)
    monkeypatch.delenv(WEBHOOK_ENV, raising=False)
    return FakeSmtpHook


def smtp_connection(monkeypatch: pytest.MonkeyPatch, **extra: Any) -> None:
    conn = {"conn_type": "smtp", "host": "smtp.example.org", "port": 587, "extra": extra}
    monkeypatch.setenv(SMTP_ENV, json.dumps(conn))


def context() -> dict[str, Any]:
    ti = SimpleNamespace(dag_id="covidflow_quality", run_id="manual__1", task_id="check", map_index=2, try_number=1)
    return {"ti": ti, "exception": ValueError("3 < 4 & 5 > 2\nsecond line")}


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "covidflow.failures"]


def test_a_failure_is_emailed_to_the_connections_recipients(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    smtp_connection(monkeypatch, to=["oncall@example.org", "team@example.org"], from_email="airflow@example.org")
    with caplog.at_level(logging.INFO, logger="covidflow.failures"):
        on_failure(context())
    assert FakeSmtpHook.sent == [
        {"conn_id": SMTP_CONN_ID, "to": ["oncall@example.org", "team@example.org"], "subject": LINE,
         "html_content": "<pre>FAILED dag=covidflow_quality run=manual__1 task=check[2] try=1 "
                         "error=ValueError: 3 &lt; 4 &amp; 5 &gt; 2</pre>",
         "from_email": "airflow@example.org"}
    ]  # fmt: skip
    assert messages(caplog) == [
        LINE,
        f"failure summary e-mailed via {SMTP_CONN_ID} to oncall@example.org, team@example.org",
    ]


def test_without_the_connection_nothing_is_emailed(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv(SMTP_ENV, raising=False)
    with caplog.at_level(logging.INFO, logger="covidflow.failures"):
        on_failure(context())
    assert FakeSmtpHook.sent == []
    assert messages(caplog) == [LINE]


def test_recipients_may_be_a_string_and_a_long_line_is_cut_in_the_subject(monkeypatch: pytest.MonkeyPatch) -> None:
    smtp_connection(monkeypatch, to="oncall@example.org, team@example.org")
    text = "FAILED " + "x" * 300
    assert send_email({"text": text}) == ["oncall@example.org", "team@example.org"]
    (sent,) = FakeSmtpHook.sent
    assert sent["to"] == ["oncall@example.org", "team@example.org"]
    assert sent["from_email"] is None  # SmtpHook then requires from_email in the extra
    assert len(sent["subject"]) == 200 and sent["subject"].endswith("…") and text in sent["html_content"]


@pytest.mark.parametrize(
    ("extra", "fail", "error"),
    [
        ({"from_email": "airflow@example.org"}, None,
         f"failure summary NOT e-mailed via {SMTP_CONN_ID}: ValueError: connection {SMTP_CONN_ID} has no "
         "recipients (extra 'to')"),
        ({"to": ["oncall@example.org"]}, ConnectionRefusedError(111, "Connection refused"),
         f"failure summary NOT e-mailed via {SMTP_CONN_ID}: ConnectionRefusedError: [Errno 111] Connection refused"),
    ],
)  # fmt: skip
def test_a_failing_email_is_logged_never_raised(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    extra: dict[str, Any],
    fail: Exception | None,
    error: str,
) -> None:
    smtp_connection(monkeypatch, **extra)
    monkeypatch.setattr(FakeSmtpHook, "fail", fail)
    with caplog.at_level(logging.INFO, logger="covidflow.failures"):
        on_failure(context())
    assert messages(caplog) == [LINE, error]


def test_a_retry_is_not_emailed(monkeypatch: pytest.MonkeyPatch) -> None:
    smtp_connection(monkeypatch, to=["oncall@example.org"])
    on_retry(context())
    assert FakeSmtpHook.sent == []


def deadline_context(state: str, end_date: str | None, due: Any) -> dict[str, Any]:
    """What Airflow 3.3's scheduler passes (Deadline.handle_miss): the run as REST JSON, and the deadline."""
    run = {"dag_id": "covidflow_freshness", "dag_run_id": "scheduled__2026-01-01T06:00:00+00:00", "state": state,
           "end_date": end_date, "queued_at": "2026-01-01T06:00:00Z"}  # fmt: skip
    return {"dag_run": run, "deadline": {"id": "01936f2e-0000-7000-8000-000000000000", "deadline_time": due}}


DUE = "2026-01-01T06:30:00Z"
EXPECTED = (
    "DEADLINE dag=covidflow_freshness run=scheduled__2026-01-01T06:00:00+00:00 state={state} "
    "deadline=2026-01-01 06:30:00+00:00 error=freshness check overran"
)


@pytest.mark.parametrize(
    ("state", "end_date", "due"),
    [
        ("running", None, DUE),
        ("queued", None, datetime(2026, 1, 1, 6, 30, tzinfo=UTC)),  # a datetime when not round-tripped as JSON
        ("success", "2026-01-01T06:30:02Z", DUE),  # finished after the deadline, before the scheduler looked
        ("failed", "2026-01-01T06:45:00Z", DUE),
        ("failed", "2026-01-01T06:01:00", DUE),  # naive against aware: unknown, so alerted
    ],
)
def test_a_run_still_going_at_its_deadline_is_emailed(
    monkeypatch: pytest.MonkeyPatch, state: str, end_date: str | None, due: Any
) -> None:
    smtp_connection(monkeypatch, to=["oncall@example.org"], from_email="airflow@example.org")
    ctx = deadline_context(state, end_date, due)
    text = asyncio.run(deadline_missed(context=ctx, dag_id="covidflow_freshness", message="freshness check overran"))
    assert text == EXPECTED.format(state=state)
    assert [(m["to"], m["subject"]) for m in FakeSmtpHook.sent] == [(["oncall@example.org"], text)]


def test_a_run_that_ended_before_its_deadline_is_only_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Airflow 3.3.2 keeps a failed run's deadline and fires it later (apache/airflow#60927)."""
    smtp_connection(monkeypatch, to=["oncall@example.org"])
    ctx = deadline_context("failed", "2026-01-01T06:01:00Z", DUE)
    with caplog.at_level(logging.INFO, logger="covidflow.failures"):
        text = asyncio.run(deadline_missed(context=ctx, message="freshness check overran"))
    line = EXPECTED.format(state="failed")
    assert text == f"not alerted: {line}"
    assert FakeSmtpHook.sent == []
    assert messages(caplog) == [f"{line} (the run ended before its deadline: not alerted)"]


def test_a_deadline_callback_without_context_still_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    smtp_connection(monkeypatch, to=["oncall@example.org"])
    text = asyncio.run(deadline_missed(dag_id="covidflow_freshness", message="overran"))
    assert text == "DEADLINE dag=covidflow_freshness run=None state=None deadline=? error=overran"
    assert [m["subject"] for m in FakeSmtpHook.sent] == [text]


def test_the_documented_uri_gives_the_hook_what_it_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/operations.md's example: STARTTLS on 587, sender and recipients in the URI's query."""
    from airflow.sdk import BaseHook

    password = "placeholder"
    query = "from_email=alerts%40example.org&to=oncall%40example.org%2Cteam%40example.org&disable_ssl=true"
    uri = f"smtp://alerts%40example.org:{password}@smtp.example.org:587?{query}"
    monkeypatch.setenv(SMTP_ENV, uri)
    hook = REAL_SMTP_HOOK(smtp_conn_id=SMTP_CONN_ID)
    hook.smtp_connection = BaseHook.get_connection(SMTP_CONN_ID)
    assert (hook.host, hook.port, hook.smtp_user, hook.smtp_password) == ("smtp.example.org", 587,
                                                                          "alerts@example.org", password)  # fmt: skip
    assert (hook.use_ssl, hook.smtp_starttls, hook.from_email) == (False, True, "alerts@example.org")
    assert send_email({"text": "FAILED dag=d"}) == ["oncall@example.org", "team@example.org"]
