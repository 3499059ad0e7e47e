"""End to end on the real local stack: bundled samples -> Kafka -> Spark job -> Cassandra + Elasticsearch -> query.

The S3 upload -> ingest DAG leg has its own end-to-end test (test_e2e_s3.py); here every sample is put on
covid.raw.v1 as RawEnvelopes by ``covidflow.normalise.replay`` (same readers, same envelope), so one job run can
check exact values for all of them, dead letters, a replay, a corrected vintage and the dashboard API. The job is
submitted with ``spark-submit`` to the standalone master (local[2] if it does not answer), under its own app
name and checkpoint, with ``--available-now``. Unreachable services fail the test, they never skip it.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from covidflow import clients, settings
from covidflow.catalog.specs import find_spec, load_all
from covidflow.clients import cassandra_cluster, cassandra_endpoint, kafka_config
from covidflow.normalise.replay import envelopes_for_file, publish_file
from covidflow.normalise.stream import process_messages
from covidflow.normalise.stream_runtime import NormaliserCache
from covidflow.normalise.supervise import build_bundle, fetch_master_status, high_watermarks, spark_submit_command
from covidflow.publish.envelope import DEADLETTER_TOPIC, RAW_TOPIC
from covidflow.read.base import RawReject
from covidflow.stack.home import StackHome
from covidflow.stack.services.spark import kafka_connector_jars, spark_env

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

BAD_FILE = "donnees-hospitalieres-covid19_e2e_bad.csv"
BAD_ROWS = (
    '"dep";"sexe";"jour";"hosp";"rea";"rad";"dc"\n'
    '"999";0;"2020-04-01";1;1;1;1\n'  # unknown department: the whole row is rejected
    '"75";0;"2020-13-45";1;1;1;1\n'  # unparsable date
    '"75";7;"2020-04-01";1;1;1;1\n'  # unknown sex code
    '"75";0;"2020-05-02";-5;1;1;1\n'  # negative stock: only hosp is rejected, rea/rad/dc are kept (outside the sample)
)
EXPECTED_BAD_REASONS = sorted(
    [
        "dep: unknown location (fr_department): '999'",
        "jour: unparsable date (expected %Y-%m-%d): '2020-13-45'",
        "sexe: unknown sex value (not in the spec's map): '7'",
        "hosp: negative value for hospital_occupancy (stock): '-5'",
    ]
)
UNDECODABLE = b"not json: e2e marker"


def _producer():
    from confluent_kafka import Producer

    return Producer(kafka_config({"enable.idempotence": True}))


def _require_services() -> None:
    """Fail (not skip) with the service named when the stack is not up."""
    from confluent_kafka.admin import AdminClient

    AdminClient(kafka_config()).list_topics(timeout=10)  # raises if unreachable
    cluster = cassandra_cluster(cassandra_endpoint(), connect_timeout=10)
    cluster.connect().execute("SELECT release_version FROM system.local")
    cluster.shutdown()
    health = clients.elasticsearch(cached=False).cluster.health(wait_for_status="yellow", timeout="30s")
    assert health["status"] in ("green", "yellow"), health


def run_job(tmp_state: Path, *, timeout: float = 900) -> dict:
    """spark-submit the job once (availableNow) and return its heartbeat."""
    home = StackHome.from_env()
    master = settings.SPARK_MASTER if fetch_master_status() else "local[2]"
    cmd = spark_submit_command(
        master,
        ["--available-now", "--app-name", "covidflow-normalise-e2e"],
        bundle=build_bundle(tmp_state / "bundle.zip"),
        jars=kafka_connector_jars(home),
    )
    env = {**os.environ, **spark_env(home), "COVIDFLOW_STREAM_STATE_DIR": str(tmp_state)}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    (tmp_state / f"job-{time.time():.0f}.log").write_text(proc.stdout + proc.stderr)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads((tmp_state / "heartbeat.json").read_text())


def expected_records(files: list[tuple[str, Path]], vintage: datetime) -> dict[str, dict]:
    cache = NormaliserCache()
    out: dict[str, dict] = {}
    for source_id, path in files:
        envs = [
            e for e in envelopes_for_file(find_spec(source_id), path, vintage=vintage) if not isinstance(e, RawReject)
        ]
        table = process_messages([e.to_json() for e in envs], cache).records  # Arrow, as the stream writes it
        out.update((r["record_id"], r) for r in table.to_pylist())
    return out


def cassandra_by_vintage(expected: dict[str, dict]) -> dict[str, float]:
    """record_id -> value of every row in the observations_by_vintage partitions the expected records fall in."""
    from cassandra.concurrent import execute_concurrent_with_args

    sess = cassandra_cluster(cassandra_endpoint()).connect("covidflow")
    parts = {(r["source_id"], r["vintage"], r["location_key"], r["metric"]) for r in expected.values()}
    stmt = sess.prepare(
        "SELECT record_id, value FROM observations_by_vintage WHERE source_id=? AND vintage=? AND location_key=? "
        "AND metric=?"
    )
    found: dict[str, float] = {}
    for ok, rows in execute_concurrent_with_args(sess, stmt, sorted(parts), concurrency=64):
        assert ok, rows
        found.update({row.record_id: row.value for row in rows})
    return found


def es_by_vintage(expected: dict[str, dict]) -> dict[str, float]:
    from elasticsearch import helpers

    es = clients.elasticsearch(cached=False)
    es.indices.refresh(index="covid-observations")
    pairs = {(r["source_id"], r["vintage"].isoformat()) for r in expected.values()}
    found: dict[str, float] = {}
    for source, vintage in sorted(pairs):
        query = {"query": {"bool": {"filter": [{"term": {"source_id": source}}, {"term": {"vintage": vintage}}]}}}
        for hit in helpers.scan(es, index="covid-observations", query=query, _source=["value"]):
            found[hit["_id"]] = hit["_source"]["value"]
    return found


def dead_letters_since(start: dict[str, int]) -> list[dict]:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(kafka_config({"group.id": "e2e-reader", "enable.auto.commit": False}))
    high = high_watermarks(DEADLETTER_TOPIC).get(DEADLETTER_TOPIC, {})
    consumer.assign([TopicPartition(DEADLETTER_TOPIC, int(p), start.get(p, 0)) for p in high])
    want = sum(h - start.get(p, 0) for p, h in high.items())
    out: list[dict] = []
    deadline = time.monotonic() + 60
    while len(out) < want and time.monotonic() < deadline:
        msg = consumer.poll(1.0)
        if msg is not None and not msg.error():
            out.append(json.loads(msg.value()))
    consumer.close()
    return out


def csv_hosp(path: Path, dep: str, sexe: str, jour: str) -> float:
    """Read the value independently of covidflow's readers."""
    with path.open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh, delimiter=";"):
            if row["dep"] == dep and row["sexe"] == sexe and row["jour"] == jour:
                return float(row["hosp"])
    raise AssertionError("row not in file")


def covidflow_query(*args: str) -> list[dict]:
    exe = Path(sys.executable).parent / "covidflow"
    proc = subprocess.run([str(exe), "query", *args, "--format", "json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def cassandra_latest(
    sess: object, location: str, metric: str, source: str, start: str, end: str
) -> dict[tuple[str, str], float]:
    """(date, variant) -> value of the all-sexes, all-ages rows of observations_latest (the system of record)."""
    rows = sess.execute(
        "SELECT date, variant, sex, age_group, source_id, value FROM observations_latest WHERE location_key=%s "
        "AND metric=%s AND date>=%s AND date<=%s",
        (location, metric, start, end),
    )
    out: dict[tuple[str, str], float] = {}
    for r in rows:
        if r.source_id == source and r.sex == "all" and r.age_group == "all":
            key = (str(r.date), r.variant)
            assert key not in out, f"two rows for one point: {location} {metric} {key}"  # upstream must not split it
            out[key] = r.value
    return out


def assert_dashboard_shows_cassandra(corrected_value: float) -> None:
    """The dashboard API (Elasticsearch aggregations) returns the figures Cassandra holds, the correction included."""
    from fastapi.testclient import TestClient

    from covidflow.show.api import create_app

    es = clients.elasticsearch(cached=False)
    cluster = cassandra_cluster(cassandra_endpoint())
    sess = cluster.connect("covidflow")  # one session for every lookup below
    try:
        es.indices.refresh(index="covid-observations")
        api = TestClient(create_app(alias="covid-observations", client_factory=lambda: es))
        spf, day = "spf_donnees_hospitalieres", "2020-04-01"

        # The map: every department of the sample's first day, one partition of Cassandra each.
        shown = api.get("/api/map", params={"metric": "hospital_occupancy", "date": day, "source": spf})
        assert shown.status_code == 200, shown.text
        places = {p["key"]: p["value"] for p in shown.json()["places"]}
        assert len(places) == 101 and places["FR-D75"] == corrected_value
        stored = {key: cassandra_latest(sess, key, "hospital_occupancy", spf, day, day)[(day, "all")] for key in places}
        assert places == stored

        # A time series of two weeks for two departments.
        shown = api.get("/api/series", params={"metric": "hospital_occupancy", "place": ["FR-D13", "FR-D69"],
                                               "start": day, "end": "2020-04-14", "source": spf})  # fmt: skip
        assert shown.status_code == 200, shown.text
        assert [s["key"] for s in shown.json()["series"]] == ["FR-D13", "FR-D69"]
        for series in shown.json()["series"]:
            stored = cassandra_latest(sess, series["key"], "hospital_occupancy", spf, day, "2020-04-14")
            assert len(series["points"]) == 14
            assert {p["date"]: p["value"] for p in series["points"]} == {d: v for (d, _), v in stored.items()}

        # The variant panel: every share published for France, BF.7 among them.
        variants = "gerstung_variant_share"  # the sample that names BF.7 (ECDC's has no BF.7 row)
        shown = api.get("/api/variants", params={"country": "FR", "source": variants})
        assert shown.status_code == 200, shown.text
        (panel,) = shown.json()["sources"]
        api_shares = {
            (d, v["variant"]): share
            for v in panel["variants"]
            for d, share in zip(panel["dates"], v["share"], strict=True)
            if share is not None
        }
        stored = cassandra_latest(sess, "FR", "variant_share", variants, "2019-12-01", "2030-01-01")
        stored = {k: v for k, v in stored.items() if k[1] != "all"}
        assert api_shares == stored and any(v == "BF.7" for _, v in stored)
    finally:
        cluster.shutdown()


def test_samples_to_stores_and_query(tmp_path_factory: pytest.TempPathFactory) -> None:
    _require_services()
    state = Path(os.environ.get("COVIDFLOW_E2E_STATE", StackHome.from_env().root / "data" / "spark" / "e2e"))
    state.mkdir(parents=True, exist_ok=True)
    bad_dir = tmp_path_factory.mktemp("bad")
    bad = bad_dir / BAD_FILE
    bad.write_text(BAD_ROWS, encoding="utf-8")
    vintage = datetime.now(UTC).replace(microsecond=0)  # unique: landed_at-vintage sources get fresh partitions
    files = [(s.id, s.sample_path) for s in load_all().values() if s.sample_path and s.sample_path.exists()]
    files.append(("spf_donnees_hospitalieres", bad))
    expected = expected_records(files, vintage)
    assert len(expected) > 50_000

    dl_start = high_watermarks(DEADLETTER_TOPIC).get(DEADLETTER_TOPIC, {})
    producer = _producer()
    published = sum(publish_file(producer, find_spec(sid), path, vintage=vintage).envelopes for sid, path in files)
    producer.produce(RAW_TOPIC, UNDECODABLE)
    producer.flush(30)
    beat = run_job(state)
    assert beat["totals"]["input_rows"] >= published + 1

    # Cassandra and Elasticsearch hold exactly the valid records (ids and values), nothing more in those partitions.
    want = {rid: r["value"] for rid, r in expected.items()}
    assert cassandra_by_vintage(expected) == want
    assert es_by_vintage(expected) == want

    # Dead letters: the four bad rows with their reasons, and the undecodable message. The topic is at-least-once
    # (a replayed batch, or the DAG-run stream reading the same topic, sends the same letter again): compare by key.
    letters = dead_letters_since(dl_start)
    ours = {(d["record_index"], d["reason"]) for d in letters if d["object"]["key"].endswith(BAD_FILE)}
    assert sorted(reason for _, reason in ours) == EXPECTED_BAD_REASONS
    assert sorted(index for index, _ in ours) == [1, 2, 3, 4]
    assert all(d["stage"] == "normalise" and d["source_id"] == "spf_donnees_hospitalieres"
               for d in letters if d["object"]["key"].endswith(BAD_FILE))  # fmt: skip
    junk = {d["reason"] for d in letters if d["excerpt"] == UNDECODABLE.decode()}
    assert len(junk) == 1 and junk.pop().startswith("undecodable envelope")

    # Exact values through `covidflow query`, against the file read with the csv module.
    spf_id = "spf_donnees_hospitalieres"
    spf = find_spec(spf_id).sample_path
    rows = covidflow_query("--location", "FR-D75", "--metric", "hospital_occupancy", "--from", "2020-04-01",
                           "--to", "2020-04-01")  # fmt: skip
    by_sex = {r["sex"]: r["value"] for r in rows if r["source_id"] == "spf_donnees_hospitalieres"}
    assert by_sex == {
        "all": csv_hosp(spf, "75", "0", "2020-04-01"),
        "male": csv_hosp(spf, "75", "1", "2020-04-01"),
        "female": csv_hosp(spf, "75", "2", "2020-04-01"),
    }
    es_rows = covidflow_query("--location", "FR-D75", "--metric", "hospital_occupancy", "--from", "2020-04-01",
                              "--to", "2020-04-01", "--store", "elasticsearch")  # fmt: skip
    assert es_rows == rows
    as_of = covidflow_query("--location", "FR-D75", "--metric", "hospital_occupancy", "--from", "2020-04-02",
                            "--to", "2020-04-02", "--as-of", vintage.isoformat())  # fmt: skip
    spf_as_of = {r["sex"]: (r["value"], r["vintage"]) for r in as_of if r["source_id"] == "spf_donnees_hospitalieres"}
    assert spf_as_of["all"] == (csv_hosp(spf, "75", "0", "2020-04-02"), vintage.isoformat())

    # Replaying the same objects changes nothing: same ids, same values, no extra row or document.
    per_source = defaultdict(int)
    for r in expected.values():
        per_source[r["source_id"]] += 1
    producer = _producer()
    for sid, path in files:
        publish_file(producer, find_spec(sid), path, vintage=vintage)
    beat2 = run_job(state)
    assert beat2["totals"]["input_rows"] >= published
    assert cassandra_by_vintage(expected) == want
    assert es_by_vintage(expected) == want
    from fault_matrix import assert_clean

    assert_clean("the same objects replayed twice", expected)

    # A corrected file is a new vintage: the latest value changes, the earlier vintage stays queryable as of.
    corrected = bad_dir / "donnees-hospitalieres-covid19_e2e_corrected.csv"
    corrected.write_text('"dep";"sexe";"jour";"hosp";"rea";"rad";"dc"\n"75";0;"2020-04-01";9999;1;1;1\n')
    v2 = vintage + timedelta(seconds=1)
    publish_file(_producer(), find_spec("spf_donnees_hospitalieres"), corrected, vintage=v2)
    run_job(state)
    args = ("--location", "FR-D75", "--metric", "hospital_occupancy", "--from", "2020-04-01", "--to", "2020-04-01")
    latest = {r["sex"]: (r["value"], r["vintage"]) for r in covidflow_query(*args) if r["source_id"] == spf_id}
    assert latest["all"] == (9999.0, v2.isoformat())
    assert latest["male"][0] == csv_hosp(spf, "75", "1", "2020-04-01")  # not in the correction
    before = {r["sex"]: r["value"] for r in covidflow_query(*args, "--as-of", vintage.isoformat())
              if r["source_id"] == spf_id}  # fmt: skip
    assert before["all"] == csv_hosp(spf, "75", "0", "2020-04-01")
    assert cassandra_by_vintage(expected) == want  # the earlier vintage is untouched
    assert_dashboard_shows_cassandra(9999.0)

    # Corrected again under the same file name: same vintage, same ids, a lower value. The later ingest wins in
    # every store (docs/decisions/0018); with the vintage as Cassandra's write time, the larger value stayed.
    corrected.write_text('"dep";"sexe";"jour";"hosp";"rea";"rad";"dc"\n"75";0;"2020-04-01";5;1;1;1\n')
    again = datetime.now(UTC).replace(microsecond=0)
    publish_file(_producer(), find_spec("spf_donnees_hospitalieres"), corrected, vintage=v2, published_at=again)
    run_job(state)
    for store in ("cassandra", "elasticsearch"):
        latest = {r["sex"]: (r["value"], r["vintage"]) for r in covidflow_query(*args, "--store", store)
                  if r["source_id"] == spf_id}  # fmt: skip
        assert latest["all"] == (5.0, v2.isoformat()), store
    as_of_v2 = {r["sex"]: r["value"] for r in covidflow_query(*args, "--as-of", v2.isoformat())
                if r["source_id"] == spf_id}  # fmt: skip
    assert as_of_v2["all"] == 5.0  # observations_by_vintage
    assert_dashboard_shows_cassandra(5.0)


def test_an_aborted_ingest_transaction_never_reaches_the_stores() -> None:
    """A publish attempt that failed (its transaction aborted) is in Kafka's log but must never be stored: the
    job reads ``read_committed``. The committed twin, published next, proves the job ran over both."""
    from confluent_kafka import Producer

    _require_services()
    state = Path(os.environ.get("COVIDFLOW_E2E_STATE", StackHome.from_env().root / "data" / "spark" / "e2e"))
    state.mkdir(parents=True, exist_ok=True)
    spec = find_spec("who_covid19_global_weekly")  # vintage from landed_at: each vintage is a fresh partition
    base = datetime.now(UTC).replace(microsecond=0)
    aborted_v, committed_v = base + timedelta(seconds=30), base + timedelta(seconds=31)
    aborted = expected_records([(spec.id, spec.sample_path)], aborted_v)
    committed = expected_records([(spec.id, spec.sample_path)], committed_v)
    assert len(aborted) == len(committed) > 900

    producer = Producer(kafka_config({"enable.idempotence": True,
                                      "transactional.id": f"it-e2e-aborted-{base.timestamp():.0f}"}))  # fmt: skip
    producer.init_transactions(30)
    producer.begin_transaction()
    publish_file(producer, spec, spec.sample_path, vintage=aborted_v)  # flushed: in the log, not committed
    producer.abort_transaction(30)
    producer.begin_transaction()
    publish_file(producer, spec, spec.sample_path, vintage=committed_v)
    producer.commit_transaction(30)
    run_job(state)

    assert cassandra_by_vintage(committed) == {rid: r["value"] for rid, r in committed.items()}
    assert cassandra_by_vintage(aborted) == {}
    assert es_by_vintage(aborted) == {}
