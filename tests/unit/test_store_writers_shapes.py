"""The store writers' pure parts, no services: partition batches, column-wise encoding, Arrow input, ES documents."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any, ClassVar

import pyarrow as pa
import pytest

from covidflow.catalog.schema import arrow_schema, load_schema, record_id
from covidflow.index.es_writer import arrow_actions, es_actions, es_document
from covidflow.store.cassandra_writer import _last_per_id, canonical_table, encode_column, partition_batches


def test_batches_hold_one_partition_and_every_row_once_in_order() -> None:
    keys = ["a", "b", "a", "c", "a", "b"]
    batches = partition_batches(keys, [10] * 6, max_rows=100, max_bytes=1000)
    assert batches == [[0, 2, 4], [1, 5], [3]]


def test_batches_are_bounded_by_rows_and_by_bytes() -> None:
    keys = ["p"] * 10
    assert partition_batches(keys, [1] * 10, max_rows=4, max_bytes=1000) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    sizes = [30, 30, 30, 50, 10, 10]
    assert partition_batches(keys[:6], sizes, max_rows=100, max_bytes=60) == [[0, 1], [2], [3, 4], [5]]


def test_a_row_bigger_than_the_byte_bound_goes_alone() -> None:
    batches = partition_batches(["p", "p", "p"], [10, 500, 10], max_rows=100, max_bytes=100)
    assert batches == [[0], [1], [2]]
    assert partition_batches([], [], max_rows=10, max_bytes=10) == []


def test_many_partitions_and_bounds_together() -> None:
    keys = [(i % 7, "m") for i in range(1000)]
    sizes = [(i * 37) % 90 + 1 for i in range(1000)]
    batches = partition_batches(keys, sizes, max_rows=25, max_bytes=700)
    assert sorted(i for b in batches for i in b) == list(range(1000))
    for b in batches:
        assert len({keys[i] for i in b}) == 1 and len(b) <= 25 and b == sorted(b)
        assert sum(sizes[i] for i in b) <= 700 or len(b) == 1


class CountingType:
    """Stands in for a cassandra-driver CQL type: counts serialise calls."""

    calls: ClassVar[list[Any]] = []

    @classmethod
    def serialize(cls, value: Any, protocol_version: int) -> bytes:
        cls.calls.append(value)
        return repr(value).encode()

    @staticmethod
    def cql_parameterized_type() -> str:
        return "text"


def test_encode_column_serialises_each_distinct_value_once_and_passes_unset_and_null() -> None:
    from cassandra.query import UNSET_VALUE

    CountingType.calls = []
    values = ["FR-D01", "FR-D02", "FR-D01", None, UNSET_VALUE, "FR-D01"]
    encoded, lengths = encode_column(values, CountingType, 5)
    assert encoded == [b"'FR-D01'", b"'FR-D02'", b"'FR-D01'", None, UNSET_VALUE, b"'FR-D01'"]
    assert lengths == [8, 8, 8, 0, 0, 8]
    assert sorted(CountingType.calls) == ["FR-D01", "FR-D02"]


def test_encode_column_names_the_value_it_cannot_serialise() -> None:
    from cassandra.cqltypes import DoubleType

    with pytest.raises(TypeError, match="cannot serialise 'x' as double"):
        encode_column([1.0, "x"], DoubleType, 5)


def record(**changes: Any) -> dict[str, Any]:
    r = {
        "record_id": "", "schema_version": 1, "source_id": "jhu_csse_time_series_global", "location_key": "BE",
        "location_level": "country", "location_name": "Belgium", "location_parent_key": None,
        "location_parent_name": None, "location_point": {"lat": 50.8333, "lon": 4.469936},
        "date": date(2020, 1, 22), "period": "day", "period_start": date(2020, 1, 22), "metric": "cases_cumulative",
        "metric_kind": "cumulative", "unit": "people", "value": 12.0, "sex": "all", "age_group": "all",
        "variant": "all", "upstream": "-", "vintage": datetime(2026, 1, 15, 8, 0, 0, 250000, tzinfo=UTC),
        "vintage_basis": "file_name", "source_object_key": "jhu/x.csv", "source_object_version": None,
        "source_row": 3, "ingested_at": datetime(2026, 1, 15, 9, 30, tzinfo=UTC),
    }  # fmt: skip
    r.update(changes)
    r["record_id"] = record_id(r)
    return r


def test_arrow_documents_are_the_record_documents() -> None:
    records = [record(), record(date=date(2020, 1, 23), location_point=None, source_object_version="v1", value=0.5)]
    table = pa.Table.from_pylist(records, schema=arrow_schema())
    assert arrow_actions(table, "alias") == es_actions(records, "alias")
    doc = arrow_actions(table, "alias")[0]["_source"]
    assert doc["vintage"] == "2026-01-15T08:00:00.250000+00:00" and doc["date"] == "2020-01-22"
    assert doc["location_point"] == {"lat": 50.8333, "lon": 4.469936} and doc["location_parent_key"] is None
    assert list(doc) == load_schema().field_names


def test_es_actions_carry_es_document_of_every_record() -> None:
    paris = timezone(timedelta(hours=2))
    records = [record(), record(vintage=datetime(2026, 1, 15, 10, 0, tzinfo=paris), date=date(2020, 1, 24))]
    actions = es_actions(records, "alias")
    assert [a["_source"] for a in actions] == [es_document(r) for r in records]
    assert actions[1]["_source"]["vintage"] == "2026-01-15T08:00:00+00:00"
    assert [a["_id"] for a in actions] == [r["record_id"] for r in records]


def test_canonical_table_accepts_only_the_canonical_arrow_schema() -> None:
    good = pa.Table.from_pylist([record()], schema=arrow_schema())
    assert canonical_table([record()]) is None
    assert canonical_table(good) is good
    assert canonical_table(good.to_batches()[0]).equals(good)
    with pytest.raises(ValueError, match="are not the canonical ones"):
        canonical_table(good.drop_columns(["unit"]))
    wrong = good.set_column(good.schema.get_field_index("value"), "value", pa.array(["12"]))
    with pytest.raises(ValueError, match="value is string, expected double"):
        canonical_table(wrong)
    nulls = good.set_column(good.schema.get_field_index("unit"), "unit", pa.array([None], pa.string()))
    with pytest.raises(ValueError, match="unit holds nulls but is not nullable"):
        canonical_table(nulls)


def test_a_repeated_record_id_keeps_its_last_row() -> None:
    a, b = record(), record(date=date(2020, 1, 23))
    table = pa.Table.from_pylist([a, b, {**a, "value": 99.0}], schema=arrow_schema())
    assert _last_per_id(table).column("value").to_pylist() == [12.0, 99.0]
    unique = pa.Table.from_pylist([a, b], schema=arrow_schema())
    assert _last_per_id(unique) is unique
