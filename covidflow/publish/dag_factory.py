"""Build one ingest DAG per source spec: sense -> select new objects -> publish each (mapped) to Kafka.

Imported by dags/covidflow_ingest.py at parse time, so it imports only what DAG structure needs; hooks,
readers and Kafka clients are imported inside the tasks. A spec that does not load does not stop the others:
its problems are gathered in one placeholder DAG whose validation fails, which Airflow's DagBag records as
one import error for the factory file naming every broken spec file, while the good DAGs are still bagged.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Asset, Param, get_current_context, task

from covidflow import settings
from covidflow.catalog.specs import SOURCES_DIR, SourceSpec, SpecError, load_spec, spec_paths
from covidflow.ops.callbacks import on_failure, on_retry
from covidflow.publish.config import ingest_config
from covidflow.publish.envelope import RAW_TOPIC

DAG_PREFIX = "ingest_"
BROKEN_DAG_ID = "ingest__broken_specs"


class BrokenSpecs(ValueError):
    """One or more source specs did not load; the message names each file, line and field."""


class BrokenSpecsDAG(DAG):
    """Placeholder whose validation fails, so the DagBag reports the broken specs as this file's import error."""

    def validate(self) -> None:
        raise BrokenSpecs(self.doc_md or "broken source specs")


def source_asset(source_id: str) -> Asset:
    """The Asset updated when a source's raw records are published; downstream DAGs schedule on it."""
    return Asset(
        name=f"{RAW_TOPIC}.{source_id}",
        uri=f"x-covidflow://{RAW_TOPIC}/{source_id}",
        group="covidflow-raw",
        extra={"topic": RAW_TOPIC, "source_id": source_id},
    )


def ingest_params(prefix: str) -> dict[str, Param]:
    """The DAG's params: the UI's "Trigger DAG" form, and the conf of ``covidflow ingest rerun``."""
    from covidflow.publish import rerun

    return {
        "bucket": Param(settings.LANDING_BUCKET, type="string", description="Landing bucket to read"),
        rerun.KEY: Param(
            "", type="string", title="Re-publish one object", description=f"Full key, e.g. {prefix}<file name>"
        ),
        rerun.PREFIX: Param(
            "", type="string", title="Re-publish a key prefix", description=f"Keys starting with this ({prefix}...)"
        ),
        rerun.ALL: Param(False, type="boolean", title="Re-publish every object of the source"),
    }


def doc_md(spec: SourceSpec) -> str:
    d = spec.data
    landing = d["landing"]
    patterns = ", ".join(f"`{p}`" for p in landing["patterns"])
    return f"""
### {d["title"]}

| | |
|---|---|
| source | `{spec.id}` |
| publisher | {d["publisher"]} |
| licence | {d["licence"]} |
| link | <{d["home_page"]}> |
| landing | `s3://<bucket>/{landing["prefix"]}` matching {patterns} |
| format | `{d["format"]}` |
| spec | `include/sources/{spec.path.name}` |

Scheduled runs follow each other (`@continuous`, one at a time): `wait_for_objects` waits in the triggerer until an
object's key + etag is not in the manifest (skipped after the timeout) -> `select_new_objects` -> `publish` (one mapped
task per object: records to `{RAW_TOPIC}`, rejects to the dead-letter topic, then the object is marked in the
manifest). A run triggered by hand looks at once. **Re-run** (manifest ignored): trigger with `rerun_key` (one
object), `rerun_prefix` (a key prefix) or `rerun_all`; CLI: `covidflow ingest rerun {spec.id} --key|--prefix|--all`.
After a re-run's publish, `purge_obsolete` deletes from Cassandra and Elasticsearch the records of each re-published
object and vintage that were ingested before the re-run (what a spec fix made obsolete); skipped in other runs.
`bucket` ingests from another bucket. See docs/ingestion.md.
"""


def build_ingest_dag(spec: SourceSpec, config: dict[str, Any] | None = None) -> DAG:
    """The ingest DAG of one source."""
    config = config or ingest_config()
    dag_cfg, sensor_cfg = config["dag"], config["sensor"]
    source_id = spec.id
    landing = spec.data["landing"]
    asset = source_asset(source_id)
    default_args = {
        "owner": dag_cfg["owner"],
        "retries": int(dag_cfg["retries"]),
        "retry_delay": timedelta(seconds=dag_cfg["retry_delay_seconds"]),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(seconds=dag_cfg["max_retry_delay_seconds"]),
        "on_failure_callback": on_failure,
        "on_retry_callback": on_retry,
    }
    with DAG(
        dag_id=f"{DAG_PREFIX}{source_id}",
        schedule=dag_cfg["schedule"],
        start_date=datetime.fromisoformat(str(dag_cfg["start_date"])),
        catchup=False,
        max_active_runs=int(dag_cfg["max_active_runs"]),
        dagrun_timeout=timedelta(minutes=dag_cfg["dagrun_timeout_minutes"]),
        tags=[
            "covidflow",
            "ingest",
            f"source:{source_id}",
            f"publisher:{_short(spec.data['publisher'])}",
            f"format:{spec.data['format']}",
        ],
        doc_md=doc_md(spec),
        default_args=default_args,
        on_failure_callback=on_failure,
        # The reviewed spec is the gate: a new source's DAG runs as soon as it is parsed.
        is_paused_upon_creation=False,
        params=ingest_params(landing["prefix"]),
    ) as dag:
        from covidflow.land.sensor import NewObjectsSensor
        from covidflow.publish.purge_task import PurgeObsoleteOperator

        wait = NewObjectsSensor(
            task_id="wait_for_objects",
            source_id=source_id,
            bucket="{{ params.bucket }}",
            prefix=landing["prefix"],
            patterns=list(landing["patterns"]),
            manifest_prefix=config["manifest"]["prefix"],
            aws_conn_id=settings.CONN_S3,
            poke_interval=float(sensor_cfg["poke_interval_seconds"]),
            timeout=float(sensor_cfg["timeout_seconds"]),
            soft_fail=True,  # nothing new within the timeout: the run is skipped, not failed
        )

        @task(task_id="select_new_objects")
        def select(source: str) -> list[dict[str, Any]]:
            from airflow.sdk.exceptions import AirflowFailException

            from covidflow.land.objects import RerunRequestError
            from covidflow.publish.ingest import select_objects
            from covidflow.publish.rerun import RerunParamsError

            try:
                return select_objects(source, get_current_context()["params"])
            except (RerunRequestError, RerunParamsError) as exc:  # a wrong request: retrying cannot help
                raise AirflowFailException(f"re-run refused: {exc}") from None

        @task(task_id="publish", outlets=[asset], max_active_tis_per_dag=1)
        def publish(obj: dict[str, Any], source: str) -> dict[str, Any]:
            from airflow.sdk.exceptions import AirflowFailException

            from covidflow.publish.config import ingest_config
            from covidflow.publish.ingest import publish_object, reject_ratio_exceeded
            from covidflow.store.quality import SchemaDrift

            context = get_current_context()
            try:
                summary = publish_object(source, obj)
            except SchemaDrift as exc:  # retrying cannot help: the file or the spec must change
                from covidflow.ops.tasks import report_drift

                report_drift(
                    source, f"s3://{obj['bucket']}/{obj['key']}", exc, context["dag"].dag_id, context["run_id"]
                )
                try:
                    context["ti"].xcom_push(key="drift", value=[f.to_dict() for f in exc.findings])
                except Exception as extra:  # an extra: the drift below is what fails the task
                    import logging

                    logging.getLogger(__name__).error("drift findings not pushed to XCom: %r", extra)
                raise AirflowFailException(str(exc)) from None
            context["outlet_events"][source_asset(source)].extra = {
                "object": summary["object"],
                "etag": summary["etag"],
                "records_out": summary["records_out"],
                "rejects": summary["rejects"],
            }
            # An unreadable object never gets here: publish_object publishes nothing of it, sends one dead
            # letter, marks it refused and raises AirflowFailException (deterministic: no retry).
            too_many = reject_ratio_exceeded(summary, float(ingest_config()["max_reject_ratio"]))
            if too_many:
                context["ti"].xcom_push(key="summary", value=summary)
                raise AirflowFailException(too_many)
            return summary

        selected = select(source_id)
        wait >> selected
        published = publish.partial(source=source_id).expand(obj=selected)
        purge_cfg = {**PURGE_DEFAULTS, **(config.get("purge") or {})}
        PurgeObsoleteOperator(
            task_id="purge_obsolete",
            source_id=source_id,
            summaries=published,  # every publish's summary (ADR 0016; logic in covidflow.ops.purge)
            purge_config=purge_cfg,
            retries=int(purge_cfg["retries"]),  # idempotent: a retry finds what is left to delete
            retry_delay=timedelta(seconds=purge_cfg["retry_delay_seconds"]),
        )
    return dag


#: The purge task's settings (include/config/ingest.yaml ``purge`` overrides them).
PURGE_DEFAULTS: dict[str, Any] = {
    "wait_for_stream_seconds": 300,
    "settle_seconds": 10,
    "retries": 3,
    "retry_delay_seconds": 30,
}


def _short(text: str) -> str:
    """A tag-sized publisher name: the part before any parenthesis or comma."""
    return text.split("(")[0].split(",")[0].strip()[:40]


def build_all(directory: Path = SOURCES_DIR, paths: Iterable[Path] | None = None) -> dict[str, DAG]:
    """dag_id -> DAG for every loadable spec; broken specs go into one failing placeholder DAG."""
    config = ingest_config()
    dags: dict[str, DAG] = {}
    problems: list[str] = []
    for path in paths if paths is not None else spec_paths(directory):
        try:
            spec = load_spec(path)
        except SpecError as exc:
            problems.append(f"source spec {path} is broken; its DAG {DAG_PREFIX}{path.stem} is not loaded:\n{exc}")
            continue
        dag = build_ingest_dag(spec, config)
        dags[dag.dag_id] = dag
    if problems:
        broken = BrokenSpecsDAG(
            dag_id=BROKEN_DAG_ID,
            schedule=None,
            start_date=datetime(2024, 1, 1),
            tags=["covidflow", "ingest", "broken"],
            doc_md="\n\n".join(problems),
        )
        dags[broken.dag_id] = broken
    return dags
