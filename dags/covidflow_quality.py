"""covidflow_quality: checks over what was stored, one mapped task per source; blocking findings fail the task.

Thin on purpose: the checks are covidflow.store.quality (pure), reading and reporting covidflow.ops.tasks.
Thresholds and severities: include/config/quality.yaml. The report goes to XCom and to the Elasticsearch index
the dashboard's freshness panel reads. Schema drift is checked by the ingest path before anything is written
(covidflow.store.quality.guard_drift), not here. See docs/operations.md.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, Param, get_current_context, task

from covidflow.ops.callbacks import dag_defaults, on_failure
from covidflow.ops.config import quality_config

CFG = quality_config()
DAG_ID = "covidflow_quality"

with DAG(
    dag_id=DAG_ID,
    schedule=CFG["dag"]["schedule"],
    start_date=datetime.fromisoformat(str(CFG["dag"]["start_date"])),
    catchup=False,
    is_paused_upon_creation=False,  # ops and maintenance run on a fresh stack without a click
    max_active_runs=1,
    tags=["covidflow", "ops", "quality"],
    doc_md=__doc__,
    default_args=dag_defaults(int(CFG["dag"]["retries"]), timedelta(minutes=2), owner="covidflow-ops"),
    on_failure_callback=on_failure,
    params={
        "sources": Param([], type="array", description="Source ids to check; empty = every spec"),
        "vintage": Param(None, type=["null", "string"], description="Vintage to check; empty = each source's newest"),
        "reference_time": Param(None, type=["null", "string"], description="'Future' dates: after this; empty = now"),
        "keyspace": Param(CFG["keyspace"], type="string", description="Cassandra keyspace"),
        "index": Param(CFG["elasticsearch"]["index"], type="string", description="Report index"),
    },
) as dag:  # fmt: skip

    @task(task_id="list_sources")
    def list_sources() -> list[str]:
        from covidflow.catalog.specs import spec_paths

        wanted = get_current_context()["params"]["sources"]
        return [p.stem for p in spec_paths() if not wanted or p.stem in wanted]

    @task(task_id="check_source", retries=0, map_index_template="{{ task.op_kwargs['source_id'] }}")
    def check_source(source_id: str) -> dict:
        """Report first, then fail on blocking findings (warnings only log)."""
        from airflow.sdk.exceptions import AirflowFailException

        from covidflow.ops.tasks import check_quality

        context = get_current_context()
        p = context["params"]
        summary = check_quality(
            source_id=source_id, vintage=p["vintage"], reference_time=p["reference_time"], keyspace=p["keyspace"],
            index=p["index"], dag_id=DAG_ID, run_id=context["run_id"],
        )  # fmt: skip
        if summary["blocking"]:
            blocking = [line for line in summary["lines"] if line.startswith("BLOCKING")]
            raise AirflowFailException(f"{summary['blocking']} blocking quality finding(s):\n" + "\n".join(blocking))
        return summary

    check_source.expand(source_id=list_sources())
