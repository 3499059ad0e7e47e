"""Operations on the real stack: late sources, a dead broker failing its task, the quality report in Elasticsearch.

Every DAG runs through ``dag.test()`` in a subprocess with its own AIRFLOW_HOME (SQLite) and the stack's
connections, against a test-only bucket, Cassandra keyspace and Elasticsearch index, all removed afterwards.
Unreachable services are failures, not skips. Needs: ``covidflow stack up s3 cassandra elasticsearch``.
"""

from __future__ import annotations

import json
import socket
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from elasticsearch import Elasticsearch

import covidflow
from covidflow import clients, settings
from covidflow.clients import cassandra_cluster, cassandra_endpoint
from covidflow.land.manifest import S3Manifest
from covidflow.land.objects import LandedObject
from covidflow.publish.config import CONFIG_DIR
from covidflow.store.cassandra_schema import generate_cql, statements

pytestmark = pytest.mark.integration

ROOT = covidflow.PROJECT_ROOT
PYTHON = str(ROOT / ".venv" / "bin" / "python")
TAG = uuid.uuid4().hex[:10]
KEYSPACE = f"it_ops_{TAG}"
INDEX = f"it-ops-quality-{TAG}"
REFERENCE = "2022-12-01T06:00:00Z"

RUN_DAG = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
from airflow.utils.state import TaskInstanceState
dag_id, conf = sys.argv[1], json.loads(sys.argv[2])
bag = DagBag(dag_folder=sys.argv[3])
assert not bag.import_errors, bag.import_errors
dr = bag.dags[dag_id].test(run_conf=conf)
tis = {f"{ti.task_id}[{ti.map_index}]": str(ti.state) for ti in dr.get_task_instances()}
print("RESULT " + json.dumps({"state": str(dr.state), "run_id": dr.run_id, "tis": tis}))
"""


# -- fixtures ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cassandra() -> Iterator[Any]:
    try:
        cluster = cassandra_cluster(cassandra_endpoint(), connect_timeout=10)
        session = cluster.connect()
    except Exception as exc:
        pytest.fail(f"Cassandra is not reachable at {settings.CASSANDRA_HOST} ({exc}); run `covidflow stack up`")
    for stmt in statements(generate_cql(keyspace=KEYSPACE)):
        session.execute(stmt, timeout=120)
    yield session
    session.execute(f"DROP KEYSPACE IF EXISTS {KEYSPACE}", timeout=120)
    cluster.shutdown()


@pytest.fixture(scope="module")
def es() -> Iterator[Elasticsearch]:
    client = clients.elasticsearch(cached=False, request_timeout=30, max_retries=0)
    try:
        client.cluster.health(timeout="10s")
    except Exception as exc:
        pytest.fail(f"Elasticsearch is not reachable at {settings.ELASTICSEARCH_URL} ({exc})")
    yield client
    client.indices.delete(index=INDEX, ignore_unavailable=True)


def run_dag(env: dict[str, str], dag_id: str, conf: dict[str, Any]) -> tuple[dict[str, Any], str]:
    done = subprocess.run([PYTHON, "-c", RUN_DAG, dag_id, json.dumps(conf), str(ROOT / "dags")], env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    output = done.stdout + done.stderr
    lines = [line for line in output.splitlines() if line.startswith("RESULT ")]
    assert lines, f"the DAG run printed no result:\n{output[-5000:]}"
    return json.loads(lines[-1][len("RESULT ") :]), output


def docs(es: Elasticsearch, run_id: str) -> list[dict[str, Any]]:
    hits = es.search(index=INDEX, query={"term": {"run_id": run_id}}, size=100)["hits"]["hits"]
    return sorted((h["_source"] for h in hits), key=lambda d: (d["source_id"], d["check"], d.get("series", "")))


def dashboard_checks(es: Elasticsearch) -> dict[str, dict[str, Any]]:
    """What the dashboard's freshness panel shows per source (its API, reading this test's report index)."""
    from fastapi.testclient import TestClient

    from covidflow.show.api import create_app

    es.indices.refresh(index=INDEX)
    resp = TestClient(create_app(client_factory=lambda: es, report_index=INDEX)).get("/api/freshness")
    assert resp.status_code == 200, resp.text
    return {s["source_id"]: s for s in resp.json()["sources"]}


# -- freshness --------------------------------------------------------------------------------------------------


def mark(s3: Any, bucket: str, source_id: str, key: str, vintage: str) -> None:
    """A manifest marker exactly as the ingest path writes it after a successful publish."""
    obj = LandedObject(bucket, key, uuid.uuid4().hex, 10, f"{vintage}T20:00:00+00:00")
    S3Manifest(s3, bucket, "_manifest/").mark(source_id, obj, {"vintage": vintage, "records_out": 1})


def test_a_source_whose_files_stop_arriving_is_reported_late(
    s3: Any, bucket: str, cassandra: Any, es: Elasticsearch, airflow_env: dict[str, str], tmp_path: Path
) -> None:
    # spf_vacsi (daily + 12 h): files until 2022-11-20, then nothing. who (weekly + 2 d): on time.
    for day in ("2022-11-18", "2022-11-19", "2022-11-20"):
        mark(s3, bucket, "spf_vacsi", f"spf/vacsi/vacsi-dep-{day}.csv", day)
    mark(s3, bucket, "who_covid19_global_weekly", "who/WHO-COVID-19-global-data.csv", "2022-11-27")
    cassandra.execute(
        f"INSERT INTO {KEYSPACE}.vintages_by_source (source_id, vintage, source_object_key) VALUES (%s, %s, %s)",
        ("who_covid19_global_weekly", datetime(2022, 11, 27, tzinfo=UTC), "who/WHO-COVID-19-global-data.csv"),
    )
    conf = {"reference_time": REFERENCE, "bucket": bucket, "keyspace": KEYSPACE, "index": INDEX,
            "sources": ["spf_vacsi", "who_covid19_global_weekly"]}  # fmt: skip
    # dag.test() in Airflow 3.3.2 cannot run a DAG with a Deadline Alert (DagRun.update_state looks the alert up
    # by id and gets the object): the same config with the alert off.
    config = yaml.safe_load((CONFIG_DIR / "freshness.yaml").read_text())
    config["dag"]["deadline_minutes"] = None
    (tmp_path / "freshness.yaml").write_text(yaml.safe_dump(config))
    env = {**airflow_env, "COVIDFLOW_FRESHNESS_CONFIG": str(tmp_path / "freshness.yaml")}
    result, output = run_dag(env, "covidflow_freshness", conf)
    assert result["state"] == "failed", output[-3000:]
    assert result["tis"] == {"check_freshness[-1]": "failed"}
    late_line = (
        "LATE spf_vacsi: last vintage 2022-11-20T00:00:00Z, cadence daily + 12.0 h -> due 2022-11-21T12:00:00Z, "
        "9.8 days late at 2022-12-01T06:00:00Z; the store has no vintage although files were published (check the "
        "stream) (manifest 2022-11-20T00:00:00Z, store never)"
    )
    assert late_line in output
    assert "1 source(s) late:" in output
    assert "FAILED dag=covidflow_freshness" in output  # the on_failure_callback line
    found = docs(es, result["run_id"])
    assert [(d["source_id"], d["status"], d["last_vintage"]) for d in found] == [
        ("spf_vacsi", "late", "2022-11-20T00:00:00Z"),
        ("who_covid19_global_weekly", "ok", "2022-11-27T00:00:00Z"),
    ]
    assert found[0]["message"] == late_line
    assert found[1]["signals"] == {"manifest": "2022-11-27T00:00:00Z", "store": "2022-11-27T00:00:00Z"}
    panel = dashboard_checks(es)
    assert panel["spf_vacsi"]["freshness"]["status"] == "late"
    assert panel["spf_vacsi"]["freshness"]["message"] == late_line
    assert panel["who_covid19_global_weekly"]["freshness"]["status"] == "ok"


# -- dead broker ------------------------------------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed when the block ends: nothing listens there


def test_a_producer_pointed_at_a_dead_broker_fails_its_task(
    s3: Any, bucket: str, airflow_env: dict[str, str], tmp_path: Path
) -> None:
    sample = ROOT / "include" / "samples" / "spf_vacsi" / "vacsi-dep.csv"
    s3.put_object(Bucket=bucket, Key="spf/vacsi/vacsi-dep.csv", Body=sample.read_bytes())
    config = yaml.safe_load((CONFIG_DIR / "ingest.yaml").read_text())
    config["dag"]["retries"] = 0
    config["sensor"].update(poke_interval_seconds=1, timeout_seconds=30)
    config["producer"].update({"message.timeout.ms": 5000, "transaction.timeout.ms": 10000})
    config["transactions"].update(init_timeout_seconds=5, commit_timeout_seconds=5)
    (tmp_path / "ingest.yaml").write_text(yaml.safe_dump(config))
    port = closed_port()
    dead_kafka = {"conn_type": "kafka", "extra": {"bootstrap.servers": f"127.0.0.1:{port}"}}
    env = {
        **airflow_env,
        "COVIDFLOW_INGEST_CONFIG": str(tmp_path / "ingest.yaml"),
        "AIRFLOW_CONN_COVIDFLOW_KAFKA": json.dumps(dead_kafka),
    }
    result, output = run_dag(env, "ingest_spf_vacsi", {"bucket": bucket})
    assert result["state"] == "failed", output[-3000:]
    assert result["tis"]["publish[0]"] == "failed"
    assert f"Kafka unreachable for s3://{bucket}/spf/vacsi/vacsi-dep.csv" in output
    assert "FAILED dag=ingest_spf_vacsi" in output
    markers = s3.list_objects_v2(Bucket=bucket, Prefix="_manifest/").get("KeyCount", 0)
    assert markers == 0, "an object that was not delivered must not be marked as published"


# -- schema drift -----------------------------------------------------------------------------------------------


def test_a_renamed_column_fails_ingest_before_anything_is_published_and_is_reported(
    s3: Any, bucket: str, es: Elasticsearch, airflow_env: dict[str, str], tmp_path: Path
) -> None:
    from covidflow.normalise.supervise import high_watermarks
    from covidflow.publish.envelope import RAW_TOPIC

    sample = (ROOT / "include" / "samples" / "spf_vacsi" / "vacsi-dep.csv").read_bytes()
    renamed = sample.replace(b"dep;", b"departement;", 1)
    s3.put_object(Bucket=bucket, Key="spf/vacsi/vacsi-dep.csv", Body=renamed)
    ingest = yaml.safe_load((CONFIG_DIR / "ingest.yaml").read_text())
    ingest["dag"]["retries"] = 0
    ingest["sensor"].update(poke_interval_seconds=1, timeout_seconds=30)
    (tmp_path / "ingest.yaml").write_text(yaml.safe_dump(ingest))
    quality = yaml.safe_load((CONFIG_DIR / "quality.yaml").read_text())
    quality["elasticsearch"]["index"] = INDEX
    (tmp_path / "quality.yaml").write_text(yaml.safe_dump(quality))
    env = {**airflow_env, "COVIDFLOW_INGEST_CONFIG": str(tmp_path / "ingest.yaml"),
           "COVIDFLOW_QUALITY_CONFIG": str(tmp_path / "quality.yaml")}  # fmt: skip
    before = high_watermarks(RAW_TOPIC).get(RAW_TOPIC, {})

    result, output = run_dag(env, "ingest_spf_vacsi", {"bucket": bucket})

    assert result["state"] == "failed", output[-3000:]
    assert result["tis"]["publish[0]"] == "failed"
    message = "spf/vacsi/vacsi-dep.csv: schema drift, nothing written: column 'dep' mapped by the spec is missing"
    assert message in output
    assert high_watermarks(RAW_TOPIC).get(RAW_TOPIC, {}) == before, "nothing may reach the raw topic"
    # Refused for good (issue 14): one marker with status "refused", so the continuous schedule does not loop on it.
    (marker,) = s3.list_objects_v2(Bucket=bucket, Prefix="_manifest/")["Contents"]
    refused = json.loads(s3.get_object(Bucket=bucket, Key=marker["Key"])["Body"].read())["summary"]
    assert (refused["status"], refused["records_out"], refused["dead_letters"]) == ("refused", 0, 1)
    found = docs(es, result["run_id"])
    summary = next(d for d in found if d["check"] == "summary")
    assert (summary["status"], summary["message"]) == ("blocking", message)
    assert summary["object"] == f"s3://{bucket}/spf/vacsi/vacsi-dep.csv"
    assert ("drift_missing_column", "blocking") in {(d["check"], d["status"]) for d in found}
    assert dashboard_checks(es)["spf_vacsi"]["quality"]["status"] == "blocking"


# -- quality ----------------------------------------------------------------------------------------------------


def test_the_quality_report_lands_in_elasticsearch(
    cassandra: Any, es: Elasticsearch, airflow_env: dict[str, str]
) -> None:
    vintage = datetime(2021, 6, 1, tzinfo=UTC)
    insert = cassandra.prepare(
        f"INSERT INTO {KEYSPACE}.observations_by_vintage (source_id, vintage, location_key, metric, metric_kind, "
        "date, period, sex, age_group, variant, upstream, value) VALUES ('spf_vacsi', ?, ?, ?, ?, ?, 'day', '', '', "
        "'', '', ?)"
    )
    rows = [
        ("FR-D01", "vaccinated_first_dose_cumulative", "cumulative", "2021-05-01", 100.0),
        ("FR-D01", "vaccinated_first_dose_cumulative", "cumulative", "2021-05-02", 90.0),  # drops
        ("FR-D02", "vaccinated_first_dose_new", "daily_flow", "2021-05-01", 0.0),
        ("FR-D02", "vaccinated_first_dose_new", "daily_flow", "2021-05-02", 0.0),
        ("FR-D02", "vaccinated_first_dose_new", "daily_flow", "2021-05-03", 0.0),  # all zero
    ]
    for loc, metric, kind, day, value in rows:
        cassandra.execute(insert, (vintage, loc, metric, kind, datetime.fromisoformat(day).date(), value))
    cassandra.execute(
        f"INSERT INTO {KEYSPACE}.vintages_by_source (source_id, vintage, source_object_key) VALUES (%s, %s, %s)",
        ("spf_vacsi", vintage, "spf/vacsi/vacsi-dep.csv"),
    )
    conf = {"sources": ["spf_vacsi"], "reference_time": REFERENCE, "keyspace": KEYSPACE, "index": INDEX}
    result, output = run_dag(airflow_env, "covidflow_quality", conf)
    assert result["state"] == "success", output[-3000:]  # warnings only: the DAG does not fail
    assert result["tis"] == {"list_sources[-1]": "success", "check_source[0]": "success"}
    found = docs(es, result["run_id"])
    assert [(d["check"], d["status"], d.get("series", "")) for d in found] == [
        ("all_zero", "warning", "FR-D02|vaccinated_first_dose_new|day||||"),
        ("cumulative_drop", "warning", "FR-D01|vaccinated_first_dose_cumulative|day||||"),
        ("summary", "warning", ""),
    ]
    assert found[2]["message"] == "0 blocking, 2 warning(s) over 5 records"
    quality = dashboard_checks(es)["spf_vacsi"]["quality"]
    assert (quality["status"], quality["message"]) == ("warning", "0 blocking, 2 warning(s) over 5 records")
    assert found[1]["message"] == (
        "WARNING cumulative_drop spf_vacsi [FR-D01|vaccinated_first_dose_cumulative|day||||]: "
        "cumulative series goes down 1 time(s): 2021-05-01=100 -> 2021-05-02=90"
    )
