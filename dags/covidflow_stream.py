"""Streaming normalisation: keep exactly one covidflow-normalise Spark job alive and report its health."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import dag, task

from covidflow import PROJECT_ROOT, settings
from covidflow.normalise.stream_names import JOB_RELATIVE_PATH
from covidflow.normalise.stream_operator import StreamSubmitOperator
from covidflow.ops.callbacks import dag_defaults, on_failure

DOC = """
### covidflow stream (supervisor)

Every 5 minutes:

1. **`stream_health`**: asks the Spark master (`/json/`) for a live app named `covidflow-normalise`, reads the
   job's heartbeat (last batch time and stats, input/processing rate, Kafka offsets behind) and the lag
   (raw topic high watermarks minus the checkpoint's committed offsets). Logged, and returned as XCom.
2. **`needs_start`**: short-circuits when the stream is alive.
3. **`ensure_topics`**: creates or converges the Kafka topics from `include/config/topics.yaml` (the job itself
   never creates a topic, and stops naming a missing one).
4. **`submit_stream`**: `SparkSubmitOperator` (conn `covidflow_spark`, Kafka connector jars from the cache, the
   `covidflow` package and `include/` shipped as an archive) starts the job **from its checkpoint**. It
   re-checks the master right before submitting, so two copies never run; at most one instance of this task
   runs at a time. The task then lives as long as the stream does; if the driver dies, the task fails and its
   retries (or the next scheduled run) restart it.

Why this shape, and how the operator's pitfalls with long-running jobs are avoided:
`docs/decisions/0010-stream-supervision.md`. Checkpoint and heartbeat: `~/.covidflow/data/spark/normalise/`.
"""


@dag(
    dag_id="covidflow_stream",
    schedule=timedelta(minutes=5),
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=2,  # one run holds the live stream; the next one still checks health
    tags=["covidflow", "stream", "spark"],
    doc_md=DOC,
    on_failure_callback=on_failure,
    # A dead stream after its retries is an on-call event; each restart leaves a greppable RETRY line.
    default_args=dag_defaults(3, timedelta(seconds=30)),
)
def covidflow_stream() -> None:
    @task
    def stream_health() -> dict[str, Any]:
        """Alive? last batch, input rate, lag: in the log and in XCom for the UI."""
        from covidflow.normalise.supervise import stream_health as gather

        health = gather()
        print(
            f"alive={health['alive']} hung={health['hung']} apps={health['running_apps']} "
            f"last_batch_at={health['last_batch_at']} (age {health['last_batch_age_seconds']}s) "
            f"input_rows/s={health['input_rows_per_second']} processed_rows/s={health['processed_rows_per_second']} "
            f"lag_messages={health['lag_messages']} offsets_behind={health['offsets_behind_latest']}"
        )
        return health

    @task.short_circuit
    def needs_start(health: dict[str, Any]) -> bool:
        return not health["alive"]

    @task
    def ensure_topics() -> dict[str, str]:
        """The job never creates topics: they are made here, as topics.yaml declares, before it starts."""
        from covidflow.publish.topics import ensure_project_topics

        return ensure_project_topics()

    submit = StreamSubmitOperator(
        task_id="submit_stream",
        conn_id=settings.CONN_SPARK,
        application=str(PROJECT_ROOT / JOB_RELATIVE_PATH),
        application_args=["--master-ui", f"http://{settings.HOST}:{settings.SPARK_MASTER_UI_PORT}"],
        max_active_tis_per_dag=1,  # never two submitters, even across concurrent runs
        execution_timeout=None,  # the task lives as long as the stream
        retries=3,
        retry_delay=timedelta(seconds=30),
    )
    needs_start(stream_health()) >> ensure_topics() >> submit


covidflow_stream()
