"""The streaming job's pure steps, without Kafka or Spark: envelope -> records/dead letters -> store shapes."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import pytest

from covidflow.catalog.schema import load_schema, record_id
from covidflow.index.es_writer import es_actions
from covidflow.normalise.stream import dead_letter_key, parse_instant, process_messages, provenance_of, validate_record
from covidflow.normalise.stream_runtime import NormaliserCache, merge_stats
from covidflow.publish.envelope import ObjectRef, RawEnvelope
from covidflow.store.cassandra_writer import cassandra_values, vintage_rows, write_timestamp

NOW = datetime(2026, 1, 20, 12, 0, tzinfo=UTC)
REF = ObjectRef("covidflow-landing", "spf/donnees-hospitalieres/donnees-hospitalieres-covid19_x.csv", "etag1")
SPF = "spf_donnees_hospitalieres"


def env(fields: dict, index: int = 1, source: str = SPF, vintage: str = "2026-01-15T08:00:00+00:00") -> bytes:
    return RawEnvelope(source, "1", REF, vintage, index, fields, index + 1, "2026-01-15T08:05:00+00:00").to_json()


ROW_75 = {"dep": "75", "sexe": "0", "jour": "2020-04-01", "hosp": "2633", "rea": "789", "rad": "1591", "dc": "539"}


@pytest.fixture(scope="module")
def cache() -> NormaliserCache:
    return NormaliserCache()


def records_of(out) -> dict[str, dict]:
    """record_id -> record, from the batch's Arrow table of canonical records."""
    return {r["record_id"]: r for r in out.records.to_pylist()}


def test_parse_instant_naive_is_utc_and_date_is_midnight() -> None:
    assert parse_instant("2026-01-15") == datetime(2026, 1, 15, tzinfo=UTC)
    assert parse_instant("2026-01-15T10:00:00+02:00") == datetime(2026, 1, 15, 8, tzinfo=UTC)
    assert parse_instant("2026-01-15T08:00:00Z") == datetime(2026, 1, 15, 8, tzinfo=UTC)
    assert parse_instant("") is None


def test_provenance_uses_vintage_as_landing_and_published_at_as_ingestion() -> None:
    e = RawEnvelope.from_json(env(ROW_75))
    prov = provenance_of(e)
    assert prov.object_key == REF.key
    assert prov.landed_at == datetime(2026, 1, 15, 8, tzinfo=UTC)
    assert prov.ingested_at == datetime(2026, 1, 15, 8, 5, tzinfo=UTC)
    assert prov.object_version == "etag1"


def test_one_spf_row_gives_four_records_with_exact_values(cache: NormaliserCache) -> None:
    out = process_messages([env(ROW_75)], cache, now=NOW)
    assert out.input_rows == 1 and out.dead_letters == [] and out.duplicates == 0
    by_metric = {r["metric"]: r for r in records_of(out).values()}
    assert {m: r["value"] for m, r in by_metric.items()} == {
        "hospital_occupancy": 2633.0,
        "icu_occupancy": 789.0,
        "hospital_discharges_cumulative": 1591.0,
        "hospital_deaths_cumulative": 539.0,
    }
    hosp = by_metric["hospital_occupancy"]
    assert (hosp["location_key"], hosp["location_name"], hosp["location_parent_key"]) == ("FR-D75", "Paris", "FR-R11")
    assert (hosp["date"], hosp["sex"], hosp["vintage_basis"]) == (date(2020, 4, 1), "all", "landed_at")
    assert hosp["vintage"] == datetime(2026, 1, 15, 8, tzinfo=UTC)
    assert hosp["source_row"] == 1 and hosp["source_object_version"] == "etag1"
    assert hosp["record_id"] == record_id(hosp)


def test_replay_in_one_batch_keeps_one_record_per_id(cache: NormaliserCache) -> None:
    out = process_messages([env(ROW_75), env(ROW_75)], cache, now=NOW)
    assert out.records.num_rows == 4 and out.duplicates == 4


def test_same_input_same_ids_across_batches(cache: NormaliserCache) -> None:
    a = process_messages([env(ROW_75)], cache, now=NOW)
    b = process_messages([env(ROW_75)], cache, now=datetime(2027, 1, 1, tzinfo=UTC))
    assert sorted(records_of(a)) == sorted(records_of(b))


def test_new_vintage_gives_new_ids(cache: NormaliserCache) -> None:
    a = process_messages([env(ROW_75)], cache, now=NOW)
    b = process_messages([env(ROW_75, vintage="2026-01-16T08:00:00+00:00")], cache, now=NOW)
    assert set(records_of(a)).isdisjoint(records_of(b))


def test_rejects_become_dead_letters_with_reason_and_provenance(cache: NormaliserCache) -> None:
    bad = {**ROW_75, "dep": "999"}
    negative = {**ROW_75, "hosp": "-5"}
    out = process_messages([env(bad, 1), env(negative, 2)], cache, now=NOW)
    reasons = sorted((d.record_index, d.reason) for d in out.dead_letters)
    assert reasons == [
        (1, "dep: unknown location (fr_department): '999'"),
        (2, "hosp: negative value for hospital_occupancy (stock): '-5'"),
    ]
    letter = out.dead_letters[0]
    assert (letter.stage, letter.source_id, letter.object, letter.line) == ("normalise", SPF, REF, 2)
    assert letter.at == NOW.isoformat()
    assert json.loads(letter.excerpt)["dep"] == "999"
    assert out.records.num_rows == 3  # rea, rad, dc of the negative row are valid


def test_undecodable_and_unknown_source_are_dead_letters(cache: NormaliserCache) -> None:
    out = process_messages([b"{not json", None, env(ROW_75, source="no_such_source")], cache, now=NOW)
    assert [d.reason.split(":")[0] for d in out.dead_letters] == [
        "undecodable envelope",
        "undecodable envelope",
        "no valid spec for source 'no_such_source'",
    ]
    assert out.dead_letters[0].excerpt == "{not json"
    assert out.input_rows == 3 and out.records.num_rows == 0


def test_unsupported_envelope_version_is_a_dead_letter(cache: NormaliserCache) -> None:
    raw = json.loads(env(ROW_75))
    raw["envelope_version"] = 99
    out = process_messages([json.dumps(raw).encode()], cache, now=NOW)
    assert out.dead_letters[0].reason == "undecodable envelope: unsupported envelope_version 99"


def test_validate_record_flags_nulls_types_and_tampered_id(cache: NormaliserCache) -> None:
    record = next(iter(records_of(process_messages([env(ROW_75)], cache, now=NOW)).values()))
    assert validate_record(record) == []
    assert validate_record({**record, "value": None}) == ["null value"]
    assert validate_record({**record, "value": "12"}) == ["value is str, expected double"]
    assert validate_record({**record, "date": datetime(2020, 4, 1)}) == ["date is datetime, expected date"]
    assert validate_record({**record, "extra": 1}) == ["unknown fields ['extra']"]
    assert validate_record({**record, "value": 1.0, "sex": "male"}) == [
        "record_id does not match its identifying fields"
    ]
    assert validate_record({k: v for k, v in record.items() if k != "unit"}) == ["missing field unit"]


def test_store_shapes(cache: NormaliserCache) -> None:
    record = next(r for r in records_of(process_messages([env(ROW_75)], cache, now=NOW)).values())
    cols = ["record_id", "location_point", "date", "value"]
    assert cassandra_values(record, cols) == (record["record_id"], None, date(2020, 4, 1), record["value"])
    assert cassandra_values({**record, "location_point": {"lat": 1.5, "lon": 2.5}}, cols)[1] == (1.5, 2.5)
    # (vintage 2026-01-15T08:00:00Z, ingested 08:05:00Z) as seconds since 2000, packed 31 | 32 bits
    assert write_timestamp(record) == (821_779_200 << 32) + 821_779_500
    (action,) = es_actions([record], "covid-observations")
    assert action["_id"] == record["record_id"] and action["_index"] == "covid-observations"
    assert action["_source"]["date"] == "2020-04-01"
    assert action["_source"]["vintage"] == "2026-01-15T08:00:00+00:00"
    assert set(action["_source"]) == set(load_schema().field_names)
    vcols = ["source_id", "vintage", "source_object_key"]
    assert vintage_rows([record, record], vcols) == [(SPF, datetime(2026, 1, 15, 8, tzinfo=UTC), REF.key)]


def test_dead_letter_key_is_deterministic(cache: NormaliserCache) -> None:
    a = process_messages([env({**ROW_75, "dep": "999"})], cache, now=NOW).dead_letters[0]
    b = process_messages([env({**ROW_75, "dep": "999"})], cache, now=datetime(2027, 1, 1, tzinfo=UTC)).dead_letters[0]
    assert dead_letter_key(a) == dead_letter_key(b)
    assert dead_letter_key(a).startswith(b"spf_donnees_hospitalieres|spf/donnees-hospitalieres/")


def test_merge_stats_sums_partitions() -> None:
    parts = [
        {"input_rows": 3, "records": 8, "dead_letters": 1, "skips": 0, "elasticsearch": 8, "cassandra_seconds": 1.25,
         "normalise_seconds": 0.5, "cassandra": {"observations_latest": 8}, "max_offsets": {0: 10}},
        {"input_rows": 2, "records": 4, "dead_letters": 0, "skips": 2, "elasticsearch": 4,
         "cassandra": {"observations_latest": 4}, "max_offsets": {1: 7}},
        {"input_rows": 0, "max_offsets": {}},
    ]  # fmt: skip
    total = merge_stats(parts)
    assert total == {"input_rows": 5, "records": 12, "dead_letters": 1, "skips": 2, "duplicates": 0,
                     "cassandra": {"observations_latest": 12}, "elasticsearch": 12,
                     "max_offsets": {"0": 10, "1": 7}, "cassandra_seconds": 1.25, "normalise_seconds": 0.5,
                     "elasticsearch_seconds": 0.0, "stores_seconds": 0.0}  # fmt: skip


def test_nulls_are_unset_not_tombstones() -> None:
    from cassandra.query import UNSET_VALUE

    from covidflow.store.cassandra_writer import _unset_nulls

    assert _unset_nulls(("a", None, 1.0)) == ("a", UNSET_VALUE, 1.0)


def test_specs_from_the_driver_go_live_without_a_restart() -> None:
    """A spec the executors have never seen (added after the job started) is used from the next batch on; a changed
    spec is compiled again; a source with no spec in the driver's folder is a dead letter naming it."""
    from covidflow.catalog.specs import SOURCES_DIR

    text = (SOURCES_DIR / f"{SPF}.yaml").read_text(encoding="utf-8")
    renamed = text.replace(f"id: {SPF}", "id: spf_hosp_copy")
    live = NormaliserCache({SPF: text})
    out = process_messages([env(ROW_75, source="spf_hosp_copy")], live, now=NOW)
    assert [d.reason for d in out.dead_letters] == [
        "no valid spec for source 'spf_hosp_copy': no spec for source 'spf_hosp_copy' in the driver's spec folder"
    ]
    live.use({SPF: text, "spf_hosp_copy": renamed})  # the driver read the folder again before the next batch
    out = process_messages([env(ROW_75, source="spf_hosp_copy")], live, now=NOW)
    assert out.dead_letters == [] and out.records.num_rows == 4
    assert set(out.records.column("source_id").to_pylist()) == {"spf_hosp_copy"}
    first = live("spf_hosp_copy")
    live.use({SPF: text, "spf_hosp_copy": renamed.replace('"0": all', '"0": everyone')})
    changed = live("spf_hosp_copy")
    assert changed is not first and live("spf_hosp_copy") is changed
    out = process_messages([env(ROW_75, source="spf_hosp_copy")], live, now=NOW)
    assert set(out.records.column("sex").to_pylist()) == {"everyone"}


def test_both_stores_are_written_at_the_same_time_and_a_failure_fails_the_batch() -> None:
    import time

    from covidflow.normalise.stream_runtime import write_both

    class Slow:
        def __init__(self, answer, error=None):
            self.answer, self.error = answer, error

        def write(self, records):
            time.sleep(0.5)
            if self.error:
                raise self.error
            return self.answer

    started = time.monotonic()
    (stored, c_s), (indexed, e_s) = write_both(Slow({"observations_latest": 2}), Slow(2), ["r1", "r2"])
    assert stored == {"observations_latest": 2} and indexed == 2 and c_s >= 0.5 and e_s >= 0.5
    assert time.monotonic() - started < 0.9  # not 1 s: the writes overlap
    with pytest.raises(RuntimeError, match="2 Elasticsearch writes failed"):
        write_both(Slow({}), Slow(0, RuntimeError("2 Elasticsearch writes failed")), ["r1", "r2"])


def test_last_per_id_keeps_every_id_once_the_last_copy_in_table_order() -> None:
    """Repeated ids early in the batch must not cost the batch's last rows (the kept row numbers were taken as a
    sort permutation: with 4 repeats the table's last 4 records, another object's, were dropped)."""
    import pyarrow as pa

    from covidflow.normalise.stream import last_per_id

    ids = ["a", "b", "a", "c", "b", "d", "e", "f"]
    table = pa.table({"record_id": ids, "value": [float(i) for i in range(len(ids))]})
    kept, dropped = last_per_id(table)
    assert dropped == 2
    assert kept.column("record_id").to_pylist() == ["a", "c", "b", "d", "e", "f"]
    assert kept.column("value").to_pylist() == [2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    unique = pa.table({"record_id": ["x", "y"], "value": [1.0, 2.0]})
    assert last_per_id(unique) == (unique, 0)
