"""Pure logic of the Elasticsearch maintenance DAGs: template check, names, retention, alias actions, docs."""

from __future__ import annotations

import datetime as dt
import itertools
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


def test_is_newer_compares_instants_not_strings() -> None:
    assert m.is_newer("2024-02-01T00:00:00+00:00", "2024-01-31T23:00:00Z")
    assert not m.is_newer("2024-01-01T00:00:00Z", "2024-01-01T00:00:00+00:00")
    assert m.is_newer(1_700_000_000_001, 1_700_000_000_000) and m.is_newer("2024-01-01", None)
    assert not m.is_newer(None, "2024-01-01")


def test_compare_id_values_checks_every_id_and_value() -> None:
    old = [  # (id, index, value, ingested_at ms, docs), sorted by id then index, as the composite aggregation gives
        ("a", "x-000001", 1.0, 10, 1),
        ("b", "x-000001", 2.0, 10, 1),
        ("b", "x-000002", 5.0, 20, 1),  # held by two old indices: the newest one's copy is current
        ("c", "x-000001", 3.0, 10, 1),
        ("d", "x-000001", 4.0, 10, 1),
        ("e", "x-000001", 5.0, 10, 1),
        ("f", "x-000002", 6.0, 10, 1),
    ]
    new = [
        ("a", None, 1.0, 10, 1),
        ("b", None, 5.0, 20, 1),
        ("bb", None, 9.0, 30, 1),  # written since the switch
        ("c", None, 8.0, 10, 1),  # an update that never reached the copy: lost
        ("d", None, 7.0, 11, 1),  # a newer version written straight to the target
        ("f", None, 6.0, 10, 1),
        ("g", None, 1.0, 30, 1),
    ]
    report = m.compare_id_values(old, new)
    assert {k: v for k, v in report.items() if not k.endswith("examples")} == {
        "source_docs": 7, "source_ids": 6, "target_ids": 7, "only_in_target": 2, "newer_in_target": 1,
        "held_by_several_sources": 1, "missing": 1, "differ": 1}  # fmt: skip
    assert report["missing_examples"] == ["e (in x-000001)"]
    assert report["differ_examples"] == ["c: x-000001 value=3.0 ingested_at=10, target value=8.0 ingested_at=10"]
    assert m.compare_id_values([], [])["source_ids"] == 0
    assert m.compare_id_values(old[:1], [])["missing"] == 1


def test_retired_before_respects_the_grace_period() -> None:
    now = dt.datetime(2024, 6, 2, tzinfo=dt.UTC)
    mappings = {
        "a-000001": {"mappings": {"_meta": {m.RETIRED_AT: "2024-06-01T00:00:00+00:00"}}},
        "a-000002": {"mappings": {"_meta": {m.RETIRED_AT: "2024-06-01T12:00:00+00:00"}}},
        "a-v2-000001": {"mappings": {}},
    }
    assert m.retired_before(mappings, now, dt.timedelta(hours=24)) == ["a-000001"]
    assert m.retired_before(mappings, now, dt.timedelta(0)) == ["a-000001", "a-000002"]


def test_token_ranges_cover_the_ring_without_gaps() -> None:
    from covidflow.index.rebuild import MAX_TOKEN, MIN_TOKEN, token_ranges

    ranges = token_ranges(64)
    assert len(ranges) == 64 and ranges[0][0] == MIN_TOKEN and ranges[-1][1] == MAX_TOKEN
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
    assert token_ranges(1) == [(MIN_TOKEN, MAX_TOKEN)]
    with pytest.raises(ValueError):
        token_ranges(0)


def test_row_record_gives_the_canonical_python_types() -> None:
    from collections import namedtuple

    from cassandra.util import Date

    from covidflow.index.rebuild import row_record

    point = namedtuple("geo_point", "lat lon")(48.85, 2.35)
    row = {"record_id": "r1", "date": Date(dt.date(2024, 3, 1)), "vintage": dt.datetime(2024, 3, 2, 10, 0),
           "value": 1.5, "location_point": point, "location_parent_key": None, "source_row": 7}  # fmt: skip
    assert row_record(row, [*row, "absent"]) == {
        "record_id": "r1", "date": dt.date(2024, 3, 1), "vintage": dt.datetime(2024, 3, 2, 10, 0, tzinfo=dt.UTC),
        "value": 1.5, "location_point": {"lat": 48.85, "lon": 2.35}, "location_parent_key": None, "source_row": 7,
        "absent": None}  # fmt: skip


def test_batched() -> None:
    assert list(m.batched(range(5), 2)) == [[0, 1], [2, 3], [4]]
    assert list(m.batched([], 2)) == []
