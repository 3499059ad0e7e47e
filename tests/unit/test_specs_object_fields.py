"""Values from the landed object's name (``object.pattern`` -> ``@object.<group>`` columns)."""

from __future__ import annotations

from pathlib import Path

import pytest

from covidflow.catalog.specs import SpecError, find_spec, load_spec, object_fields

SPEC = """\
id: demo
title: Demo source
publisher: Someone
licence: CC BY 4.0
home_page: https://example.org
landing: {prefix: demo/, patterns: ["*.csv"]}
format: csv
location: {column: country, scheme: iso2}
date: {column: day}
metric: {column: "@object.what", map: {cases: cases_daily}}
value: {column: n}
vintage: {from: landed_at}
"""


def test_object_fields_of_each_jhu_file() -> None:
    data = find_spec("jhu_csse_time_series_global").data
    key = "jhu-csse/time-series-global/time_series_covid19_deaths_global.csv"
    assert object_fields(data, key) == {"@object.metric": "deaths"}
    assert object_fields(data, "time_series_covid19_confirmed_global_FR.csv") == {"@object.metric": "confirmed"}
    # only the file name is searched, never the prefix
    assert object_fields(data, "time_series_covid19_deaths_global/other.csv") == {}
    assert object_fields({"id": "x"}, key) == {}  # no object rule: nothing added


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("", "'@object.what' reads the object's name, but the spec has no object.pattern"),
        ("object: {pattern: '(?P<kind>[a-z]+)'}\n", "'@object.what' reads the object's name, but object.pattern has"),
        ("object: {pattern: '[a-z]+'}\n", "needs at least one named group"),
        ("object: {pattern: '(?P<what>'}\n", "invalid regular expression"),
        ("object: {pattern: '(?P<what>x)'}\nunpivot: {name: d, value: n}\n", "unpivot needs columns (a regex)"),
    ],
)
def test_object_rules_are_checked(tmp_path: Path, extra: str, message: str) -> None:
    path = tmp_path / "demo.yaml"
    path.write_text(SPEC + extra, encoding="utf-8")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert any(message in p.message for p in info.value.problems), info.value.problems


def test_a_valid_object_rule_loads(tmp_path: Path) -> None:
    path = tmp_path / "demo.yaml"
    path.write_text(SPEC + "object: {pattern: '^(?P<what>[a-z]+)_'}\n", encoding="utf-8")
    assert object_fields(load_spec(path).data, "cases_2022.csv") == {"@object.what": "cases"}
