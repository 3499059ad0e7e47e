"""Structure of the stream supervisor DAG: health -> short-circuit -> one guarded SparkSubmitOperator."""

from __future__ import annotations

import os
import tempfile

import pytest

import covidflow

os.environ.setdefault("AIRFLOW_HOME", os.path.join(tempfile.gettempdir(), "covidflow-test-airflow-home"))


@pytest.fixture(scope="module")
def dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(covidflow.PROJECT_ROOT / "dags" / "covidflow_stream.py"))
    assert bag.import_errors == {}
    return bag.dags["covidflow_stream"]


def test_shape_and_metadata(dag) -> None:
    assert set(dag.task_ids) == {"stream_health", "needs_start", "ensure_topics", "submit_stream"}
    assert dag.get_task("needs_start").upstream_task_ids == {"stream_health"}
    assert dag.get_task("ensure_topics").upstream_task_ids == {"needs_start"}
    assert dag.get_task("submit_stream").upstream_task_ids == {"ensure_topics"}
    assert "stream" in dag.tags and dag.doc_md and "0010-stream-supervision" in dag.doc_md
    assert dag.catchup is False and dag.max_active_runs == 2


def test_submit_task_is_guarded_and_long_running(dag) -> None:
    from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

    from covidflow.normalise.stream_operator import StreamSubmitOperator

    submit = dag.get_task("submit_stream")
    assert isinstance(submit, StreamSubmitOperator) and isinstance(submit, SparkSubmitOperator)
    assert submit.max_active_tis_per_dag == 1
    assert submit.execution_timeout is None
    assert submit.retries == 3
    assert submit.name == "covidflow-normalise"
    assert submit._conn_id == "covidflow_spark"
    assert submit.application == str(covidflow.PROJECT_ROOT / "spark_jobs" / "normalise_stream.py")
    assert submit.application_args == ["--master-ui", "http://127.0.0.1:8081"]


def test_every_task_retries(dag) -> None:
    assert all(t.retries >= 1 for t in dag.tasks)


def test_supervision_limits_are_params_defaulting_to_the_config(dag) -> None:
    for name in ("stuck_batch_seconds", "stale_heartbeat_seconds"):
        assert dag.params[name] is None  # None: include/config/stream.yaml decides


def test_a_watch_dag_no_held_run_can_block() -> None:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(covidflow.PROJECT_ROOT / "dags" / "covidflow_stream.py"))
    watch = bag.dags["covidflow_stream_watch"]
    assert set(watch.task_ids) == {"watch"} and watch.max_active_runs == 1 and watch.catchup is False
    assert watch.params["stuck_batch_seconds"] is None and "stuck" in watch.doc_md
