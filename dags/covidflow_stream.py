"""Streaming normalisation: keep exactly one covidflow-normalise Spark job alive and report its health."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import Param, dag, get_current_context, task

from covidflow import PROJECT_ROOT, settings
from covidflow.normalise.stream_names import JOB_RELATIVE_PATH, master_ui_url
from covidflow.normalise.stream_operator import StreamSubmitOperator
from covidflow.ops.callbacks import dag_defaults, on_failure

DOC = """
### covidflow stream (supervisor)

Every 5 minutes:

1. **`stream_health`**: asks the Spark master (`/json/`) for a live app named `covidflow-normalise`, reads the
   job's heartbeat (last batch time and stats, the batch in progress and since when, input/processing rate,
   Kafka offsets behind) and the lag (raw topic high watermarks minus the checkpoint's committed offsets).
   Logged, and returned as XCom. A **hung** driver (heartbeat older than `stale_heartbeat_seconds`) or a
   **stuck** batch (one batch running longer than `stuck_batch_seconds`) is killed here on the master, with a
   WARNING naming the app, the batch, how long and the action; the task holding the stream then fails and its
   retry restarts the job from its checkpoint, which replays the batch.
2. **`needs_start`**: short-circuits when the stream is alive.
3. **`ensure_topics`**: creates or converges the Kafka topics from `include/config/topics.yaml` (the job itself
   never creates a topic, and stops naming a missing one).
4. **`submit_stream`**: `SparkSubmitOperator` (conn `covidflow_spark`, Kafka connector jars from the cache, the
   `covidflow` package and `include/` shipped as an archive) starts the job **from its checkpoint**. It
   re-checks the master right before submitting, so two copies never run; at most one instance of this task
   runs at a time. The task then lives as long as the stream does; if the driver dies, the task fails and its
   retries (or the next scheduled run) restart it. No credential is on the spark-submit command line: the driver
   reads the connections from the task's environment and hands the executors theirs through its runtime conf
   (`docs/security.md`, ADR 0019); the task log masks them.

Limits: `include/config/stream.yaml` (`supervision:`), read at every run; the params of the same names override
them for one run (e.g. `{"stuck_batch_seconds": 30}` in a test).

Why this shape, and how the operator's pitfalls with long-running jobs are avoided:
`docs/decisions/0010-stream-supervision.md`. Checkpoint and heartbeat: `~/.covidflow/data/spark/normalise/`.
"""


SUPERVISION_PARAMS = {
    "stuck_batch_seconds": Param(
        None, type=["null", "number"], description="Override supervision.stuck_batch_seconds (stream.yaml)"
    ),
    "stale_heartbeat_seconds": Param(
        None, type=["null", "number"], description="Override supervision.stale_heartbeat_seconds (stream.yaml)"
    ),
}


def check_and_act(params: dict[str, Any]) -> dict[str, Any]:
    """Gather the stream's health (limits from stream.yaml, overridden by the run's params), log it, and kill a
    hung or stuck app on the master: the task holding the stream then fails, and its retry (or a waiting
    submit) restarts the job from its checkpoint, which replays the batch."""
    from covidflow.normalise.stream_operator import kill_app
    from covidflow.normalise.supervise import kill_unhealthy, stream_health

    health = stream_health(limits=params)
    print(
        f"alive={health['alive']} hung={health['hung']} stuck={health['stuck']} apps={health['running_apps']} "
        f"last_batch_at={health['last_batch_at']} (age {health['last_batch_age_seconds']}s) "
        f"batch_in_progress={health['batch_in_progress']} batch_running_seconds={health['batch_running_seconds']} "
        f"stuck_after={health['stuck_after_seconds']} heartbeat_age_seconds={health['heartbeat_age_seconds']} "
        f"input_rows/s={health['input_rows_per_second']} processed_rows/s={health['processed_rows_per_second']} "
        f"lag_messages={health['lag_messages']} offsets_behind={health['offsets_behind_latest']}"
    )
    killed = kill_unhealthy(health, lambda app_id: kill_app(app_id, master_ui_url()))
    if killed:
        because = "stuck" if health["stuck"] else "hung"
        health = {**stream_health(limits=params), "killed": killed, "killed_because": because}
    return health


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
    params=SUPERVISION_PARAMS,
)
def covidflow_stream() -> None:
    @task
    def stream_health() -> dict[str, Any]:
        """Alive? last batch, batch in progress, input rate, lag: in the log and in XCom for the UI. A hung or
        stuck app is killed here (and by covidflow_stream_watch, which no held run can block)."""
        return check_and_act(get_current_context()["params"])

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
        application_args=["--master-ui", master_ui_url()],  # the job checks it runs only once
        max_active_tis_per_dag=1,  # never two submitters, even across concurrent runs
        execution_timeout=None,  # the task lives as long as the stream
        retries=3,
        retry_delay=timedelta(seconds=30),
    )
    needs_start(stream_health()) >> ensure_topics() >> submit


covidflow_stream()


WATCH_DOC = """
### covidflow stream watch

Every 2 minutes, one task: the same health check as `covidflow_stream`'s `stream_health`, and the same action.
A **hung** driver (heartbeat older than `stale_heartbeat_seconds`) or a **stuck** batch (the batch in progress
has run longer than `stuck_batch_seconds`) is killed on the Spark master, with a WARNING naming the app, the
batch, how long and the action. The task holding the stream in `covidflow_stream` then fails, and its retry (or
that DAG's next run) restarts the job from its checkpoint, which replays the batch.

Why a DAG of its own: `covidflow_stream` allows two active runs, and a run whose `submit_stream` waits behind
the live stream's task (one submitter at a time) stays active; with two such runs no new run starts, so its
own health check could not run when it is needed most. Limits: `include/config/stream.yaml` (`supervision:`);
the params of the same names override them for one run. `docs/decisions/0010-stream-supervision.md`.
"""


@dag(
    dag_id="covidflow_stream_watch",
    schedule=timedelta(minutes=2),
    start_date=datetime(2024, 1, 1),
    catchup=False,
    is_paused_upon_creation=False,  # supervision needs no click
    max_active_runs=1,
    tags=["covidflow", "stream", "spark"],
    doc_md=WATCH_DOC,
    on_failure_callback=on_failure,
    default_args=dag_defaults(1, timedelta(seconds=20)),
    params=SUPERVISION_PARAMS,
)
def covidflow_stream_watch() -> None:
    @task(execution_timeout=timedelta(minutes=3))
    def watch() -> dict[str, Any]:
        """Health in the log and XCom; kill a hung or stuck app so the stream restarts from its checkpoint."""
        return check_and_act(get_current_context()["params"])

    watch()


covidflow_stream_watch()
