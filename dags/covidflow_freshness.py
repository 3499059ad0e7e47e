"""covidflow_freshness: is every source's newest vintage recent enough? Fails with one line per late source.

Thin on purpose: judging is covidflow.ops.freshness (pure), the reads and the report are covidflow.ops.tasks.
Cadence and tolerance come from each spec's ``freshness`` block; settings from include/config/freshness.yaml.
The verdicts go to XCom (return value) and to the Elasticsearch index the dashboard's freshness panel reads.
A Deadline Alert (Airflow 3.1+, experimental) reports a check that is itself stuck. See docs/operations.md.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, AsyncCallback, DeadlineAlert, DeadlineReference, Param, get_current_context, task

from covidflow import settings
from covidflow.ops.callbacks import dag_defaults, deadline_missed, on_failure
from covidflow.ops.config import freshness_config

CFG = freshness_config()
DAG_ID = "covidflow_freshness"

with DAG(
    dag_id=DAG_ID,
    schedule=CFG["dag"]["schedule"],
    start_date=datetime.fromisoformat(str(CFG["dag"]["start_date"])),
    catchup=False,
    is_paused_upon_creation=False,  # ops and maintenance run on a fresh stack without a click
    max_active_runs=1,
    tags=["covidflow", "ops", "freshness"],
    doc_md=__doc__,
    default_args=dag_defaults(int(CFG["dag"]["retries"]), timedelta(minutes=2), owner="covidflow-ops"),
    on_failure_callback=on_failure,
    # null in config = no Deadline Alert (dag.test() in Airflow 3.3.2 cannot run a DAG that has one).
    deadline=DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=timedelta(minutes=int(CFG["dag"]["deadline_minutes"])),
        callback=AsyncCallback(deadline_missed, kwargs={"dag_id": DAG_ID, "message": "freshness check overran"}),
    )
    if CFG["dag"].get("deadline_minutes")
    else None,
    params={
        "reference_time": Param(CFG.get("reference_time"), type=["null", "string"],
                                description="ISO time to judge against; empty = now (the run's start)"),
        "bucket": Param(settings.LANDING_BUCKET, type="string", description="Landing bucket holding the manifest"),
        "keyspace": Param(CFG["store"]["keyspace"], type="string", description="Cassandra keyspace"),
        "index": Param(CFG["elasticsearch"]["index"], type="string", description="Report index"),
        "signals": Param(CFG["signals"], type="array", description="manifest and/or store"),
        "sources": Param([], type="array", description="Source ids to check; empty = all specs"),
    },
) as dag:  # fmt: skip

    @task(task_id="check_freshness", retries=0)
    def check_freshness() -> list[dict]:
        """Judge every source; the report is written before a late source fails the task."""
        from airflow.sdk.exceptions import AirflowFailException

        from covidflow.ops.tasks import check_freshness as run

        context = get_current_context()
        p = context["params"]
        verdicts, late = run(
            reference_time=p["reference_time"] or None, bucket=p["bucket"], keyspace=p["keyspace"],
            index=p["index"], signals=p["signals"], sources=p["sources"], dag_id=DAG_ID, run_id=context["run_id"],
        )  # fmt: skip
        context["ti"].xcom_push(key="verdicts", value=verdicts)
        if late:
            raise AirflowFailException(late)
        return verdicts

    check_freshness()
