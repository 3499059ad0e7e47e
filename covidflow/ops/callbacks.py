"""The one failure convention for every covidflow DAG: a greppable log line, and an optional webhook POST.

The line is ``failure_line``: the same shape for every DAG, so on-call can grep one format. When the Airflow
connection ``covidflow_alerts_webhook`` (type http) is defined, the same
summary is POSTed to it as JSON; no connection, no POST. Callbacks never raise: a failing callback would hide the
failure it reports.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

log = logging.getLogger("covidflow.failures")
WEBHOOK_CONN_ID = "covidflow_alerts_webhook"
WEBHOOK_TIMEOUT_S = 10


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


def _webhook_connection(conn_id: str) -> Any | None:
    from airflow.sdk import BaseHook

    try:
        return BaseHook.get_connection(conn_id)
    except Exception as exc:  # AirflowNotFoundException, or no secrets backend reachable
        log.debug("no webhook connection %s (%s): log only", conn_id, exc)
        return None


def post_webhook(payload: dict[str, Any], conn_id: str = WEBHOOK_CONN_ID) -> int | None:
    """POST ``payload`` as JSON to the connection's URL (extra ``endpoint`` = path); None when not configured."""
    conn = _webhook_connection(conn_id)
    if conn is None:
        return None
    from airflow.providers.http.hooks.http import HttpHook

    endpoint = (conn.extra_dejson or {}).get("endpoint", "")
    hook = HttpHook(method="POST", http_conn_id=conn_id)
    response = hook.run(endpoint=endpoint, json=payload, extra_options={"timeout": WEBHOOK_TIMEOUT_S})
    return response.status_code


def notify(context: dict[str, Any], label: str = "FAILED") -> dict[str, Any]:
    """Log the summary line, then POST it to the webhook if one is configured; returns the summary."""
    summary = _summary(context, label)
    (log.error if label == "FAILED" else log.warning)(summary["text"])
    try:
        status = post_webhook(summary)
        if status is not None:
            log.info("failure summary posted to %s: HTTP %s", WEBHOOK_CONN_ID, status)
    except Exception as exc:
        log.error("failure summary NOT posted to %s: %s: %s", WEBHOOK_CONN_ID, type(exc).__name__, exc)
    return summary


def on_failure(context: dict[str, Any]) -> None:
    """on_failure_callback for DAGs and tasks."""
    try:
        notify(context, "FAILED")
    except Exception:  # pragma: no cover - defensive
        log.exception("failure callback could not summarise the context")


def on_retry(context: dict[str, Any]) -> None:
    """on_retry_callback: the same line labelled RETRY (log only: a webhook per retry is noise)."""
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


async def deadline_missed(context: dict[str, Any] | None = None, **kwargs: Any) -> None:
    """AsyncCallback of an Airflow Deadline Alert (runs in the triggerer): a run took too long."""
    context = context or {}
    dag_run = context.get("dag_run") or {}
    dag_id = kwargs.get("dag_id") or (dag_run.get("dag_id") if isinstance(dag_run, dict) else None)
    run_id = dag_run.get("run_id") if isinstance(dag_run, dict) else getattr(dag_run, "run_id", None)
    text = f"DEADLINE dag={dag_id} run={run_id} error={kwargs.get('message', 'deadline missed')}"
    log.error(text)
    payload = {"text": text, "event": "deadline", "dag_id": dag_id, "run_id": run_id, "task_id": None}
    try:
        await asyncio.to_thread(post_webhook, payload)
    except Exception as exc:
        log.error("deadline summary NOT posted to %s: %s: %s", WEBHOOK_CONN_ID, type(exc).__name__, exc)
