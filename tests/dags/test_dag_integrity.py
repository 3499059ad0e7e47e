"""Every DAG file in dags/ imports cleanly and every DAG carries the metadata the team relies on.

Runs over whatever DAG files exist, so new DAGs are checked as soon as they are added.
"""

from __future__ import annotations

import os
import tempfile

import pytest

import covidflow

# Airflow creates $AIRFLOW_HOME on import; keep it out of the user's ~/airflow.
os.environ.setdefault("AIRFLOW_HOME", os.path.join(tempfile.gettempdir(), "covidflow-test-airflow-home"))

DAGS_FOLDER = covidflow.PROJECT_ROOT / "dags"
DEFAULT_OWNER = "airflow"  # what Airflow fills in when nobody set an owner


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_FOLDER))


def test_no_import_errors(dagbag) -> None:
    assert dagbag.import_errors == {}, "\n\n".join(f"{f}:\n{e}" for f, e in dagbag.import_errors.items())


def test_dags_found(dagbag) -> None:
    assert "covidflow_stack_check" in dagbag.dag_ids
    files = {os.path.realpath(dag.fileloc) for dag in dagbag.dags.values()}
    assert all(f.startswith(os.path.realpath(DAGS_FOLDER)) for f in files), "example or foreign DAGs were loaded"


def test_every_dag_has_tags_and_docs(dagbag) -> None:
    missing = {
        dag_id: [what for what, ok in (("tags", dag.tags), ("doc_md", (dag.doc_md or "").strip())) if not ok]
        for dag_id, dag in dagbag.dags.items()
    }
    assert {k: v for k, v in missing.items() if v} == {}


def test_every_task_has_an_owner_and_explicit_retries(dagbag) -> None:
    problems = []
    for dag_id, dag in dagbag.dags.items():
        retries_by_default = "retries" in (dag.default_args or {})
        for task in dag.tasks:
            if not task.owner or task.owner == DEFAULT_OWNER:
                problems.append(f"{dag_id}.{task.task_id}: no owner (set default_args['owner'])")
            if not retries_by_default and task.retries < 1:
                problems.append(f"{dag_id}.{task.task_id}: retries not set (default_args['retries'] or per task)")
    assert problems == []


def test_every_dag_reports_failures_through_the_one_convention(dagbag) -> None:
    """One on_failure_callback everywhere (covidflow.ops.callbacks): a greppable line and the optional webhook."""
    from covidflow.ops.callbacks import on_failure

    def uses_it(callback) -> bool:
        callbacks = callback if isinstance(callback, list) else [callback]
        return on_failure in callbacks

    assert sorted(dag_id for dag_id, dag in dagbag.dags.items() if not uses_it(dag.on_failure_callback)) == []
