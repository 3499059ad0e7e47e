"""Pure logic of the Elasticsearch maintenance DAGs: template check, names, retention, alias actions, docs."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from covidflow.index import es_template
from covidflow.index import maintenance as m


def test_template_for_the_real_alias_is_the_committed_one() -> None:
    committed = json.loads(es_template.TEMPLATE_PATH.read_text())
    assert m.template_for("covid-observations") == committed


def test_template_for_a_throwaway_alias_only_changes_patterns_and_meta() -> None:
    body = m.template_for("mt-x")
    assert body["index_patterns"] == ["mt-x-*"]
    assert body["_meta"]["write_alias"] == "mt-x"
    assert body["template"] == es_template.generate_template()["template"]


def test_template_problems() -> None:
    wanted = m.template_for("a")
    assert m.template_problems(wanted, wanted) == []
    assert m.template_problems(None, wanted) == ["no index template installed"]
    old = json.loads(json.dumps(wanted))
    old["_meta"]["schema_version"] = 0
    old["version"] = 0
    del old["template"]["mappings"]["properties"]["upstream"]
    old["template"]["mappings"]["properties"]["value"] = {"type": "float"}
    assert m.template_problems(old, wanted) == [
        "template schema_version 0, observation.yaml is v1",
        "template version 0, expected 1",
        "mapping of 'upstream': live None, schema {'type': 'keyword'}",
        "mapping of 'value': live {'type': 'float'}, schema {'type': 'double'}",
    ]


def test_index_names() -> None:
    assert m.first_index("covid-observations") == "covid-observations-000001"
    assert m.versioned_index("covid-observations", 2) == "covid-observations-v2-000001"
    assert m.next_generation("covid-observations-000001") == "covid-observations-000002"
    assert m.next_generation("covid-observations-v2-000999") == "covid-observations-v2-001000"
    with pytest.raises(ValueError):
        m.next_generation("covid-observations")


def test_past_retention_never_touches_the_write_index() -> None:
    now = dt.datetime(2024, 6, 1, tzinfo=dt.UTC)
    ms = lambda d: str(int(dt.datetime(2024, *d, tzinfo=dt.UTC).timestamp() * 1000))  # noqa: E731
    indices = {
        "a-000001": {"is_write_index": False, "creation_date": ms((1, 1))},
        "a-000002": {"is_write_index": False, "creation_date": ms((5, 30))},
        "a-000003": {"is_write_index": True, "creation_date": ms((1, 1))},
    }
    assert m.past_retention(indices, now, 30) == [("a-000001", 152.0)]
    assert m.past_retention(indices, now, 0) == [("a-000001", 152.0), ("a-000002", 2.0)]


def test_reindex_module_detection() -> None:
    minimal = {"nodes": {"n1": {"modules": [{"name": "transport-netty4"}, {"name": "x-pack-core"}]}}}
    full = {"nodes": {"n1": {"modules": [{"name": "reindex"}]}, "n2": {"modules": [{"name": "reindex"}]}}}
    mixed = {"nodes": {"n1": {"modules": [{"name": "reindex"}]}, "n2": {"modules": []}}}
    assert (m.has_reindex_module(minimal), m.has_reindex_module(full), m.has_reindex_module(mixed)) == (
        False, True, False)  # fmt: skip
    assert m.has_reindex_module({"nodes": {}}) is False


def test_alias_actions() -> None:
    assert m.write_switch_actions("a", ["a-000002", "a-000001"], "a-v2-000001") == [
        {"add": {"index": "a-000001", "alias": "a", "is_write_index": False}},
        {"add": {"index": "a-000002", "alias": "a", "is_write_index": False}},
        {"add": {"index": "a-v2-000001", "alias": "a", "is_write_index": True}},
    ]
    assert m.final_swap_actions("a", ["a-000001"], "a-v2-000001") == [
        {"remove": {"index": "a-000001", "alias": "a"}},
        {"add": {"index": "a-v2-000001", "alias": "a", "is_write_index": True}},
    ]


def test_compare_samples_accepts_newer_copies_only() -> None:
    old = {"1": {"v": 1, "ingested_at": "2024-01-01"}, "2": {"v": 2, "ingested_at": "2024-01-01"},
           "3": {"v": 3, "ingested_at": "2024-01-01"}, "4": {"v": 4, "ingested_at": "2024-01-01"}}  # fmt: skip
    new = {"1": {"v": 1, "ingested_at": "2024-01-01"}, "2": {"v": 9, "ingested_at": "2024-02-01"},
           "3": {"v": 8, "ingested_at": "2024-01-01"}, "4": None}  # fmt: skip
    assert m.compare_samples(old, new) == ["3: differs in ['v']", "4: missing from the new index"]


def test_retired_before_respects_the_grace_period() -> None:
    now = dt.datetime(2024, 6, 2, tzinfo=dt.UTC)
    mappings = {
        "a-000001": {"mappings": {"_meta": {m.RETIRED_AT: "2024-06-01T00:00:00+00:00"}}},
        "a-000002": {"mappings": {"_meta": {m.RETIRED_AT: "2024-06-01T12:00:00+00:00"}}},
        "a-v2-000001": {"mappings": {}},
    }
    assert m.retired_before(mappings, now, dt.timedelta(hours=24)) == ["a-000001"]
    assert m.retired_before(mappings, now, dt.timedelta(0)) == ["a-000001", "a-000002"]


def test_row_to_doc_formats_like_the_index_mapping() -> None:
    from collections import namedtuple

    from cassandra.util import Date

    point = namedtuple("geo_point", "lat lon")(48.85, 2.35)
    row = {"record_id": "r1", "date": Date(dt.date(2024, 3, 1)), "vintage": dt.datetime(2024, 3, 2, 10, 0),
           "value": 1.5, "location_point": point, "sex": None, "source_row": 7}  # fmt: skip
    fields = ["record_id", "date", "vintage", "value", "location_point", "sex", "source_row"]
    assert m.row_to_doc(row, fields) == {"record_id": "r1", "date": "2024-03-01", "vintage": "2024-03-02T10:00:00Z",
        "value": 1.5, "location_point": {"lat": 48.85, "lon": 2.35}, "source_row": 7}  # fmt: skip


def test_batched() -> None:
    assert list(m.batched(range(5), 2)) == [[0, 1], [2, 3], [4]]
    assert list(m.batched([], 2)) == []
