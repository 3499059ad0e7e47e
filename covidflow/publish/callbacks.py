"""Failure callbacks shared by every covidflow DAG: one greppable line per failure, same shape everywhere."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("covidflow.failures")


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


def log_failure(context: dict[str, Any]) -> None:
    """on_failure_callback for DAGs and tasks: never raises (a failing callback hides the real failure)."""
    try:
        log.error(failure_line(context))
    except Exception:  # pragma: no cover - defensive
        log.exception("failure callback could not summarise the context")


def log_retry(context: dict[str, Any]) -> None:
    """on_retry_callback: the same line as a failure, labelled RETRY, so every failed attempt is greppable."""
    try:
        log.warning(failure_line(context, "RETRY"))
    except Exception:  # pragma: no cover - defensive
        log.exception("retry callback could not summarise the context")
