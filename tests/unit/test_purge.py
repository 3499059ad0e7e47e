"""The re-run purge's pure parts (covidflow.ops.purge): what is purged, with which write time, by which keys."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from covidflow.catalog.schema import write_version
from covidflow.ops.purge import (
    PurgeResult,
    delete_actions,
    delete_cql,
    key_columns,
    key_values,
    obsolete_query,
    purge_published,
    purge_rerun,
    target_of,
    tombstone_timestamp,
)

SUMMARY = {
    "source_id": "s",
    "object": "s3://landing/ecdc/x/COVID_19_weekly_cases_and_deaths_2022-11-18.csv",
    "etag": "abc",
    "vintage": "2022-11-18",
    "status": "published",
    "published_at": "2026-11-30T15:00:01.123456+00:00",
}


def test_the_target_is_the_object_key_its_vintage_and_the_rerun_ingest_time() -> None:
    target = target_of("s", SUMMARY)
    assert target.key == "ecdc/x/COVID_19_weekly_cases_and_deaths_2022-11-18.csv"
    assert target.vintage == datetime(2022, 11, 18, tzinfo=UTC)
    assert target.since == datetime(2026, 11, 30, 15, 0, 1, 123456, tzinfo=UTC)
    per_row = target_of("s", SUMMARY, {"vintage": {"from": "column", "column": "v"}})
    assert per_row.vintage is None  # every vintage of the object


@pytest.mark.parametrize(
    "change", [{"status": "refused"}, {"published_at": ""}, {"object": "landing/key.csv"}], ids=str
)
def test_no_target_without_a_published_object_and_its_time(change: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        target_of("s", {**SUMMARY, **change})


def test_the_query_selects_the_object_and_vintage_ingested_before_the_rerun_at_ms_resolution() -> None:
    filters = obsolete_query(target_of("s", SUMMARY))["bool"]["filter"]
    assert {"term": {"source_id": "s"}} in filters
    assert {"term": {"source_object_key": "ecdc/x/COVID_19_weekly_cases_and_deaths_2022-11-18.csv"}} in filters
    assert {"range": {"ingested_at": {"lt": "2026-11-30T15:00:01.123+00:00"}}} in filters
    at = "2022-11-18T00:00:00+00:00"
    assert {"range": {"vintage": {"gte": at, "lte": at}}} in filters
    newer = obsolete_query(target_of("s", SUMMARY), newer=True)["bool"]["filter"]
    assert {"range": {"ingested_at": {"gte": "2026-11-30T15:00:01.123+00:00"}}} in newer
    assert {"range": {"vintage": {"gte": at, "lte": at}}} in newer
    assert not any("source_object_key" in f.get("term", {}) for f in newer)  # ids name no object: any of them
    every = obsolete_query(target_of("s", SUMMARY, {"vintage": {"from": "column"}}))["bool"]["filter"]
    assert not any("vintage" in f.get("range", {}) for f in every)


def test_the_tombstone_is_below_the_rerun_and_above_every_earlier_ingest_of_that_vintage() -> None:
    vintage = datetime(2022, 11, 18, tzinfo=UTC)
    rerun = datetime(2026, 11, 30, 15, 0, 1, tzinfo=UTC)
    stone = tombstone_timestamp(vintage, rerun)
    assert stone == write_version(vintage, rerun) - 1  # the re-run's rows (write version W) win
    assert write_version(vintage, datetime(2026, 11, 30, 15, 0, 0, tzinfo=UTC)) <= stone  # a second earlier: gone
    assert write_version(vintage, datetime(2022, 11, 19, tzinfo=UTC)) <= stone  # the first publication: gone
    assert stone < write_version(datetime(2022, 11, 25, tzinfo=UTC), datetime(2022, 11, 26, tzinfo=UTC))  # newer
    assert stone > 1_700_000_000_000_000  # rows written before write versions (vintage µs) go too


def test_deletes_name_the_full_primary_key_of_each_record_table() -> None:
    assert key_columns("observations_by_vintage") == [
        "source_id", "vintage", "location_key", "metric", "date", "period", "sex", "age_group", "variant", "upstream"
    ]  # fmt: skip
    latest = key_columns("observations_latest")
    assert latest[:3] == ["location_key", "metric", "date"] and "vintage" not in latest
    cql = delete_cql("ks", "observations_latest", ["location_key", "metric"])
    assert cql == "DELETE FROM ks.observations_latest USING TIMESTAMP ? WHERE location_key = ? AND metric = ?"
    with pytest.raises(KeyError):
        key_columns("no_such_table")


def test_key_values_are_typed_from_the_document_text() -> None:
    doc = {"source_id": "s", "vintage": "2022-11-18T00:00:00+00:00", "date": "2022-09-04", "metric": "m"}
    values = key_values(doc, ["source_id", "vintage", "date", "metric"])
    assert values == ("s", datetime(2022, 11, 18, tzinfo=UTC), date(2022, 9, 4), "m")


def test_each_delete_goes_to_the_concrete_index_and_only_if_the_document_is_unchanged() -> None:
    hits = [{"_index": "covid-observations-000002", "_id": "r1", "_seq_no": 7, "_primary_term": 1, "_source": {}}]
    assert delete_actions(hits) == [
        {"_op_type": "delete", "_index": "covid-observations-000002", "_id": "r1", "if_seq_no": 7, "if_primary_term": 1}
    ]


def test_ordinary_runs_purge_nothing_and_refused_or_failed_objects_are_skipped() -> None:
    params = {"bucket": "b", "rerun_key": "", "rerun_prefix": "", "rerun_all": False}
    assert purge_rerun("s", params, [SUMMARY], {}) is None
    assert purge_published("s", [None, {**SUMMARY, "status": "refused"}], es=None, session=None) == []


def test_the_log_line_names_the_object_vintage_and_counts_per_store() -> None:
    tables = {"observations_by_vintage": 3, "observations_latest": 3}
    result = PurgeResult("s", "k.csv", "2022-11-18T00:00:00+00:00", "2026-11-30T15:00:01+00:00", found=3)
    result.cassandra, result.es_deleted, result.es_kept = tables, 2, 1
    line = result.line()
    for part in ("k.csv", "vintage=2022-11-18", "3 obsolete", "observations_latest 3", "deleted 2", "kept"):
        assert part in line
