"""The ingest DAG's first task: wait, in the triggerer, until the source has new work (see new_objects.py).

Only scheduled runs wait. A run started by hand, by an asset event or a backfill looks at once (the select
task decides what is new), and a re-run (``rerun_*`` params) needs no sensing at all.

The task starts in the triggerer (``start_from_trigger``) and the trigger ends it: no worker process starts for
it in any run, so a new run is waiting for objects a moment after the previous one ends. The trigger's templated
kwargs (bucket, run type, re-run params) are rendered there from the run's context (Airflow 3.3+).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import BaseSensorOperator
from airflow.triggers.base import StartTriggerArgs

from covidflow.land.new_objects import CLASSPATH, NEW, YIELD, NewObjectsTrigger
from covidflow.publish.rerun import RERUN_TEMPLATE

RUN_TYPE_TEMPLATE = "{{ dag_run.run_type }}"


class NewObjectsSensor(BaseSensorOperator):
    """Deferrable: succeeds when an object of the source is not in the manifest; skipped (soft fail) when the
    timeout passes with nothing new, or when a queued run of the DAG is waiting (that run goes next)."""

    template_fields = ("bucket", "run_type", "rerun_request")
    start_from_trigger = True

    def __init__(
        self,
        *,
        source_id: str,
        bucket: str,
        prefix: str,
        patterns: list[str],
        manifest_prefix: str,
        aws_conn_id: str,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("soft_fail", True)
        super().__init__(**kwargs)
        self.source_id, self.bucket, self.prefix, self.patterns = source_id, bucket, prefix, list(patterns)
        self.manifest_prefix, self.aws_conn_id = manifest_prefix, aws_conn_id
        self.run_type, self.rerun_request = RUN_TYPE_TEMPLATE, RERUN_TEMPLATE
        self.start_trigger_args = StartTriggerArgs(
            trigger_cls=CLASSPATH,
            trigger_kwargs=self._trigger(end_task=True).serialize()[1],
            next_method="execute_complete",
            timeout=timedelta(seconds=self.timeout),
        )

    def _trigger(
        self, *, end_task: bool, run_type: str | None = None, rerun_request: str | None = None
    ) -> NewObjectsTrigger:
        return NewObjectsTrigger(
            source_id=self.source_id,
            bucket=self.bucket,
            prefix=self.prefix,
            patterns=self.patterns,
            manifest_prefix=self.manifest_prefix,
            aws_conn_id=self.aws_conn_id,
            poke_interval=self.poke_interval,
            dag_id=self.dag_id,
            end_task=end_task,
            run_type=self.run_type if run_type is None else run_type,
            rerun_request=self.rerun_request if rerun_request is None else rerun_request,
        )

    def poke(self, context: Any) -> bool:  # never called: execute defers
        raise NotImplementedError("NewObjectsSensor only runs deferred")

    def execute(self, context: Any) -> dict[str, Any]:
        """Only where the task is not started in the triggerer (``dag.test()``, ``airflow tasks test``)."""
        from covidflow.publish.rerun import parse_rerun

        rerun = parse_rerun(context["params"])
        if rerun:
            self.log.info("re-run of %s: no sensing, the manifest is ignored", rerun.describe())
            return {"status": "rerun"}
        run_type = str(getattr(context["dag_run"], "run_type", "") or "")
        if run_type.lower().rsplit(".", 1)[-1] != "scheduled":
            self.log.info("%s run: looking at s3://%s/%s now, without waiting", run_type, self.bucket, self.prefix)
            return {"status": "look_now"}
        self.defer(
            # already decided here: the trigger only waits; it ends this task (no worker start to resume it)
            trigger=self._trigger(end_task=True, run_type="scheduled", rerun_request=""),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout),
        )

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        """Resumes only a trigger run without ``end_task`` (tests, other callers)."""
        from airflow.sdk.exceptions import AirflowSkipException

        if event.get("status") == YIELD:
            raise AirflowSkipException("nothing new, and a queued run of this DAG is waiting: it goes next")
        if event.get("status") != NEW:
            raise RuntimeError(f"unexpected trigger event {event!r}")
        keys = ", ".join(o["key"] for o in event["objects"][:5])
        self.log.info("%d new object(s) after %d poll(s): %s", event["count"], event["polls"], keys)
        return {"status": NEW, "count": event["count"], "polls": event["polls"]}
