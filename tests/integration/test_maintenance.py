"""Maintenance DAGs on the real local stack, each run with ``dag.test()`` against throwaway names.

Needs `covidflow stack up cassandra elasticsearch`. A keyspace ``mt_<random>`` and an alias
``mt-<random>-obs`` keep these runs away from the real covid-observations data; both are removed after.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import covidflow

# Same Airflow home as tests/dags (whichever module imports Airflow first decides it for the session).
os.environ.setdefault("AIRFLOW_HOME", os.path.join(tempfile.gettempdir(), "covidflow-test-airflow-home"))
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(covidflow.PROJECT_ROOT / "dags"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

from covidflow import clients, settings
from covidflow.clients import cassandra_cluster, cassandra_endpoint
from covidflow.stack.connections import airflow_conn_env
from covidflow.stack.home import StackHome

pytestmark = pytest.mark.integration

RUN = uuid.uuid4().hex[:8]
KEYSPACE = f"mt_{RUN}"
HOST = "127.0.0.1"


@pytest.fixture(scope="module", autouse=True)
def airflow_env() -> None:
    """Connections as the stack defines them, and a migrated metadata DB for dag.test()."""
    os.environ.update(airflow_conn_env(StackHome.from_env()))
    airflow = os.path.join(os.path.dirname(sys.executable), "airflow")
    proc = subprocess.run([airflow, "db", "migrate"], capture_output=True, text=True, env=os.environ)
    assert proc.returncode == 0, proc.stderr[-2000:]


def _dag(dag_id: str) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(covidflow.PROJECT_ROOT / "dags" / f"{dag_id}.py"))
    assert bag.import_errors == {}, bag.import_errors
    return bag.dags[dag_id]


def run_dag(dag_id: str, conf: dict[str, Any]) -> tuple[str, dict[str, str], Any]:
    """dag.test() with ``conf`` as params: (run state, task states, xcom getter)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    dr = _dag(dag_id).test(run_conf=conf)
    with create_session() as session:
        states = {ti.task_id: str(ti.state) for ti in dr.get_task_instances(session=session)}

    def xcom(task_id: str, key: str = "return_value") -> Any:
        with create_session() as session:
            row = (
                session.query(XComModel)
                .filter_by(dag_id=dag_id, run_id=dr.run_id, task_id=task_id, key=key)
                .one_or_none()
            )
            return None if row is None else XComModel.deserialize_value(row)

    return str(dr.state), states, xcom


# ---------------------------------------------------------------------------------------------------------------
# Cassandra
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cassandra():

    from covidflow.store.cassandra_schema import generate_cql, statements

    cluster = cassandra_cluster(cassandra_endpoint(), connect_timeout=10)
    try:
        session = cluster.connect()
    except Exception as exc:  # any driver error means the stack is not up
        pytest.fail(f"Cassandra unreachable at {settings.CASSANDRA_HOST}: {exc}; run `covidflow stack up cassandra`")
    for statement in statements(generate_cql(keyspace=KEYSPACE)):
        session.execute(statement, timeout=60)
    yield session
    session.execute(f"DROP KEYSPACE IF EXISTS {KEYSPACE}", timeout=60)
    cluster.shutdown()


def nodetool(*args: str) -> str:
    from covidflow.store.maintenance import load_config, run_nodetool

    return run_nodetool(load_config()["cassandra"]["nodetool"], HOST, *args)


def write_and_flush(session: Any, table: str, batches: int, start: int = 0) -> None:
    """One sstable per batch: insert a few rows, then flush the memtable."""
    insert = session.prepare(f"INSERT INTO {KEYSPACE}.{table} (source_id, vintage, source_object_key) VALUES (?, ?, ?)")
    for b in range(start, start + batches):
        for s in range(3):
            session.execute(insert, (f"src{s}", datetime(2024, 1, 1, tzinfo=UTC) + timedelta(days=b), f"k{b}"))
        nodetool("flush", KEYSPACE, table)


def test_cassandra_check_passes_on_a_healthy_keyspace(cassandra) -> None:
    write_and_flush(cassandra, "vintages_by_source", 1)
    state, tasks, xcom = run_dag("covidflow_cassandra_maintenance", {"keyspace": KEYSPACE})
    assert (state, tasks) == ("success", {"inspect": "success", "compact": "success", "check": "success"})
    report = xcom("check", "report")
    assert report["status"] == "ok" and report["findings"] == []
    node = report["nodes"][HOST]
    assert node["nodetool"] == "ok"
    tables = node["tables"]
    assert sorted(tables) == ["observations_by_vintage", "observations_latest", "vintages_by_source"]
    assert {t: m["sstable_count"] for t, m in tables.items()} == {
        "observations_by_vintage": 0,
        "observations_latest": 0,
        "vintages_by_source": 1,
    }
    assert tables["observations_latest"]["compaction_class"] == "UnifiedCompactionStrategy"
    assert tables["observations_latest"]["compaction_options"]["scaling_parameters"] == "L4"
    assert all(m["compaction_drift"] == [] for m in tables.values())
    assert tables["vintages_by_source"]["space_used_live_bytes"] > 0
    assert node["not_observed"] == []


def test_cassandra_check_fails_on_too_many_sstables_and_dry_run_changes_nothing(cassandra) -> None:
    nodetool("disableautocompaction", KEYSPACE, "vintages_by_source")  # compaction "falling behind"
    write_and_flush(cassandra, "vintages_by_source", 5, start=1)
    conf = {"keyspace": KEYSPACE, "thresholds": {"sstable_count": 4}, "compact": True}  # dry_run defaults to true
    state, tasks, xcom = run_dag("covidflow_cassandra_maintenance", conf)
    assert (state, tasks) == ("failed", {"inspect": "success", "compact": "success", "check": "failed"})
    report = xcom("check", "report")
    assert [f["message"] for f in report["findings"]] == [
        f"[FAIL] node {HOST} table vintages_by_source: sstable_count = 6 > threshold 4"
    ]
    assert xcom("compact") == {"ran": False, "targets": {HOST: ["vintages_by_source"]}, "sstables_before": {
        HOST: {"observations_by_vintage": 0, "observations_latest": 0, "vintages_by_source": 6}}}  # fmt: skip
    assert report["nodes"][HOST]["tables"]["vintages_by_source"]["sstable_count"] == 6


def test_cassandra_compaction_flag_reduces_the_sstable_count(cassandra) -> None:
    conf = {"keyspace": KEYSPACE, "thresholds": {"sstable_count": 4}, "compact": True, "dry_run": False}
    state, tasks, xcom = run_dag("covidflow_cassandra_maintenance", conf)
    assert (state, tasks) == ("success", {"inspect": "success", "compact": "success", "check": "success"})
    report = xcom("check", "report")
    assert report["compaction"]["sstables_before"][HOST]["vintages_by_source"] == 6
    assert report["compaction"]["sstables_after"][HOST]["vintages_by_source"] == 1
    assert report["status"] == "ok"
    rows = cassandra.execute(f"SELECT count(*) FROM {KEYSPACE}.vintages_by_source").one()[0]
    assert rows == 18  # 6 batches x 3 sources, nothing lost by the compaction


# ---------------------------------------------------------------------------------------------------------------
# Elasticsearch
# ---------------------------------------------------------------------------------------------------------------

PREFIX = f"mt-{RUN}"


@pytest.fixture(scope="module")
def es():

    client = clients.elasticsearch(cached=False, request_timeout=60)
    try:
        client.cluster.health(wait_for_status="yellow", timeout="10s")
    except Exception as exc:  # any transport error means the stack is not up
        pytest.fail(f"Elasticsearch unreachable at {settings.ELASTICSEARCH_URL}: {exc}; run `covidflow stack up`")
    yield client
    leftovers = sorted(client.indices.get(index=f"{PREFIX}-*", expand_wildcards="all"))
    if leftovers:  # destructive_requires_name: no wildcard deletes
        client.indices.delete(index=leftovers)
    for suffix in ("roll", "rx", "rxv", "rb", "rbs"):
        client.options(ignore_status=404).indices.delete_index_template(name=f"{PREFIX}-{suffix}")
    client.close()


def doc(n: int, ingested: str = "2024-06-01T00:00:00Z", value: float | None = None) -> dict[str, Any]:
    """A small document valid under both the old and the new mapping."""
    value = float(n if value is None else value)
    return {"record_id": f"r{n:06d}", "source_id": "mt", "date": "2024-01-01", "value": value, "ingested_at": ingested}


def bulk(es: Any, index: str, docs: list[dict[str, Any]]) -> None:
    from elasticsearch import helpers

    helpers.bulk(es, ({"_index": index, "_id": d["record_id"], "_source": d} for d in docs), refresh=True)


def aliases_of(es: Any, alias: str) -> dict[str, bool]:
    return {i: bool(b["aliases"][alias].get("is_write_index")) for i, b in es.indices.get_alias(name=alias).items()}


def test_rollover_creates_the_next_index_and_search_spans_both(es) -> None:
    from covidflow.index import maintenance as m

    alias = f"{PREFIX}-roll"
    m.put_template(es, alias)
    assert m.ensure_alias(es, alias) == f"{alias}-000001"
    bulk(es, alias, [doc(n) for n in range(10)])

    state, tasks, xcom = run_dag("covidflow_es_rollover", {"alias": alias, "conditions": {"max_docs": 5}})
    assert (state, tasks) == ("success", {"verify_template": "success", "rollover": "success", "retention": "success"})
    result = xcom("rollover")
    assert (result["old_index"], result["new_index"], result["rolled_over"]) == (
        f"{alias}-000001", f"{alias}-000002", True)  # fmt: skip
    assert result["conditions"]["[max_docs: 5]"] is True
    assert aliases_of(es, alias) == {f"{alias}-000001": False, f"{alias}-000002": True}
    assert xcom("retention") == {"expired": [], "applied": [], "action": "close", "days": 730}

    bulk(es, alias, [doc(n) for n in range(10, 14)])  # lands in the new write index
    assert es.count(index=f"{alias}-000001")["count"] == 10
    assert es.count(index=f"{alias}-000002")["count"] == 4
    assert es.count(index=alias)["count"] == 14
    hits = es.search(index=alias, query={"terms": {"record_id": ["r000003", "r000012"]}})["hits"]["hits"]
    assert sorted((h["_index"], h["_id"]) for h in hits) == [
        (f"{alias}-000001", "r000003"),
        (f"{alias}-000002", "r000012"),
    ]
    assert es.search(index=alias, query={"range": {"value": {"gte": 8}}}, size=0)["hits"]["total"]["value"] == 6

    # Run again: the fresh write index meets no condition; retention (0 days, applied) closes -000001.
    conf = {"alias": alias, "conditions": {"max_docs": 5}, "retention_days": 0, "apply_retention": True}
    state, tasks, xcom = run_dag("covidflow_es_rollover", conf)
    assert state == "success", tasks
    assert xcom("rollover")["rolled_over"] is False
    assert xcom("retention") == {"expired": [f"{alias}-000001"], "applied": [f"{alias}-000001"], "action": "close",
                                 "days": 0}  # fmt: skip
    assert aliases_of(es, alias) == {f"{alias}-000002": True}
    assert es.cat.indices(index=f"{alias}-000001", h="status", expand_wildcards="all").strip() == "close"
    assert es.count(index=alias)["count"] == 4


def all_values(es: Any, index: str) -> dict[str, float]:
    """Every document of ``index`` (or alias): id -> value, read in full (no sample)."""
    from elasticsearch import helpers

    es.indices.refresh(index=index)
    return {h["_id"]: h["_source"]["value"] for h in helpers.scan(es, index=index, size=1000)}


def test_reindex_under_the_stream_writer_loses_no_update(es) -> None:
    """Issue 14 item 3: the real EsWriter writes during the whole reindex, and writes ids an old index holds into
    that old index; every id and every last value must be in the target after the swap."""
    import threading

    from covidflow.index.es_writer import EsWriter

    alias = f"{PREFIX}-rx"
    old1, old2, target = f"{alias}-000001", f"{alias}-000002", f"{alias}-v1-000001"
    # Mapping "v0": what an older schema produced (location_name keyword-only, no template).
    keyword, date = {"type": "keyword"}, {"type": "date"}
    v0 = {"dynamic": "strict", "properties": {
        "record_id": keyword, "source_id": keyword, "date": date, "value": {"type": "double"}, "ingested_at": date,
        "location_name": keyword}}  # fmt: skip
    es.indices.create(index=old1, mappings=v0, aliases={alias: {"is_write_index": True}})
    bulk(es, alias, [doc(n) for n in range(2000)])
    es.indices.rollover(alias=alias, mappings=v0)  # two old indices, as after a rollover
    bulk(es, alias, [doc(n) for n in range(2000, 3000)])
    expected = {f"r{n:06d}": float(n) for n in range(3000)}

    writer = EsWriter(es, alias=alias, retry_for=300, threads=1)
    written: dict[str, float] = {}
    stop = threading.Event()
    errors: list[BaseException] = []

    def write() -> None:
        """New records, and updates of records both old indices hold (some ids updated again and again)."""
        n = 0
        try:
            while not stop.is_set():
                now = (datetime(2024, 7, 1, tzinfo=UTC) + timedelta(seconds=n)).isoformat()
                batch = [doc(100000 + n, ingested=now), doc(n % 3000, ingested=now, value=-n),
                         doc(1990 + n % 20, ingested=now, value=-1000 - n),
                         doc(2990 + n % 10, ingested=now, value=-2000 - n)]  # fmt: skip
                writer.write(batch)
                written.update((d["record_id"], d["value"]) for d in batch)
                n += 1
                time.sleep(0.01)
        except BaseException as exc:  # reported by the test, not lost in the thread
            errors.append(exc)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    try:
        time.sleep(0.5)
        state, tasks, xcom = run_dag("covidflow_es_reindex", {"alias": alias})
        time.sleep(0.5)  # the writer goes on after the swap: its retried writes land in the target
    finally:
        stop.set()
        thread.join(timeout=120)
    assert errors == []
    assert state == "success", tasks
    assert xcom("copy")["path"] == "client"  # the minimal distribution has no reindex module
    assert aliases_of(es, alias) == {target: True}
    updates = {k for k in written if int(k[1:]) < 100000}
    assert len(updates) > 50 and len(written) - len(updates) > 10, "the writer did not overlap the reindex"
    assert xcom("copy")["caught_up"] > 0, "no update landed in an old index during the copy"

    expected.update(written)
    got = all_values(es, alias)
    from fault_matrix import record as record_fault

    record_fault("a rollover, then a reindex during a stream of writes (Elasticsearch)", {
        "sent": len(expected), "stored_cassandra": -1,  # the real EsWriter only: Cassandra is not involved
        "stored_elasticsearch": sum(got.get(k) == v for k, v in expected.items()),
        "duplicated": es.count(index=alias)["count"] - len(got) + len(set(got) - set(expected)),
        "lost": sum(got.get(k) != v for k, v in expected.items()),
    }, updates_during_reindex=len(updates))  # fmt: skip
    assert sorted(got) == sorted(expected)  # the full id set
    lost = {k: (got[k], v) for k, v in expected.items() if got[k] != v}
    assert lost == {}, f"{len(lost)} updates lost: {sorted(lost.items())[:5]}"
    assert all_values(es, target) == expected
    assert xcom("verify")["target_count"] == xcom("verify")["target_ids"]
    meta = es.indices.get_mapping(index=old1)[old1]["mappings"]["_meta"]
    assert meta["replaced_by"] == target
    assert m_saved_marks(es, target) is None

    # Second run: nothing to do; with no grace period the retired indices are removed.
    state, tasks, xcom = run_dag("covidflow_es_reindex", {"alias": alias, "grace_period_hours": 0})
    assert state == "success", tasks
    assert xcom("cleanup") == [old1, old2]
    assert xcom("plan")["sources"] == []
    assert not es.indices.exists(index=old1)
    assert all_values(es, alias) == expected


def test_reindex_verify_fails_on_a_lost_update_and_lifts_the_write_block(es) -> None:
    """verify compares every id and value: one value changed behind the copy's back (without a new _seq_no
    above the marks, as a write the old protocol lost) fails the run, and the old index takes writes again."""
    from covidflow.index import maintenance as m

    alias = f"{PREFIX}-rxv"
    old, target = f"{alias}-000001", f"{alias}-v1-000001"
    m.put_template(es, alias)
    m.ensure_alias(es, alias)
    bulk(es, alias, [doc(n) for n in range(500)])
    m.put_template(es, alias)
    es.indices.create(index=target)
    es.indices.update_aliases(actions=m.write_switch_actions(alias, [old], target))
    m.copy_and_catch_up(es, [old], target, "client", 100)
    es.index(index=target, id="r000007", document=doc(7, value=-7), refresh=True)  # the copy now differs
    es.delete(index=target, id="r000008", refresh=True)  # and misses one id
    report = m.finish_copy(es, [old], target, 100, 50)
    assert (report["missing"], report["differ"], report["source_ids"]) == (1, 1, 500)
    assert report["missing_examples"] == [f"r000008 (in {old})"]
    assert len(report["problems"]) == 2
    es.index(index=old, id="r000009", document=doc(9, value=99))  # the block is lifted again
    assert m.reindex_in_progress(es, alias) == target


def m_saved_marks(es: Any, index: str) -> Any:
    from covidflow.index import maintenance as m

    return m.saved_marks(es, index)


def canonical_records(vintages: int, per_vintage: int) -> list[dict[str, Any]]:
    """Real canonical records of one source (the SPF sample), ``vintages`` vintages of the same rows, each with
    other values; instants at Cassandra's millisecond precision; a few with coordinates."""
    from itertools import islice

    from covidflow.catalog.schema import record_id
    from covidflow.catalog.specs import find_spec
    from covidflow.normalise.preview import run_file

    spec = find_spec("spf_donnees_hospitalieres")
    base, _ = run_file(spec, spec.sample_path)
    base = list(islice(base, per_vintage))
    out = []
    for v in range(vintages):
        for i, rec in enumerate(base):
            rec = dict(rec)
            rec["vintage"] = rec["vintage"] + timedelta(days=v)
            ingested = rec["ingested_at"] + timedelta(days=v)
            rec["ingested_at"] = ingested.replace(microsecond=ingested.microsecond // 1000 * 1000)
            rec["value"] = float(rec["value"]) + v
            if i % 50 == 0:
                rec["location_point"] = {"lat": 48.5 + i / 1000, "lon": 2.25}
            rec["record_id"] = record_id(rec)
            out.append(rec)
    return out


def test_rebuild_from_cassandra_gives_the_streams_documents_for_every_vintage(cassandra, es) -> None:
    """Issue 14 item 2: the stream indexes every vintage; a rebuild must give back the same ids and documents."""
    import pyarrow as pa

    from covidflow.catalog.schema import arrow_schema
    from covidflow.index import maintenance as m
    from covidflow.index.es_writer import EsWriter
    from covidflow.store.cassandra_writer import CassandraWriter

    records = canonical_records(vintages=2, per_vintage=1200)
    assert len({r["record_id"] for r in records}) == 2400
    table = pa.Table.from_pylist(records, schema=arrow_schema())
    streamed = f"{PREFIX}-rbs"  # what the stream wrote: both writers on the same Arrow table (write_both)
    m.put_template(es, streamed)
    m.ensure_alias(es, streamed)
    CassandraWriter(cassandra, keyspace=KEYSPACE, retry_for=60).write(table)
    EsWriter(es, alias=streamed, retry_for=60).write(table)
    es.indices.refresh(index=streamed)
    before = {h["_id"]: h["_source"] for h in scan_all(es, streamed)}
    assert len(before) == 2400

    alias = f"{PREFIX}-rb"
    for attempt in (1, 2):  # the second run overwrites by _id: same count
        state, tasks, xcom = run_dag("covidflow_es_rebuild", {"alias": alias, "keyspace": KEYSPACE})
        assert (state, tasks) == ("success", {"prepare": "success", "rebuild": "success"}), attempt
        assert xcom("rebuild") == {"keyspace": KEYSPACE, "table": "observations_by_vintage", "alias": alias,
                                   "rows": 2400, "documents": 2400}  # fmt: skip
    after = {h["_id"]: h["_source"] for h in scan_all(es, alias)}
    assert sorted(after) == sorted(before)  # every vintage is back
    differ = sorted(k for k in before if after[k] != before[k])
    assert differ == [], f"{len(differ)} documents differ, e.g. {before[differ[0]]} != {after[differ[0]]}"

    # On a rolled-over alias the rebuild overwrites each id where it is (EsWriter's routing): no second copy.
    es.indices.rollover(alias=streamed)
    state, tasks, xcom = run_dag("covidflow_es_rebuild", {"alias": streamed, "keyspace": KEYSPACE})
    assert state == "success", tasks
    assert es.count(index=f"{streamed}-000002")["count"] == 0
    assert {h["_id"]: h["_source"] for h in scan_all(es, streamed)} == before


def scan_all(es: Any, index: str) -> list[dict[str, Any]]:
    from elasticsearch import helpers

    es.indices.refresh(index=index)
    return list(helpers.scan(es, index=index, size=1000))
