"""The ingest DAG's last task, ``purge_obsolete``: after a re-run's publish, delete what the re-run made obsolete.

Most runs are not re-runs, and starting a worker process only to skip would hold every run's end (and so the next
run's wait for new objects) by a task start-up. The task therefore starts in the triggerer (``start_from_trigger``):
:class:`RerunGate` reads the run's re-run params, rendered there, and skips the task at once in an ordinary run.
Only a re-run resumes on a worker, where :func:`covidflow.ops.purge.purge_rerun` does the purge (ADR 0016).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from airflow.sdk import BaseOperator
from airflow.triggers.base import BaseTrigger, StartTriggerArgs, TaskSkippedEvent, TriggerEvent

from covidflow.publish.rerun import RERUN_TEMPLATE

GATE_CLASSPATH = "covidflow.publish.purge_task.RerunGate"


class RerunGate(BaseTrigger):
    """Skips its task unless ``rerun_request`` (the rendered re-run params) asks for a re-run; then resumes it."""

    def __init__(self, *, rerun_request: str = "") -> None:
        super().__init__()
        self.rerun_request = rerun_request

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return GATE_CLASSPATH, {"rerun_request": self.rerun_request}

    def is_rerun(self) -> bool:
        from covidflow.publish.rerun import RerunParamsError, rerun_from_rendered

        try:
            return rerun_from_rendered(self.rerun_request) is not None
        except (RerunParamsError, ValueError):  # cannot happen after a publish: the select task refused the run
            return False

    async def run(self) -> AsyncIterator[TriggerEvent]:
        if self.is_rerun():
            yield TriggerEvent({"status": "rerun"})
        else:
            yield TaskSkippedEvent()


class PurgeObsoleteOperator(BaseOperator):
    """Re-runs only, once every object is published: delete, in both stores, the records of each re-published
    object and vintage that the re-run did not write again. Skipped in the triggerer in any other run."""

    template_fields = ("rerun_request", "summaries")
    start_from_trigger = True

    def __init__(self, *, source_id: str, summaries: Any, purge_config: Mapping[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.source_id, self.summaries, self.purge_config = source_id, summaries, dict(purge_config)
        self.rerun_request = RERUN_TEMPLATE
        self.start_trigger_args = StartTriggerArgs(
            trigger_cls=GATE_CLASSPATH,
            trigger_kwargs={"rerun_request": RERUN_TEMPLATE},
            next_method="execute_complete",
        )

    def execute(self, context: Any) -> list[dict[str, Any]]:
        """Only where the task is not started in the triggerer (``dag.test()``, ``airflow tasks test``)."""
        return self.purge(context)

    def execute_complete(self, context: Any, event: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        return self.purge(context)

    def purge(self, context: Any) -> list[dict[str, Any]]:
        from airflow.sdk.exceptions import AirflowSkipException

        from covidflow.ops.purge import purge_rerun

        done = purge_rerun(self.source_id, context["params"], list(self.summaries or []), self.purge_config)
        if done is None:
            raise AirflowSkipException("not a re-run: nothing to purge")
        return done
