"""The ingest DAG's first task: wait, in the triggerer, until the source has new work (see new_objects.py).

Only scheduled runs wait. A run started by hand, by an asset event or a backfill looks at once (the select
task decides what is new), and a re-run (``rerun_*`` params) needs no sensing at all.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import BaseSensorOperator

from covidflow.land.new_objects import NEW, YIELD, NewObjectsTrigger


class NewObjectsSensor(BaseSensorOperator):
    """Deferrable: succeeds when an object of the source is not in the manifest; skipped (soft fail) when the
    timeout passes with nothing new, or when a queued run of the DAG is waiting (that run goes next)."""

    template_fields = ("bucket",)

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

    def poke(self, context: Any) -> bool:  # never called: execute defers
        raise NotImplementedError("NewObjectsSensor only runs deferred")

    def execute(self, context: Any) -> dict[str, Any]:
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
            trigger=NewObjectsTrigger(
                source_id=self.source_id,
                bucket=self.bucket,
                prefix=self.prefix,
                patterns=self.patterns,
                manifest_prefix=self.manifest_prefix,
                aws_conn_id=self.aws_conn_id,
                poke_interval=self.poke_interval,
                dag_id=self.dag_id,
                end_task=True,  # the trigger ends this task: no worker start to resume it
            ),
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
