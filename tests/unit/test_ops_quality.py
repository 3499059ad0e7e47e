"""Quality checks with exact findings, and the drift guard that stops an object before anything is written."""

from __future__ import annotations

import io
from datetime import date
from typing import Any

import pytest

from covidflow.catalog.specs import find_spec, load_all
from covidflow.land.objects import LandedObject
from covidflow.ops.config import quality_config
from covidflow.publish.kafka import publish_records
from covidflow.read import read_records
from covidflow.store.quality import (
    SchemaDrift,
    check_records,
    guard_drift,
    schema_drift,
    summarise,
)

CFG = quality_config()
REF = date(2021, 6, 1)


def rec(day: str, value: float | None, metric: str = "vaccinated_first_dose_cumulative", kind: str = "cumulative",
        loc: str = "FR-D01") -> dict[str, Any]:  # fmt: skip
    return {"location_key": loc, "metric": metric, "metric_kind": kind, "date": day, "value": value, "period": "day"}


def lines(records: list[dict[str, Any]], config: dict[str, Any] = CFG) -> list[str]:
    return [f.line() for f in check_records("src", records, REF, config)]


def test_a_cumulative_series_that_drops_is_flagged() -> None:
    records = [rec("2021-01-01", 10), rec("2021-01-02", 12), rec("2021-01-03", 11), rec("2021-01-04", 15)]
    assert lines(records) == [
        "WARNING cumulative_drop src [FR-D01|vaccinated_first_dose_cumulative|day||||]: "
        "cumulative series goes down 1 time(s): 2021-01-02=12 -> 2021-01-03=11"
    ]


def test_a_drop_within_the_tolerance_is_ignored() -> None:
    config = {**CFG, "checks": {**CFG["checks"], "cumulative_drop": {"severity": "warning", "tolerance_ratio": 0.1}}}
    assert lines([rec("2021-01-01", 100), rec("2021-01-02", 95)], config) == []
    assert len(lines([rec("2021-01-01", 100), rec("2021-01-02", 89)], config)) == 1


def test_dates_are_ordered_before_comparing() -> None:
    assert lines([rec("2021-01-03", 30), rec("2021-01-01", 10), rec("2021-01-02", 20)]) == []


def test_a_sudden_jump_beyond_the_factor_is_flagged() -> None:
    records = [rec("2021-01-01", 20, "hospitalised", "stock"), rec("2021-01-02", 201, "hospitalised", "stock"),
               rec("2021-01-03", 199, "hospitalised", "stock")]  # fmt: skip
    assert lines(records) == [
        "WARNING jump src [FR-D01|hospitalised|day||||]: 1 jump(s) above x10: 2021-01-01=20 -> 2021-01-02=201 (x10.1)"
    ]


def test_a_jump_from_a_small_base_or_at_the_factor_is_not_flagged() -> None:
    small = [rec("2021-01-01", 5, "hospitalised", "stock"), rec("2021-01-02", 500, "hospitalised", "stock")]
    exact = [rec("2021-01-01", 20, "hospitalised", "stock"), rec("2021-01-02", 200, "hospitalised", "stock")]
    assert lines(small) == []
    assert lines(exact) == []


def test_the_jump_factor_comes_from_config() -> None:
    config = {**CFG, "checks": {**CFG["checks"], "jump": {"severity": "blocking", "factor": 2, "min_base": 1}}}
    found = check_records("src", [rec("2021-01-01", 10), rec("2021-01-02", 25)], REF, config)
    assert [(f.check, f.severity, f.count) for f in found] == [("jump", "blocking", 1)]


def test_all_zero_and_all_null_series() -> None:
    zeros = [rec(f"2021-01-0{d}", 0, "hospitalised", "stock") for d in (1, 2, 3)]
    nulls = [rec("2021-01-01", None, "icu", "stock")]
    assert lines(zeros + nulls) == [
        "WARNING all_zero src [FR-D01|hospitalised|day||||]: all 3 values are 0",
        "WARNING all_null src [FR-D01|icu|day||||]: all 1 values are null",
    ]
    assert lines(zeros[:2]) == []  # below min_points


def test_impossible_values_are_blocking() -> None:
    records = [
        rec("2021-01-01", -3, "hospitalised", "stock"),
        rec("2021-01-01", 101.5, "variant_share", "share", "FR"),
        rec("2021-06-03", 1, "cases_new", "daily_flow", "DE"),
        rec("2021-06-02", -1, "cases_new", "daily_flow", "IT"),  # a flow may be negative (a correction); not future
    ]
    found = check_records("src", records, REF, CFG)
    assert [f.line() for f in found] == [
        "BLOCKING future_date src [DE|cases_new|day||||]: 1 date(s) in the future in a series: 2021-06-03 > 2021-06-02",
        "BLOCKING negative_value src [FR-D01|hospitalised|day||||]: 1 negative value(s) of a series: 2021-01-01=-3",
        "BLOCKING share_above_100 src [FR|variant_share|day||||]: 1 share(s) above 100 % in a series: 2021-01-01=101.5",
    ]
    assert summarise("src", found, len(records)) == {
        "source_id": "src", "records": 4, "blocking": 3, "warnings": 0,
        "by_check": {"future_date": 1, "negative_value": 1, "share_above_100": 1},
        "lines": [f.line() for f in found],
    }  # fmt: skip


# -- drift -----------------------------------------------------------------------------------------------------

VACSI = find_spec("spf_vacsi")
SAMPLE = VACSI.sample_path.read_bytes()


def test_the_bundled_samples_show_no_drift() -> None:
    assert schema_drift("spf_vacsi", VACSI.data, ["dep", "jour", "n_dose1", "n_cum_dose1"], CFG) == []


def test_a_renamed_column_is_drift() -> None:
    found = schema_drift("spf_vacsi", VACSI.data, ["departement", "jour", "n_dose1", "n_cum_dose1"], CFG)
    assert [f.line() for f in found] == [
        "BLOCKING drift_missing_column spf_vacsi: column 'dep' mapped by the spec is missing",
        "WARNING drift_new_column spf_vacsi: column 'departement' appeared and is not mapped by the spec",
    ]


class RecordingProducer:
    """Counts every call: the drift guard must stop the object before the producer is used at all."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return lambda *a, **k: self.calls.append(name)


def test_a_renamed_column_fails_the_object_before_anything_is_written() -> None:
    renamed = SAMPLE.replace(b"dep;", b"departement;", 1)
    producer = RecordingProducer()
    obj = LandedObject("b", "spf/vacsi/vacsi-dep.csv", "etag", len(renamed), "2021-06-01T00:00:00+00:00")
    with pytest.raises(SchemaDrift) as err:
        records, _ = guard_drift("spf_vacsi", VACSI.data, read_records(io.BytesIO(renamed), "csv",
                                 VACSI.get("reader") or {}, name=obj.key), CFG, name=obj.key)  # fmt: skip
        publish_records(records, source_id="spf_vacsi", spec=VACSI.data, obj=obj, schema_ver="x", producer=producer)
    assert str(err.value) == (
        "spf/vacsi/vacsi-dep.csv: schema drift, nothing written: column 'dep' mapped by the spec is missing"
    )
    assert producer.calls == []


def test_the_guard_passes_every_record_through_when_there_is_no_drift() -> None:
    expected = list(read_records(io.BytesIO(SAMPLE), "csv", VACSI.get("reader") or {}, name="k"))
    records, warnings = guard_drift(
        "spf_vacsi", VACSI.data, read_records(io.BytesIO(SAMPLE), "csv", VACSI.get("reader") or {}, name="k"),
        {**CFG, "drift": {**CFG["drift"], "peek_records": 10}}, name="k",
    )  # fmt: skip
    assert warnings == []
    assert list(records) == expected
    assert len(expected) > 10


@pytest.mark.parametrize("spec", [s for s in load_all().values() if s.sample_path], ids=lambda s: s.id)
def test_no_bundled_sample_shows_drift(spec) -> None:
    """Columns covidflow makes itself (@object.* from the object's name, @ignored.* of nested documents) and the
    country column of scoped place names are not file columns the drift guard could miss."""
    records = read_records(io.BytesIO(spec.sample_path.read_bytes()), spec["format"], spec.get("reader") or {},
                           name=spec.sample_path.name)  # fmt: skip
    first = next(r for r in records if hasattr(r, "fields"))
    findings = schema_drift(spec.id, spec.data, list(first.fields), CFG)
    # A JSON record may lack keys the publisher did not report that day (absent_metric_columns: skip): warnings.
    assert [f for f in findings if f.blocking or spec["format"] != "json"] == []
