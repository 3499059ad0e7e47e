"""The ingest DAG factory through Airflow's own DagBag: one DAG per spec, the right steps, broken specs isolated."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

import covidflow

os.environ.setdefault("AIRFLOW_HOME", os.path.join(tempfile.gettempdir(), "covidflow-test-airflow-home"))

DAGS_FOLDER = covidflow.PROJECT_ROOT / "dags"
SOURCES = covidflow.PROJECT_ROOT / "include" / "sources"
SPEC_IDS = sorted(p.stem for p in SOURCES.glob("*.yaml"))


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_FOLDER))


def test_no_import_errors(dagbag) -> None:
    assert dagbag.import_errors == {}


def test_exactly_one_ingest_dag_per_spec(dagbag) -> None:
    assert len(SPEC_IDS) == 10
    assert sorted(d for d in dagbag.dag_ids if d.startswith("ingest_")) == [f"ingest_{s}" for s in SPEC_IDS]


@pytest.mark.parametrize("source_id", SPEC_IDS)
def test_ingest_dag_shape(dagbag, source_id: str) -> None:
    import yaml
    from airflow.sdk.definitions.timetables.simple import ContinuousTimetable

    from covidflow.land.sensor import NewObjectsSensor

    spec = yaml.safe_load((SOURCES / f"{source_id}.yaml").read_text(encoding="utf-8"))
    dag = dagbag.dags[f"ingest_{source_id}"]
    assert [t.task_id for t in dag.topological_sort()] == [
        "wait_for_objects", "select_new_objects", "publish", "purge_obsolete"
    ]  # fmt: skip
    sensor = dag.get_task("wait_for_objects")
    assert isinstance(sensor, NewObjectsSensor)
    assert sensor.soft_fail and sensor.poke_interval == 2 and sensor.timeout == 3600
    # Started in the triggerer in every run: no worker process for the sensor (issue 13's freshness).
    assert sensor.start_from_trigger and sensor.start_trigger_args.trigger_kwargs["bucket"] == "{{ params.bucket }}"
    assert sensor.aws_conn_id == "covidflow_s3" and sensor.manifest_prefix == "_manifest/"
    assert sensor.bucket == "{{ params.bucket }}"
    assert (sensor.source_id, sensor.prefix) == (source_id, spec["landing"]["prefix"])
    assert sensor.patterns == spec["landing"]["patterns"]
    # Scheduled runs follow each other and wait for new work; a new source's DAG starts active (ADR 0015).
    assert isinstance(dag.timetable, ContinuousTimetable) and dag.is_paused_upon_creation is False
    assert set(dag.params) == {"bucket", "rerun_key", "rerun_prefix", "rerun_all"}
    assert dag.params["rerun_all"] is False and dag.params["rerun_key"] == dag.params["rerun_prefix"] == ""
    publish = dag.get_task("publish")
    assert publish.upstream_task_ids == {"select_new_objects"}
    assert [a.name for a in publish.outlets] == [f"covid.raw.v1.{source_id}"]
    # After a re-run's publish, its purge (skipped in other runs), with explicit retries: it is idempotent.
    purge = dag.get_task("purge_obsolete")
    assert purge.upstream_task_ids == {"publish"} and purge.retries == 3
    # An ordinary run skips it in the triggerer; a re-run resumes it on a worker.
    assert purge.start_from_trigger and purge.start_trigger_args.trigger_cls.endswith("RerunGate")
    assert purge.trigger_rule == "all_success"  # a failed publish fails the run; a re-run then purges
    assert {"covidflow", "ingest", f"source:{source_id}", f"format:{spec['format']}"} <= set(dag.tags)
    assert any(t.startswith("publisher:") for t in dag.tags)
    for text in (spec["title"], spec["publisher"], spec["licence"], spec["home_page"], spec["landing"]["prefix"]):
        assert text in dag.doc_md
    assert dag.max_active_runs == 1 and dag.catchup is False
    assert dag.default_args["owner"] == "covidflow-ingest"
    assert dag.default_args["retries"] == 3 and dag.default_args["retry_exponential_backoff"] == 2.0
    assert dag.on_failure_callback and dag.default_args["on_failure_callback"].__name__ == "on_failure"
    assert dag.params["bucket"] == "covidflow-landing"


def test_kafka_topics_dag(dagbag) -> None:
    dag = dagbag.dags["covidflow_kafka_topics"]
    assert [t.task_id for t in dag.tasks] == ["ensure_topics"]
    from airflow.sdk.definitions.timetables.simple import OnceTimetable

    assert isinstance(dag.timetable, OnceTimetable) and dag.is_paused_upon_creation is False


def test_a_broken_spec_is_one_import_error_naming_it_and_the_others_load(tmp_path: Path) -> None:
    """Factory + specs copied to a temp folder, two specs broken: one import error names both, the 8 others load."""
    from airflow.dag_processing.dagbag import DagBag

    specs = tmp_path / "sources"
    shutil.copytree(SOURCES, specs)
    broken = specs / "spf_vacsi.yaml"
    broken.write_text(broken.read_text(encoding="utf-8").replace("format: csv", "format: cvs"), encoding="utf-8")
    unparsable = specs / "who_covid19_global_weekly.yaml"
    unparsable.write_text("id: who_covid19_global_weekly\ntitle: [unclosed\n", encoding="utf-8")
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "covidflow_ingest.py").write_text(
        "# airflow dag\nfrom pathlib import Path\nfrom covidflow.publish.dag_factory import build_all\n"
        f"globals().update(build_all(Path({str(specs)!r})))\n"
    )
    bag = DagBag(dag_folder=str(dags))
    assert list(bag.import_errors) == [str(dags / "covidflow_ingest.py")]
    error = bag.import_errors[str(dags / "covidflow_ingest.py")]
    assert f"source spec {broken} is broken; its DAG ingest_spf_vacsi is not loaded" in error
    assert f"{broken}:7: format: unknown format 'cvs'" in error
    assert f"source spec {unparsable} is broken; its DAG ingest_who_covid19_global_weekly is not loaded" in error
    assert f"{unparsable}:3: (top): YAML syntax" in error
    assert sorted(bag.dag_ids) == [
        f"ingest_{s}" for s in SPEC_IDS if s not in ("spf_vacsi", "who_covid19_global_weekly")
    ]


OPS_DAGS = [
    "covidflow_cassandra_maintenance",
    "covidflow_es_rebuild",
    "covidflow_es_reindex",
    "covidflow_es_rollover",
    "covidflow_freshness",
    "covidflow_kafka_topics",
    "covidflow_quality",
    "covidflow_stack_check",
]


def test_ops_and_maintenance_dags_start_active(dagbag) -> None:
    """Issue 13: on a fresh stack nothing has to be unpaused by hand (ingest DAGs: test_ingest_dag_shape)."""
    assert {d for d in dagbag.dag_ids if not d.startswith("ingest_")} == {*OPS_DAGS, "covidflow_stream",
                                                                          "covidflow_stream_watch"}  # fmt: skip
    assert dagbag.dags["covidflow_stream_watch"].is_paused_upon_creation is False  # supervision needs no click
    assert {d: dagbag.dags[d].is_paused_upon_creation for d in OPS_DAGS} == dict.fromkeys(OPS_DAGS, False)
