"""The stream's Cassandra writer on the real server, in a private keyspace: exact values in every table, from
record dicts and from Arrow tables; replays, vintages and nulls behave as the data model says (ADR 0002, 0009)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any

import pytest

from covidflow.catalog.schema import arrow_schema, load_schema, record_id
from covidflow.catalog.specs import find_spec
from covidflow.normalise.preview import run_file
from covidflow.store.cassandra_writer import (
    CassandraWriter,
    _ArrowColumns,
    _Columns,
    cassandra_values,
    ensure_schema,
    session,
    write_timestamp,
)

pytestmark = pytest.mark.integration
V1 = datetime(2026, 1, 15, 8, 0, 0, 123456, tzinfo=UTC)  # microseconds: USING TIMESTAMP keeps them
V2 = V1 + timedelta(days=1)
FIELDS = load_schema().field_names


@pytest.fixture(scope="module")
def keyspace() -> Iterator[tuple[Any, str]]:
    """A private keyspace with the generated tables, dropped afterwards; fails (never skips) if Cassandra is down."""
    try:
        sess = session()
    except Exception as exc:
        pytest.fail(f"Cassandra is not reachable ({exc}); run `covidflow stack up cassandra`")
    name = f"cf_it_writer_{uuid.uuid4().hex[:10]}"
    ensure_schema(sess, keyspace=name)
    yield sess, name
    sess.execute(f"DROP KEYSPACE IF EXISTS {name}", timeout=120)


def at_vintage(records: list[dict[str, Any]], vintage: datetime, **changes: Any) -> list[dict[str, Any]]:
    out = []
    for r in records:
        r = {**r, "vintage": vintage, **changes}
        out.append({**r, "record_id": record_id(r)})
    return out


@pytest.fixture(scope="module")
def records() -> list[dict[str, Any]]:
    """SPF rows (no point, a parent place; several rows per partition) and JHU rows (a point, no parent)."""
    picked = []
    for source, n in (("spf_donnees_hospitalieres", 600), ("jhu_csse_time_series_global", 300)):
        spec = find_spec(source)
        picked += list(islice(run_file(spec, spec.sample_path)[0], n))
    return at_vintage(picked, V1)


def to_arrow(records: list[dict[str, Any]]) -> Any:
    import pyarrow as pa

    return pa.Table.from_pylist(records, schema=arrow_schema())


def ms(value: datetime) -> datetime:
    """What a CQL timestamp keeps of an instant: milliseconds, returned naive (UTC) by the driver."""
    return value.astimezone(UTC).replace(tzinfo=None, microsecond=value.microsecond // 1000 * 1000)


def expected_row(record: dict[str, Any]) -> dict[str, Any]:
    row = {k: ms(v) if isinstance(v, datetime) else v for k, v in record.items()}
    point = record["location_point"]
    row["location_point"] = None if point is None else (point["lat"], point["lon"])
    return row


def read_table(sess: Any, ks: str, table: str, records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """record_id -> every column of the rows in the partitions ``records`` fall in (point as a tuple)."""
    pk = ["location_key", "metric"] if table == "observations_latest" else ["source_id", "vintage", "location_key",
                                                                              "metric"]  # fmt: skip
    stmt = sess.prepare(f"SELECT * FROM {ks}.{table} WHERE {' AND '.join(f'{c}=?' for c in pk)}")
    found = {}
    for key in sorted({tuple(r[c] for c in pk) for r in records}):
        for row in sess.execute(stmt, key, timeout=60):
            row = row._asdict()
            if row["location_point"] is not None:
                row["location_point"] = (row["location_point"].lat, row["location_point"].lon)
            found[row["record_id"]] = row
    return found


LATEST_KEY = ["location_key", "metric", "date", "source_id", "period", "sex", "age_group", "variant", "upstream"]


def latest_writetime(sess: Any, ks: str, record: dict[str, Any]) -> tuple[float, int]:
    where = " AND ".join(f"{c}=%s" for c in LATEST_KEY)
    query = f"SELECT value, writetime(value) AS wt FROM {ks}.observations_latest WHERE {where}"
    row = sess.execute(query, [record[c] for c in LATEST_KEY], timeout=60).one()
    return row.value, row.wt


def table_counts(sess: Any, ks: str) -> dict[str, int]:
    tables = ("observations_latest", "observations_by_vintage", "vintages_by_source")
    return {t: sess.execute(f"SELECT count(*) FROM {ks}.{t}", timeout=120).one()[0] for t in tables}


def clear(sess: Any, ks: str) -> None:
    for table in ("observations_latest", "observations_by_vintage", "vintages_by_source"):
        sess.execute(f"TRUNCATE {ks}.{table}", timeout=120)


@pytest.mark.parametrize("shape", ["dicts", "arrow"])
def test_every_table_holds_exactly_the_records(keyspace: tuple[Any, str], records: list[dict], shape: str) -> None:
    sess, ks = keyspace
    clear(sess, ks)
    writer = CassandraWriter(sess, keyspace=ks, retry_for=30)
    counts = writer.write(to_arrow(records) if shape == "arrow" else records)
    assert counts == {"observations_latest": 900, "observations_by_vintage": 900, "vintages_by_source": 2}

    want = {r["record_id"]: expected_row(r) for r in records}
    assert read_table(sess, ks, "observations_by_vintage", records) == want
    assert read_table(sess, ks, "observations_latest", records) == want
    assert any(r["location_point"] for r in want.values()) and any(r["location_parent_key"] for r in want.values())
    for r in records[::97]:  # the write time of the latest row is the record's write version, exactly
        assert latest_writetime(sess, ks, r) == (r["value"], write_timestamp(r))
    columns = ["source_id", "vintage", "vintage_basis", "source_object_key", "source_object_version", "ingested_at"]
    stored = sess.execute(f"SELECT {', '.join(columns)} FROM {ks}.vintages_by_source", timeout=60)
    assert {tuple(row) for row in stored} == {tuple(expected_row(r)[c] for c in columns) for r in records}
    assert table_counts(sess, ks) == counts


def test_a_replay_changes_no_count_and_no_value(keyspace: tuple[Any, str], records: list[dict]) -> None:
    sess, ks = keyspace
    clear(sess, ks)
    writer = CassandraWriter(sess, keyspace=ks, retry_for=30)
    writer.write(records)
    before = table_counts(sess, ks), read_table(sess, ks, "observations_latest", records)
    writer.write(to_arrow(records))  # the same batch again, as the stream replays it (and in the other shape)
    writer.write(records + records[:50])  # a batch holding some records twice
    assert writer.write([]) == {"observations_latest": 0, "observations_by_vintage": 0, "vintages_by_source": 0}
    assert (table_counts(sess, ks), read_table(sess, ks, "observations_latest", records)) == before


def test_the_newest_vintage_wins_in_latest_whatever_the_order(keyspace: tuple[Any, str], records: list[dict]) -> None:
    sess, ks = keyspace
    clear(sess, ks)
    writer = CassandraWriter(sess, keyspace=ks, retry_for=30)
    old = records[:300]
    new = [{**r, "value": r["value"] + 1000.0} for r in at_vintage(old, V2)]
    writer.write(to_arrow(new))
    writer.write(old)  # a late replay of the older vintage must not overwrite
    latest = read_table(sess, ks, "observations_latest", old)
    assert {k: (v["vintage"], v["value"]) for k, v in latest.items()} == {
        r["record_id"]: (ms(V2), r["value"]) for r in new
    }
    assert latest_writetime(sess, ks, new[0]) == (new[0]["value"], write_timestamp(new[0]))
    # Both vintages stay readable as published.
    assert len(read_table(sess, ks, "observations_by_vintage", old + new)) == 600

    # Both vintages in one call, the older last and in the same partition batches: the write times decide.
    newer = [{**r, "value": r["value"] + 2000.0} for r in at_vintage(old, V2 + timedelta(hours=1))]
    older = [{**r, "value": -1.0} for r in at_vintage(old, V1 - timedelta(hours=1))]
    writer.write(newer + older)
    latest = read_table(sess, ks, "observations_latest", old)
    assert sorted(v["value"] for v in latest.values()) == sorted(r["value"] for r in newer)


def test_a_same_vintage_correction_wins_in_both_record_tables_whatever_the_order(
    keyspace: tuple[Any, str], records: list[dict]
) -> None:
    """A corrected file re-uploaded under the same name keeps its vintage and record ids: the later ingest must win
    even when it lowers the value (with the vintage as write time, Cassandra kept the larger value on the tie)."""
    sess, ks = keyspace
    clear(sess, ks)
    writer = CassandraWriter(sess, keyspace=ks, retry_for=30)
    first = records[:200]
    later = first[0]["ingested_at"] + timedelta(minutes=5)
    corrected = [{**r, "value": r["value"] - 1.0, "ingested_at": later} for r in first]  # same ids, lower values
    assert [r["record_id"] for r in at_vintage(corrected, V1)] == [r["record_id"] for r in first]
    want = {r["record_id"]: r["value"] for r in corrected}
    for order in ([first, corrected], [corrected, first]):  # in order, then the original replayed late
        for part in order:
            writer.write(to_arrow(part))
        for table in ("observations_latest", "observations_by_vintage"):
            assert {k: v["value"] for k, v in read_table(sess, ks, table, first).items()} == want, (table, order)
    assert latest_writetime(sess, ks, corrected[0]) == (corrected[0]["value"], write_timestamp(corrected[0]))


def test_a_null_is_left_unset_not_written_as_a_tombstone(keyspace: tuple[Any, str], records: list[dict]) -> None:
    sess, ks = keyspace
    clear(sess, ks)
    writer = CassandraWriter(sess, keyspace=ks, retry_for=30)
    with_point = [r for r in records if r["location_point"]][:20]
    writer.write(with_point)
    writer.write(to_arrow([{**r, "location_point": None, "source_object_version": None} for r in with_point]))
    writer.write([{**r, "location_point": None} for r in with_point])
    stored = read_table(sess, ks, "observations_by_vintage", with_point)
    assert {k: v["location_point"] for k, v in stored.items()} == {
        r["record_id"]: (r["location_point"]["lat"], r["location_point"]["lon"]) for r in with_point
    }


@pytest.mark.parametrize("shape", ["dicts", "arrow"])
def test_bind_values_are_the_bytes_the_driver_binds(keyspace: tuple[Any, str], records: list[dict], shape: str) -> None:
    """The writer serialises column-wise; each row must be exactly what ``PreparedStatement.bind`` would send."""
    from cassandra.query import UNSET_VALUE

    sess, ks = keyspace
    writer = CassandraWriter(sess, keyspace=ks, retry_for=30)
    cols = _ArrowColumns(to_arrow(records)) if shape == "arrow" else _Columns.from_records(records, FIELDS)
    encoded: dict[str, Any] = {}
    for table in ("observations_latest", "observations_by_vintage"):
        stmt, columns = writer.inserts[table]
        rows, sizes = writer.encode(table, cols, encoded)
        for r, row, size in zip(records, rows, sizes, strict=True):
            values = cassandra_values(r, columns)
            values = (*values, write_timestamp(r))  # both record tables are written USING TIMESTAMP
            bound = stmt.bind(tuple(UNSET_VALUE if v is None else v for v in values)).values
            assert list(row) == list(bound)
            assert size == sum(len(v) for v in bound if isinstance(v, bytes))


def test_an_outage_stalls_the_write_until_cassandra_is_back(
    keyspace: tuple[Any, str], records: list[dict], caplog: pytest.LogCaptureFixture
) -> None:
    """Cassandra unreachable for 10 s (for this writer only: a TCP forwarder it talks through is closed, as in
    test_stream_outage): the write retries with its warning lines, then completes; nothing is lost."""
    import threading

    from test_stream_outage import Forwarder

    from covidflow.store import cassandra_writer

    sess, ks = keyspace
    clear(sess, ks)
    forwarder = Forwarder(9042)
    forwarder.up()
    through = cassandra_writer.session("127.0.0.1", forwarder.port, cached=False)
    try:
        writer = CassandraWriter(through, keyspace=ks, retry_for=120)
        forwarder.down()
        back = threading.Timer(10, forwarder.up)
        back.start()
        with caplog.at_level("WARNING", logger="covidflow.store.cassandra_writer"):
            counts = writer.write(records)
        back.join()
    finally:
        through.cluster.shutdown()
        forwarder.down()
    assert counts == {"observations_latest": 900, "observations_by_vintage": 900, "vintages_by_source": 2}
    assert any("900/900 writes to observations_latest failed" in m for m in caplog.messages)
    assert read_table(sess, ks, "observations_by_vintage", records).keys() == {r["record_id"] for r in records}
