"""The one failure convention for every covidflow DAG: a greppable log line, an optional webhook and e-mail.

The line is ``failure_line``: the same shape for every DAG, so on-call can grep one format. Where it goes besides
the log is configuration, not code: when the Airflow connection ``covidflow_alerts_webhook`` (type http) is
defined, the summary is POSTed to it as JSON; when ``covidflow_alerts_smtp`` (type smtp, extra ``to``) is
defined, it is e-mailed through the SMTP provider's hook. No connection, nothing sent. Callbacks never raise: a
failing callback would hide the failure it reports.
"""

from __future__ import annotations

import asyncio
import html
import logging
import re
from datetime import datetime, timedelta
from typing import Any

log = logging.getLogger("covidflow.failures")
WEBHOOK_CONN_ID = "covidflow_alerts_webhook"
SMTP_CONN_ID = "covidflow_alerts_smtp"
WEBHOOK_TIMEOUT_S = 10
SUBJECT_MAX = 200


def failure_line(context: dict[str, Any], label: str = "FAILED") -> str:
    """``FAILED dag=<id> run=<id> task=<id>[<map index>] try=<n> error=<Type: first line>`` (or ``RETRY ...``)."""
    ti = context.get("ti") or context.get("task_instance")
    dag_run = context.get("dag_run")
    dag_id = getattr(ti, "dag_id", None) or getattr(dag_run, "dag_id", "?")
    run_id = getattr(ti, "run_id", None) or getattr(dag_run, "run_id", "?")
    task_id = getattr(ti, "task_id", "-")
    map_index = getattr(ti, "map_index", -1)
    where = f"{task_id}[{map_index}]" if isinstance(map_index, int) and map_index >= 0 else task_id
    error = context.get("exception")
    if error is None and context.get("reason"):
        error_text = str(context["reason"])
    elif error is None:
        error_text = "unknown"
    else:
        first = (str(error).strip().splitlines() or [""])[0]
        error_text = f"{type(error).__name__}: {first}"[:500]
    try_number = getattr(ti, "try_number", "?")
    return f"{label} dag={dag_id} run={run_id} task={where} try={try_number} error={error_text}"


def _summary(context: dict[str, Any], label: str) -> dict[str, Any]:
    ti = context.get("ti") or context.get("task_instance")
    dag_run = context.get("dag_run")
    return {
        "text": failure_line(context, label),
        "event": label.lower(),
        "dag_id": getattr(ti, "dag_id", None) or getattr(dag_run, "dag_id", None),
        "run_id": getattr(ti, "run_id", None) or getattr(dag_run, "run_id", None),
        "task_id": getattr(ti, "task_id", None),
    }


def _connection(conn_id: str) -> Any | None:
    """The Airflow connection, or None when it is not defined (an alert channel is optional)."""
    from airflow.sdk import BaseHook

    try:
        return BaseHook.get_connection(conn_id)
    except Exception as exc:  # AirflowNotFoundException, or no secrets backend reachable
        log.debug("no connection %s (%s): not sent there", conn_id, exc)
        return None


def post_webhook(payload: dict[str, Any], conn_id: str = WEBHOOK_CONN_ID) -> int | None:
    """POST ``payload`` as JSON to the connection's URL (extra ``endpoint`` = path); None when not configured."""
    conn = _connection(conn_id)
    if conn is None:
        return None
    from airflow.providers.http.hooks.http import HttpHook

    endpoint = (conn.extra_dejson or {}).get("endpoint", "")
    hook = HttpHook(method="POST", http_conn_id=conn_id)
    response = hook.run(endpoint=endpoint, json=payload, extra_options={"timeout": WEBHOOK_TIMEOUT_S})
    return response.status_code


def send_email(summary: dict[str, Any], conn_id: str = SMTP_CONN_ID) -> list[str] | None:
    """E-mail the summary line (subject and body) to the connection's extra ``to``; None when not configured.

    ``to`` is a list, or one string of comma-separated addresses (all a connection URI's query can carry). Host,
    port, login and TLS are SmtpHook's reading of the connection (extra ``from_email``, ``disable_ssl``,
    ``disable_tls``, ``timeout``, ``retry_limit``): the recipients are the only field that is ours.
    """
    conn = _connection(conn_id)
    if conn is None:
        return None
    from airflow.providers.smtp.hooks.smtp import SmtpHook

    extra = conn.extra_dejson or {}
    to = extra.get("to")
    recipients = re.split(r"\s*[,;]\s*", to.strip()) if isinstance(to, str) else list(to or [])
    recipients = [r for r in recipients if r]
    if not recipients:
        raise ValueError(f"connection {conn_id} has no recipients (extra 'to')")
    text = summary["text"]
    subject = text if len(text) <= SUBJECT_MAX else text[: SUBJECT_MAX - 1] + "…"
    with SmtpHook(smtp_conn_id=conn_id) as hook:
        hook.send_email_smtp(
            to=recipients, subject=subject, html_content=f"<pre>{html.escape(text)}</pre>",
            from_email=extra.get("from_email"),
        )  # fmt: skip
    return recipients


def deliver(summary: dict[str, Any], what: str) -> None:
    """Send the summary to every configured channel; a channel that fails is logged, never raised."""
    try:
        status = post_webhook(summary)
        if status is not None:
            log.info("%s summary posted to %s: HTTP %s", what, WEBHOOK_CONN_ID, status)
    except Exception as exc:
        log.error("%s summary NOT posted to %s: %s: %s", what, WEBHOOK_CONN_ID, type(exc).__name__, exc)
    try:
        recipients = send_email(summary)
        if recipients is not None:
            log.info("%s summary e-mailed via %s to %s", what, SMTP_CONN_ID, ", ".join(recipients))
    except Exception as exc:
        log.error("%s summary NOT e-mailed via %s: %s: %s", what, SMTP_CONN_ID, type(exc).__name__, exc)


def notify(context: dict[str, Any], label: str = "FAILED") -> dict[str, Any]:
    """Log the summary line, then send it to the configured channels; returns the summary."""
    summary = _summary(context, label)
    (log.error if label == "FAILED" else log.warning)(summary["text"])
    deliver(summary, "failure")
    return summary


def on_failure(context: dict[str, Any]) -> None:
    """on_failure_callback for DAGs and tasks.

    A run that failed because a task failed (Airflow's reason ``task_failure``) was already alerted by that task's
    own callback, with the error: the DAG-level call only logs, so on-call gets one alert per failure, not two.
    """
    try:
        if context.get("reason") == "task_failure" and context.get("exception") is None:
            log.error("%s (alerted by the failed task's callback)", failure_line(context))
            return
        notify(context, "FAILED")
    except Exception:  # pragma: no cover - defensive
        log.exception("failure callback could not summarise the context")


def on_retry(context: dict[str, Any]) -> None:
    """on_retry_callback: the same line labelled RETRY (log only: an alert per retry is noise)."""
    try:
        log.warning(failure_line(context, "RETRY"))
    except Exception:  # pragma: no cover - defensive
        log.exception("retry callback could not summarise the context")


def dag_defaults(retries: int, retry_delay: timedelta, owner: str = "covidflow") -> dict[str, Any]:
    """``default_args`` of every covidflow DAG: explicit retries, and failures reported the one way."""
    return {
        "owner": owner,
        "retries": retries,
        "retry_delay": retry_delay,
        "on_failure_callback": on_failure,
        "on_retry_callback": on_retry,
    }


def deadline_line(context: dict[str, Any], message: str, dag_id: str | None = None) -> str:
    """``DEADLINE dag=<id> run=<id> state=<run state> deadline=<time> error=<message>``."""
    run = context.get("dag_run") or {}
    deadline = context.get("deadline") or {}
    run_id = run.get("dag_run_id") or run.get("run_id")
    return (
        f"DEADLINE dag={run.get('dag_id') or dag_id} run={run_id} state={run.get('state')} "
        f"deadline={_when(deadline.get('deadline_time')) or '?'} error={message}"
    )


def _when(value: Any) -> datetime | None:
    """A datetime from the context (an ISO string after the trip through the trigger table, or a datetime)."""
    if isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None


def _ended_in_time(context: dict[str, Any]) -> bool:
    """Did the run end before its deadline? Unknown counts as no: better one alert too many than none."""
    ended = _when((context.get("dag_run") or {}).get("end_date"))
    due = _when((context.get("deadline") or {}).get("deadline_time"))
    try:
        return ended is not None and due is not None and ended <= due
    except TypeError:  # naive against aware
        return False


async def deadline_missed(
    context: dict[str, Any] | None = None, dag_id: str | None = None, message: str = "deadline missed", **_: Any
) -> str:
    """AsyncCallback of a Deadline Alert: the run had not finished at its deadline.

    Airflow 3.3 awaits it in the triggerer (``CallbackTrigger``) with the alert's kwargs and
    ``context={"dag_run": <REST DAGRun JSON: dag_id, dag_run_id, state, end_date...>, "deadline": {"id",
    "deadline_time"}}``, built by the scheduler when it sees the deadline pass. Airflow prunes deadlines only
    when a run succeeds, so a run that failed early still "misses" its deadline later (apache/airflow#60927):
    on_failure reported that one, so it is only logged here. The return value is stored as the callback output.
    """
    try:
        context = context or {}
        text = deadline_line(context, message, dag_id)
        if _ended_in_time(context):
            log.info("%s (the run ended before its deadline: not alerted)", text)
            return f"not alerted: {text}"
        log.error(text)
        run = context.get("dag_run") or {}
        summary = {"text": text, "event": "deadline", "dag_id": run.get("dag_id") or dag_id,
                   "run_id": run.get("dag_run_id") or run.get("run_id"), "task_id": None}  # fmt: skip
        await asyncio.to_thread(deliver, summary, "deadline")
        return text
    except Exception:  # pragma: no cover - defensive
        log.exception("deadline callback could not summarise the context")
        return "deadline callback failed"
