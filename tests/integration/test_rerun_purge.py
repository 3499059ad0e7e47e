"""A re-run purges what a fix made obsolete, in both stores (issue 13 item 3, ADR 0016), on the running stack.

A private source (a copy of the ECDC spec: the vintage is the date in the file name) publishes two snapshots from a
scratch bucket through its real ingest DAG: an older one and a newer one overlapping it. The older file is then
corrected under the same name (so the same vintage): rows dropped, one value lowered. ``covidflow ingest rerun
--key`` re-publishes it; the run's ``purge_obsolete`` task deletes what the re-run did not write again. Both
Cassandra record tables and Elasticsearch then hold exactly the corrected records for that object, and the newer
snapshot is untouched, also where it shares keys with the dropped rows in ``observations_latest``.
Needs the whole stack and the stream running (`make demo`).
"""

from __future__ import annotations

import subprocess
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

import covidflow
from covidflow.catalog.specs import SOURCES_DIR, find_spec
from covidflow.stack.airflow_api import AirflowClient

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

COVIDFLOW = str(covidflow.PROJECT_ROOT / ".venv" / "bin" / "covidflow")
BASE = "ecdc_weekly_cases_deaths"
HEADER = '"location_name","location","indicator","year_week","value","source"\n'
WEEKS = ("2022-35", "2022-36")


def csv(rows: dict[tuple[str, str, str], int]) -> bytes:
    """(country, indicator, week) -> value as the ECDC file spells it."""
    lines = [f'"{c}","{c}","{ind}","{week}",{value},"TESSy COVID-19"\n' for (c, ind, week), value in rows.items()]
    return (HEADER + "".join(lines)).encode()


METRIC = {"cases": "cases_weekly", "deaths": "deaths_weekly"}


def as_records(rows: dict[tuple[str, str, str], int]) -> dict[tuple[str, str, str], float]:
    """(location_key, metric, week) -> value: what the stores must hold for a file."""
    return {(c, METRIC[ind], week): float(v) for (c, ind, week), v in rows.items()}


def week_of(day: Any) -> str:
    year, week, _ = day.isocalendar()
    return f"{year}-{week:02d}"


def by_vintage(sess: Any, source_id: str, vintage: datetime) -> dict[tuple[str, str, str], tuple[float, Any, str]]:
    rows = sess.execute(
        "SELECT location_key, metric, date, value, ingested_at, source_object_key "
        "FROM covidflow.observations_by_vintage WHERE source_id = %s AND vintage = %s ALLOW FILTERING",
        [source_id, vintage],
        timeout=60,
    )
    return {(r[0], r[1], week_of(r[2].date())): (r[3], r[4], r[5]) for r in rows}


def latest(sess: Any, source_id: str, places: set[str]) -> dict[tuple[str, str, str], tuple[float, datetime]]:
    out = {}
    for place in places:
        for metric in METRIC.values():
            rows = sess.execute(
                "SELECT date, source_id, value, vintage FROM covidflow.observations_latest "
                "WHERE location_key = %s AND metric = %s",
                [place, metric],
                timeout=60,
            )
            out.update({(place, metric, week_of(r[0].date())): (r[2], r[3]) for r in rows if r[1] == source_id})
    return out


def documents(es: Any, source_id: str, key: str) -> dict[tuple[str, str, str], tuple[float, str, str]]:
    es.indices.refresh(index="covid-observations")
    hits = es.search(
        index="covid-observations",
        query={"bool": {"filter": [{"term": {"source_id": source_id}}, {"term": {"source_object_key": key}}]}},
        size=1000,
    )["hits"]["hits"]
    return {
        (h["_source"]["location_key"], h["_source"]["metric"], week_of(datetime.fromisoformat(h["_source"]["date"]))): (
            h["_source"]["value"],
            h["_source"]["vintage"],
            h["_source"]["ingested_at"],
        )
        for h in hits
    }


def rerun(source_id: str, key: str, bucket: str) -> None:
    done = subprocess.run(
        [COVIDFLOW, "ingest", "rerun", source_id, "--key", key, "--bucket", bucket],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "purge_obsolete" in done.stdout and "success" in done.stdout, done.stdout


def delete_rows(sess: Any, records: list[dict[str, Any]], since: datetime) -> None:
    """Both record tables' rows of ``records`` (any ingest before ``since``), by their keys: a test's cleanup."""
    from covidflow.index.es_writer import es_document
    from covidflow.ops.purge import RECORD_TABLES, _delete_rows, delete_cql, key_columns

    columns = {table: key_columns(table) for table in RECORD_TABLES}
    statements = {t: sess.prepare(delete_cql("covidflow", t, cols)) for t, cols in columns.items()}
    _delete_rows(sess, statements, columns, [(es_document(r), since) for r in records])


def until(check: Any, what: str, timeout: float = 300) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                print(f"not done after {timeout:.0f} s: {what}")
                raise
            time.sleep(3)


def test_a_rerun_after_a_fix_leaves_exactly_its_records_in_both_stores_and_newer_vintages_alone(
    s3: Any, bucket: str
) -> None:
    from covidflow.index.es_writer import client as es_client
    from covidflow.ops.purge import PurgeTarget, purge_object
    from covidflow.store.cassandra_writer import session

    base = find_spec(BASE)
    token = uuid.uuid4().hex[:8]
    source_id = f"it_purge_{token}"
    prefix = f"it-purge/{source_id}/"
    text = base.path.read_text(encoding="utf-8")
    text = text.replace(f"id: {BASE}", f"id: {source_id}", 1).replace(base["landing"]["prefix"], prefix, 1)
    spec_path = SOURCES_DIR / f"{source_id}.yaml"
    old_key = f"{prefix}COVID_19_weekly_cases_and_deaths_2022-11-18.csv"
    new_key = f"{prefix}COVID_19_weekly_cases_and_deaths_2022-11-25.csv"
    old_vintage, new_vintage = datetime(2022, 11, 18, tzinfo=UTC), datetime(2022, 11, 25, tzinfo=UTC)
    first = {(c, ind, w): 1000 + i for i, (c, ind, w) in enumerate(
        (c, ind, w) for c in ("AT", "BE", "DE") for ind in ("cases", "deaths") for w in WEEKS)}  # fmt: skip
    newer = {("AT", "cases", w): 5000 for w in WEEKS} | {("DE", "cases", w): 6000 for w in WEEKS}
    # The fix: DE and AT's deaths are gone (DE cases stay in the newer snapshot), BE's week-35 cases lowered.
    fixed = {k: v for k, v in first.items() if k[0] != "DE" and (k[0], k[1]) != ("AT", "deaths")}
    fixed[("BE", "cases", "2022-35")] = 7
    client = AirflowClient()
    client.trigger("covidflow_stream")  # starts the job unless it runs: the job itself is never restarted here
    dag_id = f"ingest_{source_id}"
    sess, es = session(), es_client()
    spec_path.write_text(text, encoding="utf-8")
    try:
        client.wait_for_dags([dag_id], timeout=300)
        s3.put_object(Bucket=bucket, Key=old_key, Body=csv(first))
        s3.put_object(Bucket=bucket, Key=new_key, Body=csv(newer))
        rerun(source_id, old_key, bucket)  # a first publication through the re-run path: nothing to purge
        rerun(source_id, new_key, bucket)

        def both_published() -> None:
            assert {k: v[0] for k, v in by_vintage(sess, source_id, old_vintage).items()} == as_records(first)
            assert {k: v[0] for k, v in by_vintage(sess, source_id, new_vintage).items()} == as_records(newer)
            assert {k: v[0] for k, v in documents(es, source_id, old_key).items()} == as_records(first)

        until(both_published, "both snapshots in the stores")
        newer_docs = documents(es, source_id, new_key)
        newer_rows = by_vintage(sess, source_id, new_vintage)
        first_ingest = {v[1] for v in by_vintage(sess, source_id, old_vintage).values()}

        s3.put_object(Bucket=bucket, Key=old_key, Body=csv(fixed))  # corrected under the same name: same vintage
        rerun(source_id, old_key, bucket)

        def exactly_the_fix() -> None:
            rows = by_vintage(sess, source_id, old_vintage)
            assert {k: v[0] for k, v in rows.items()} == as_records(fixed)  # no obsolete row, nothing lost
            assert not {v[1] for v in rows.values()} & first_ingest  # every row is the re-run's
            docs = documents(es, source_id, old_key)
            assert {k: v[0] for k, v in docs.items()} == as_records(fixed)
            assert {v[1][:10] for v in docs.values()} == {"2022-11-18"}
            assert documents(es, source_id, new_key) == newer_docs  # the newer snapshot: untouched
            assert by_vintage(sess, source_id, new_vintage) == newer_rows
            # Latest: the newer vintage wherever it has the key (also DE cases, dropped from the old file), the fix
            # elsewhere, and the dropped keys the newer vintage lacks are gone.
            want = {k: (v, old_vintage) for k, v in as_records(fixed).items()}
            want |= {k: (v, new_vintage) for k, v in as_records(newer).items()}
            got = latest(sess, source_id, {"AT", "BE", "DE"})
            assert {k: (v, vint.replace(tzinfo=UTC)) for k, (v, vint) in got.items()} == want

        until(exactly_the_fix, "the re-run's records, exactly, in both stores", timeout=120)
    finally:
        spec_path.unlink(missing_ok=True)
        client.retire_dag(dag_id)  # never a bare DELETE: it crashes the scheduler while a run is examined
        for key in (old_key, new_key):  # the purge with "now" as the re-run time removes every record of the key
            purge_object(PurgeTarget(source_id, key, None, datetime.now(UTC)), es=es, session=sess)
        sess.execute("DELETE FROM covidflow.vintages_by_source WHERE source_id = %s", [source_id], timeout=60)


# -- the purge on the real stores, whatever the stream's order --------------------------------------------------


def test_the_purge_keeps_the_reruns_rows_written_before_or_after_it_and_newer_vintages() -> None:
    """Store level: the re-run's records written before the purge (stream early) and after it (stream late) both
    survive; the rest of the object's vintage goes from both tables and Elasticsearch; a newer vintage is untouched;
    a document changed between the search and the delete is kept (seq_no guard)."""
    from itertools import islice

    from covidflow.catalog.schema import record_id
    from covidflow.index.es_writer import EsWriter
    from covidflow.index.es_writer import client as es_client
    from covidflow.normalise.preview import run_file
    from covidflow.ops.purge import PurgeTarget, _delete_docs, obsolete_query, purge_object
    from covidflow.store.cassandra_writer import CassandraWriter, session

    source_id = f"it_purge_st_{uuid.uuid4().hex[:8]}"
    key, newer_key = f"it-purge/{source_id}/a.csv", f"it-purge/{source_id}/b.csv"
    vintage, newer_vintage = datetime(2022, 11, 18, tzinfo=UTC), datetime(2022, 11, 25, tzinfo=UTC)
    first_ingest, rerun_at = datetime(2026, 1, 1, 10, tzinfo=UTC), datetime(2026, 1, 1, 11, tzinfo=UTC)
    spec = find_spec(BASE)
    base = list(islice(run_file(spec, spec.sample_path)[0], 20))

    def made(rows: list[dict[str, Any]], at: datetime, ingested: datetime, object_key: str) -> list[dict[str, Any]]:
        out = []
        for r in rows:
            r = {**r, "source_id": source_id, "vintage": at, "ingested_at": ingested, "source_object_key": object_key}
            out.append({**r, "record_id": record_id(r)})
        return out

    sess, es = session(), es_client()
    cass, index = CassandraWriter(sess), EsWriter(es)
    first = made(base, vintage, first_ingest, key)
    newer = made(base[:5], newer_vintage, first_ingest, newer_key)
    early = made(base[:5], vintage, rerun_at, key)  # the stream wrote these before the purge
    late = made(base[5:10], vintage, rerun_at, key)  # and these after it
    try:
        for batch in (first, newer, early):
            cass.write(batch)
            index.write(batch)
        result = purge_object(PurgeTarget(source_id, key, vintage, rerun_at), es=es, session=sess)
        assert result.found == 15 and result.es_deleted == 15  # the 10 obsolete + the 5 the stream rewrites late
        cass.write(late)
        index.write(late)

        rows = by_vintage(sess, source_id, vintage)
        kept = {(r["location_key"], r["metric"], week_of(r["date"])) for r in early + late}
        assert set(rows) == kept and {v[1].replace(tzinfo=UTC) for v in rows.values()} == {rerun_at}
        docs = documents(es, source_id, key)
        assert set(docs) == kept and {v[2][:19] for v in docs.values()} == {"2026-01-01T11:00:00"}
        newer_rows = by_vintage(sess, source_id, newer_vintage)
        assert len(newer_rows) == 5 and len(documents(es, source_id, newer_key)) == 5
        places = {r["location_key"] for r in first}
        got = {k: v[1].replace(tzinfo=UTC) for k, v in latest(sess, source_id, places).items()}
        want = {(r["location_key"], r["metric"], week_of(r["date"])): newer_vintage for r in newer}
        want |= {(r["location_key"], r["metric"], week_of(r["date"])): vintage for r in late}
        assert got == want  # the obsolete keys are gone, the newer vintage stays where it has the key

        # The seq_no guard: a document rewritten between the search and the delete is kept.
        target = PurgeTarget(source_id, key, vintage, datetime(2026, 1, 1, 12, tzinfo=UTC))
        es.indices.refresh(index="covid-observations")
        hits = es.search(index="covid-observations", query=obsolete_query(target), seq_no_primary_term=True,
                         size=100)["hits"]["hits"]  # fmt: skip
        assert len(hits) == 10
        index.write(late[:1])  # the stream rewrites one of them meanwhile
        assert _delete_docs(es, hits) == (9, 1, 0)
        assert _delete_docs(es, hits) == (0, 1, 9)  # again: 9 already gone, the rewritten one still kept
    finally:
        for object_key in (key, newer_key):
            purge_object(PurgeTarget(source_id, object_key, None, datetime.now(UTC)), es=es, session=sess)
        # The guard check deleted documents but not their rows: those keys are no longer in Elasticsearch.
        delete_rows(sess, first + newer, datetime.now(UTC))
        sess.execute("DELETE FROM covidflow.vintages_by_source WHERE source_id = %s", [source_id], timeout=60)
        assert documents(es, source_id, key) == {} and by_vintage(sess, source_id, vintage) == {}
