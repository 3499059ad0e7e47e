"""Which landed objects are new, their vintage, and the manifest's marker keys: pure functions, exact values."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from covidflow.land.manifest import marker_key, parse_marker
from covidflow.land.objects import LandedObject, clean_etag, from_listing, matches, object_vintage, select_new

PREFIX = "spf/donnees-hospitalieres/"
PATTERNS = ["donnees-hospitalieres-covid19*.csv"]


def obj(key: str, etag: str = "e1", modified: str = "2024-05-01T10:00:00+00:00") -> LandedObject:
    return LandedObject("landing", key, etag, 10, modified)


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (PREFIX + "donnees-hospitalieres-covid19-2024-05-01-19h00.csv", True),
        (PREFIX + "donnees-hospitalieres-covid19.csv", True),
        (PREFIX + "other.csv", False),
        (PREFIX + "archive/donnees-hospitalieres-covid19-2024.csv", False),  # deeper than the prefix
        ("spf/vacsi/donnees-hospitalieres-covid19.csv", False),
        (PREFIX, False),
        (PREFIX + "donnees-hospitalieres-covid19.csv.gz", False),
    ],
)
def test_matches(key: str, expected: bool) -> None:
    assert matches(key, PREFIX, PATTERNS) is expected


def test_select_new_skips_seen_pairs_and_keeps_new_etags_oldest_first() -> None:
    a = obj(PREFIX + "donnees-hospitalieres-covid19-a.csv", "e1", "2024-05-02T00:00:00+00:00")
    a_fixed = obj(PREFIX + "donnees-hospitalieres-covid19-b.csv", "e9", "2024-05-01T00:00:00+00:00")
    b_same = obj(PREFIX + "donnees-hospitalieres-covid19-b.csv", "e2")
    other = obj(PREFIX + "readme.txt", "e3")
    seen = {(b_same.key, "e2"), (a_fixed.key, "e1")}
    assert select_new([a, b_same, other], seen, PREFIX, PATTERNS) == [a]
    assert select_new([a, a_fixed], seen, PREFIX, PATTERNS) == [a_fixed, a]
    assert select_new([], seen, PREFIX, PATTERNS) == []


def test_from_listing_strips_etag_quotes_and_normalises_time_to_utc() -> None:
    item = {"Key": "k", "ETag": '"abc-2"', "Size": 5, "LastModified": datetime(2024, 5, 1, 12, 30, tzinfo=UTC)}
    assert from_listing("b", item) == LandedObject("b", "k", "abc-2", 5, "2024-05-01T12:30:00+00:00")
    assert clean_etag(' "x" ') == "x"


def test_vintage_from_file_name_with_hour_and_minute() -> None:
    spec = {
        "vintage": {
            "from": "file_name",
            "pattern": r"covid19-(?P<date>\d{4}-\d{2}-\d{2})-(?P<hour>\d{2})h(?P<minute>\d{2})",
        }
    }
    assert object_vintage(spec, obj(PREFIX + "donnees-hospitalieres-covid19-2024-05-01-19h30.csv")) == (
        "2024-05-01T19:30:00+00:00"
    )


def test_vintage_from_file_name_date_only_and_fallback_to_landed_at() -> None:
    spec = {"vintage": {"from": "file_name", "pattern": r"README_(?P<date>\d{4}-\d{2}-\d{2})", "fallback": "landed_at"}}
    assert object_vintage(spec, obj("g/README_2022-11-15.md")) == "2022-11-15"
    assert object_vintage(spec, obj("g/README.md", modified="2024-06-01T08:00:00+00:00")) == "2024-06-01T08:00:00+00:00"
    assert object_vintage(spec, obj("g/README_2022-13-45.md")) == "2024-05-01T10:00:00+00:00"  # not a date


def test_vintage_landed_at_and_column_rules_use_last_modified() -> None:
    o = obj("x.csv", modified="2024-06-01T08:00:00+00:00")
    assert object_vintage({"vintage": {"from": "landed_at"}}, o) == "2024-06-01T08:00:00+00:00"
    assert object_vintage({"vintage": {"from": "column", "column": "d"}}, o) == "2024-06-01T08:00:00+00:00"


def test_marker_key_round_trip() -> None:
    o = obj("spf/vacsi/vacsi dep+1.csv", "0123abcd-3")
    key = marker_key("_manifest/", "spf_vacsi", o)
    assert key == "_manifest/spf_vacsi/spf%2Fvacsi%2Fvacsi%20dep%2B1.csv/0123abcd-3.json"
    assert parse_marker("_manifest/", "spf_vacsi", key) == ("spf/vacsi/vacsi dep+1.csv", "0123abcd-3")
    assert parse_marker("_manifest/", "spf_vacsi", "_manifest/spf_vacsi/x.txt") is None
    assert parse_marker("_manifest/", "other", key) is None
