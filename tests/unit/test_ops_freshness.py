"""Freshness judging: exact verdicts for explicit reference times (never 'now': the samples are 2020-2022)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from covidflow.catalog.specs import load_all
from covidflow.ops.freshness import FreshnessRule, judge, judge_all, late_summary, parse_duration, parse_time

REF = datetime(2022, 12, 1, 6, 0, tzinfo=UTC)
DAILY = FreshnessRule("daily", timedelta(hours=12))


@pytest.mark.parametrize(
    ("text", "delta"),
    [("90m", timedelta(minutes=90)), ("36h", timedelta(hours=36)), ("2d", timedelta(days=2)),
     ("1w", timedelta(weeks=1)), (None, timedelta(0)), ("", timedelta(0))],
)  # fmt: skip
def test_parse_duration(text: str | None, delta: timedelta) -> None:
    assert parse_duration(text) == delta


@pytest.mark.parametrize("bad", ["2 days", "0d", "-1d", "P1D", "3y"])
def test_parse_duration_refuses(bad: str) -> None:
    with pytest.raises(ValueError, match="expected <n>m, <n>h, <n>d or <n>w"):
        parse_duration(bad)


def test_parse_time_forms() -> None:
    assert parse_time("2022-11-18") == datetime(2022, 11, 18, tzinfo=UTC)
    assert parse_time("2022-11-18T10:00:00Z") == datetime(2022, 11, 18, 10, tzinfo=UTC)
    assert parse_time("2022-11-18T12:00:00+02:00") == datetime(2022, 11, 18, 10, tzinfo=UTC)
    assert parse_time(datetime(2022, 11, 18, 10)) == datetime(2022, 11, 18, 10, tzinfo=UTC)
    assert parse_time(date(2022, 11, 18)) == datetime(2022, 11, 18, tzinfo=UTC)


def test_a_source_whose_files_stopped_arriving_is_late() -> None:
    v = judge("spf_vacsi", DAILY, {"manifest": datetime(2022, 11, 25, tzinfo=UTC)}, REF)
    assert v.status == "late"
    assert v.due == "2022-11-26T12:00:00Z"
    assert v.line() == (
        "LATE spf_vacsi: last vintage 2022-11-25T00:00:00Z, cadence daily + 12.0 h -> due 2022-11-26T12:00:00Z, "
        "4.8 days late at 2022-12-01T06:00:00Z (manifest 2022-11-25T00:00:00Z)"
    )


def test_a_source_within_cadence_plus_tolerance_is_ok() -> None:
    v = judge("spf_vacsi", DAILY, {"manifest": datetime(2022, 11, 29, 18, 0, tzinfo=UTC)}, REF)
    assert (v.status, v.due) == ("ok", "2022-12-01T06:00:00Z")  # due exactly at the reference: not late yet
    assert v.line() == (
        "OK spf_vacsi: last vintage 2022-11-29T18:00:00Z, next due by 2022-12-01T06:00:00Z "
        "(manifest 2022-11-29T18:00:00Z)"
    )


def test_one_second_past_due_is_late() -> None:
    v = judge("s", DAILY, {"manifest": datetime(2022, 11, 29, 17, 59, 59, tzinfo=UTC)}, REF)
    assert v.status == "late"
    assert "0.0 h late" in v.line()


def test_the_newest_signal_wins() -> None:
    signals = {"manifest": datetime(2022, 11, 1, tzinfo=UTC), "store": datetime(2022, 11, 30, tzinfo=UTC)}
    v = judge("s", DAILY, signals, REF)
    assert (v.status, v.last_vintage) == ("ok", "2022-11-30T00:00:00Z")


def test_a_store_behind_the_manifest_is_reported_late() -> None:
    signals = {"manifest": datetime(2022, 11, 30, tzinfo=UTC), "store": datetime(2022, 11, 20, tzinfo=UTC)}
    v = judge("s", DAILY, signals, REF)
    assert v.status == "late"
    assert v.reason.endswith(
        "; the store is 10.0 days behind the manifest (published but not stored: check the stream)"
    )


def test_a_store_with_nothing_while_files_arrive_is_late() -> None:
    v = judge("s", DAILY, {"manifest": datetime(2022, 11, 30, tzinfo=UTC), "store": None}, REF)
    assert v.status == "late"
    assert v.reason.endswith("; the store has no vintage although files were published (check the stream)")


def test_never_seen_is_late_by_default_and_configurable() -> None:
    assert judge("s", DAILY, {"manifest": None, "store": None}, REF).line() == (
        "LATE s: no vintage seen at all (cadence daily + 12.0 h) (manifest never, store never)"
    )
    assert judge("s", DAILY, {"manifest": None}, REF, never_seen="ok").status == "not_judged"


def test_irregular_and_missing_rules_are_not_judged() -> None:
    old = {"manifest": datetime(2020, 1, 1, tzinfo=UTC)}
    assert judge("s", FreshnessRule("irregular"), old, REF).status == "not_judged"
    assert judge("s", None, old, REF).status == "not_judged"
    assert judge("s", None, old, REF, missing_rule="late").status == "late"


def test_weekly_cadence() -> None:
    rule = FreshnessRule("weekly", timedelta(days=3))
    assert judge("s", rule, {"manifest": datetime(2022, 11, 18, tzinfo=UTC)}, REF).status == "late"  # due 11-28
    assert judge("s", rule, {"manifest": datetime(2022, 11, 22, tzinfo=UTC)}, REF).status == "ok"  # due 12-02


def test_every_bundled_spec_declares_freshness_and_the_summary_has_one_line_per_late_source() -> None:
    specs = {sid: spec.data for sid, spec in load_all().items()}
    assert len(specs) == 10
    assert all(FreshnessRule.from_spec(s) is not None for s in specs.values())
    seen = {sid: {"manifest": datetime(2022, 11, 30, 12, tzinfo=UTC)} for sid in specs}
    seen["spf_vacsi"] = {"manifest": datetime(2022, 11, 1, tzinfo=UTC)}
    seen["jhu_csse_time_series_global"] = {"manifest": None}
    verdicts = judge_all(specs, seen, REF)
    assert [v.source_id for v in verdicts if v.late] == ["jhu_csse_time_series_global", "spf_vacsi"]
    summary = late_summary(verdicts)
    assert summary.splitlines() == [
        "2 source(s) late:",
        "LATE jhu_csse_time_series_global: no vintage seen at all (cadence daily + 24.0 h) (manifest never)",
        "LATE spf_vacsi: last vintage 2022-11-01T00:00:00Z, cadence daily + 12.0 h -> due 2022-11-02T12:00:00Z, "
        "28.8 days late at 2022-12-01T06:00:00Z (manifest 2022-11-01T00:00:00Z)",
    ]
    assert late_summary([v for v in verdicts if not v.late]) == ""
