"""`covidflow query` selection and rendering, without a store."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

from covidflow.cli.query import newest_per_key, parse_as_of, render

V1 = datetime(2026, 1, 15, 8, tzinfo=UTC)
V2 = datetime(2026, 1, 16, 8, tzinfo=UTC)


def row(value: float, vintage: datetime, day: int = 1, sex: str = "all") -> dict:
    return {"date": date(2020, 4, day), "source_id": "spf", "period": "day", "sex": sex, "age_group": "all",
            "variant": "all", "upstream": "-", "value": value, "unit": "patients", "vintage": vintage}  # fmt: skip


def test_parse_as_of_date_is_end_of_day_utc() -> None:
    assert parse_as_of("2026-01-15") == datetime(2026, 1, 15, 23, 59, 59, 999999, tzinfo=UTC)
    assert parse_as_of("2026-01-15T08:00:00+02:00") == datetime(2026, 1, 15, 6, tzinfo=UTC)


def test_newest_vintage_wins_and_as_of_cuts_off() -> None:
    rows = [row(10, V1), row(11, V2), row(20, V1, day=2)]
    assert [(r["date"].day, r["value"]) for r in newest_per_key(rows)] == [(1, 11), (2, 20)]
    assert [(r["date"].day, r["value"]) for r in newest_per_key(rows, as_of=V1)] == [(1, 10), (2, 20)]
    assert newest_per_key(rows, as_of=datetime(2026, 1, 1, tzinfo=UTC)) == []


def test_render_formats() -> None:
    rows = [row(2633.0, V1), row(1617.0, V1, sex="male")]
    assert json.loads(render(rows, "json"))[1] == {
        "date": "2020-04-01", "source_id": "spf", "period": "day", "sex": "male", "age_group": "all",
        "variant": "all", "upstream": "-", "value": 1617.0, "unit": "patients", "vintage": "2026-01-15T08:00:00+00:00",
    }  # fmt: skip
    assert render(rows, "csv").splitlines() == [
        "date,source_id,period,sex,age_group,variant,upstream,value,unit,vintage",
        "2020-04-01,spf,day,all,all,all,-,2633.0,patients,2026-01-15T08:00:00+00:00",
        "2020-04-01,spf,day,male,all,all,-,1617.0,patients,2026-01-15T08:00:00+00:00",
    ]
    table = render(rows, "table").splitlines()
    assert table[0].split() == ["date", "source_id", "period", "sex", "age_group", "variant", "upstream", "value",
                                "unit", "vintage"]  # fmt: skip
    assert table[2].split() == ["2020-04-01", "spf", "day", "male", "all", "all", "-", "1617.0", "patients",
                                "2026-01-15T08:00:00+00:00"]  # fmt: skip
