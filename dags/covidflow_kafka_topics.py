"""Kafka topics of the project (include/config/topics.yaml), created or converged by one idempotent task."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import dag, task

from covidflow.ops.callbacks import dag_defaults, on_failure

DOC = """
### covidflow Kafka topics

Creates `covid.raw.v1` and `covid.deadletter.v1` (and any topic added to `include/config/topics.yaml`) with
explicit partitions, replication, retention and cleanup policy, through the `covidflow_kafka` connection.
Idempotent: existing topics get missing partitions and drifted configs fixed, nothing else. The broker's
auto-creation is never relied on. It runs once by itself when Airflow first parses it (`@once`, active on
creation); trigger it again after editing the config.
"""


@dag(
    dag_id="covidflow_kafka_topics",
    schedule="@once",  # active from its first parse: a fresh stack gets its topics without a click
    start_date=datetime(2024, 1, 1),
    catchup=False,
    is_paused_upon_creation=False,  # ops and maintenance run on a fresh stack without a click
    max_active_runs=1,
    tags=["covidflow", "kafka", "setup"],
    doc_md=DOC,
    default_args=dag_defaults(2, timedelta(seconds=30), owner="covidflow-ingest"),
    on_failure_callback=on_failure,
)
def covidflow_kafka_topics() -> None:
    @task
    def ensure_topics() -> dict[str, str]:
        from covidflow.publish.topics import ensure_project_topics

        return ensure_project_topics()

    ensure_topics()


covidflow_kafka_topics()
