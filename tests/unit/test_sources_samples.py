"""Exact values read back from the bundled real files through spec + reader + core.

Every expected number below was read from the sample file by eye (grep), never produced by the code
under test; the comment says where it is.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from covidflow import PROJECT_ROOT
from covidflow.catalog.specs import find_spec, load_all
from covidflow.normalise.core import Provenance
from covidflow.normalise.preview import run_file

SAMPLES = PROJECT_ROOT / "include" / "samples"
LANDED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
INGESTED = datetime(2026, 1, 2, 3, 5, 0, tzinfo=UTC)


def prov(source_id: str, sample: Path) -> Provenance:
    spec = find_spec(source_id)
    return Provenance(spec["landing"]["prefix"] + sample.name, LANDED, INGESTED, object_version="etag-1")


def run(source_id: str) -> tuple[list[dict], object]:
    spec = find_spec(source_id)
    records, summary = run_file(spec, spec.sample_path, prov(source_id, spec.sample_path))
    return list(records), summary


def pick(records: list[dict], **where: object) -> list[dict]:
    return [r for r in records if all(r[k] == v for k, v in where.items())]


def one(records: list[dict], **where: object) -> dict:
    found = pick(records, **where)
    assert len(found) == 1, (where, len(found))
    return found[0]


def test_spf_paris_2020_04_01_all_sexes_hospital_occupancy() -> None:
    recs, summary = run("spf_donnees_hospitalieres")
    # line 227: "75";0;"2020-04-01";2633;720;863;404   (dep;sexe;jour;hosp;rea;rad;dc)
    base = {"location_key": "FR-D75", "date": date(2020, 4, 1), "sex": "all"}
    assert one(recs, metric="hospital_occupancy", **base)["value"] == 2633
    assert one(recs, metric="icu_occupancy", **base)["value"] == 720
    assert one(recs, metric="hospital_discharges_cumulative", **base)["value"] == 863
    assert one(recs, metric="hospital_deaths_cumulative", **base)["value"] == 404
    # lines 228-229: men 1617, women 986 -> 2603, not 2633: sexe=0 is not the sum of the sexes
    male = one(recs, metric="hospital_occupancy", location_key="FR-D75", date=date(2020, 4, 1), sex="male")
    female = one(recs, metric="hospital_occupancy", location_key="FR-D75", date=date(2020, 4, 1), sex="female")
    assert (male["value"], female["value"]) == (1617, 986)
    r = one(recs, metric="hospital_occupancy", **base)
    assert r["location_name"] == "Paris" and r["location_parent_key"] == "FR-R11"
    assert r["location_parent_name"] == "Île-de-France"
    assert r["source_row"] == 226 and r["period"] == "day" and r["metric_kind"] == "stock"
    assert r["vintage"] == LANDED and r["vintage_basis"] == "landed_at"  # sample name is not SPF's dated name
    assert r["source_object_version"] == "etag-1" and r["ingested_at"] == INGESTED
    # 4,242 rows (SOURCE.md) x 4 metrics, nothing rejected
    assert (summary.rows_read, summary.records_out, summary.reject_count) == (4242, 4 * 4242, 0)


def test_spf_corsica_2a() -> None:
    recs, _ = run("spf_donnees_hospitalieres")
    # line 4027: "2A";2;"2020-04-14";41;3;32;11
    r = one(recs, location_key="FR-D2A", date=date(2020, 4, 14), sex="female", metric="hospital_deaths_cumulative")
    assert r["value"] == 11 and r["location_parent_key"] == "FR-R94"


def test_spf_vacsi_paris_and_saint_barthelemy() -> None:
    recs, summary = run("spf_vacsi")
    # line 1636: 75;2021-01-27;2486;38731
    assert (
        one(recs, location_key="FR-D75", date=date(2021, 1, 27), metric="people_vaccinated_first_dose_daily")["value"]
        == 2486
    )
    assert (
        one(recs, location_key="FR-D75", date=date(2021, 1, 27), metric="people_vaccinated_first_dose_cumulative")[
            "value"
        ]
        == 38731
    )
    # line 2134: 977;2021-01-18;1;1 -> Saint-Barthélemy, a collectivity (not a department)
    r = one(recs, location_key="FR-C977", date=date(2021, 1, 18), metric="people_vaccinated_first_dose_daily")
    assert r["location_level"] == "collectivity" and r["value"] == 1
    assert (summary.rows_read, summary.records_out, summary.reject_count) == (2133, 4266, 0)


def test_who_france_and_replacement_character_names() -> None:
    recs, summary = run("who_covid19_global_weekly")
    # line 74: 2022-10-02,FR,France,EURO,310114,34315693,217,155574
    r = one(recs, location_key="FR", date=date(2022, 10, 2), metric="cases_weekly")
    assert r["value"] == 310114 and r["period"] == "week" and r["period_start"] == date(2022, 9, 26)
    assert one(recs, location_key="FR", date=date(2022, 10, 2), metric="deaths_cumulative")["value"] == 155574
    # line 189: 2022-09-04,RE,R\ufffdunion,,7014,... -> department La Réunion, clean registry name
    r = one(recs, location_key="FR-D974", date=date(2022, 9, 4), metric="cases_weekly")
    assert r["value"] == 7014 and r["location_name"] == "La Réunion"
    assert all("\ufffd" not in (x["location_name"] or "") for x in recs)
    # empty New_deaths (e.g. 2022-09-18,CI,...,100,87019,,822) is skipped as not reported, not zero
    assert not pick(recs, location_key="CI", date=date(2022, 9, 18), metric="deaths_weekly")
    assert summary.reject_count == 0 and summary.rows_read == 272


def test_ecdc_weekly_iso_week() -> None:
    recs, _ = run("ecdc_weekly_cases_deaths")
    # line 200: "France","FR","cases","2022-35",114604,"TESSy COVID-19"; ISO week 2022-35 = Mon 29 Aug .. Sun 4 Sep
    r = one(recs, location_key="FR", metric="cases_weekly", date=date(2022, 9, 4))
    assert r["value"] == 114604 and r["period_start"] == date(2022, 8, 29)
    # vintage from the snapshot date in the file name
    assert r["vintage"] == datetime(2022, 11, 18, tzinfo=UTC) and r["vintage_basis"] == "file_name"


def test_erviss_variant_share_and_detections() -> None:
    recs, summary = run("ecdc_erviss_variants")
    # lines 411 and 420: France,2022-W44,...,BA.5,detections,total,481 / proportion,total,42.8
    base = {"location_key": "FR", "date": date(2022, 11, 6), "variant": "BA.5", "upstream": "GISAID"}
    assert one(recs, metric="variant_detections_weekly", **base)["value"] == 481
    share = one(recs, metric="variant_share", **base)
    assert share["value"] == 42.8 and share["unit"] == "percent" and share["age_group"] == "all"
    assert summary.records_out == 1427 and summary.reject_count == 0


def test_jhu_wide_dates_and_provinces() -> None:
    recs, summary = run("jhu_csse_time_series_global")
    # line 14: the row with empty Province/State, Country/Region France; column 4/1/20 = 56362; last (3/9/23) = 38618509
    assert one(recs, location_key="FR", date=date(2020, 4, 1))["value"] == 56362
    assert one(recs, location_key="FR", date=date(2023, 3, 9))["value"] == 38618509
    # line 9: Reunion,France,-21.1151,55.5364,...; 4/1/20 = 281
    r = one(recs, location_key="FR-D974", date=date(2020, 4, 1))
    assert r["value"] == 281 and r["location_point"] == {"lat": -21.1151, "lon": 55.5364}
    # line 12: St Martin -> collectivity FR-C978, 3/9/23 = 12271
    assert one(recs, location_key="FR-C978", date=date(2023, 3, 9))["value"] == 12271
    assert pick(recs, location_key="KR")  # "Korea, South"
    # 19 rows x 1,143 date columns (1/22/20 .. 3/9/23); the metric comes from the file name ("confirmed")
    assert (summary.rows_read, summary.records_out, summary.reject_count) == (19, 19 * 1143, 0)
    assert {r["metric"] for r in recs} == {"cases_cumulative"}


JHU_DEATHS = (
    SAMPLES / "jhu_csse_time_series_global" / "time_series_covid19_deaths_global_AU-CA-UK_2023-03-08_to_2023-03-09.csv"
)


def test_jhu_deaths_file_same_spec_right_metric_and_provinces_resolved() -> None:
    spec = find_spec("jhu_csse_time_series_global")
    records, summary = run_file(spec, JHU_DEATHS, prov("jhu_csse_time_series_global", JHU_DEATHS))
    recs = list(records)
    assert {r["metric"] for r in recs} == {"deaths_cumulative"}  # the file name says deaths
    # line 20: Ontario,Canada,51.2538,-85.3232,16186,16234
    r = one(recs, location_key="CA-ON", date=date(2023, 3, 9))
    assert r["value"] == 16234 and r["location_level"] == "subdivision" and r["location_parent_key"] == "CA"
    assert r["location_point"] == {"lat": 51.2538, "lon": -85.3232} and r["metric_kind"] == "cumulative"
    assert one(recs, location_key="CA-ON", date=date(2023, 3, 8))["value"] == 16186
    # line 2: Australian Capital Territory,Australia,-35.4735,149.0124,228,228
    act = one(recs, location_key="AU-ACT", date=date(2023, 3, 9))
    assert act["value"] == 228 and act["location_name"] == "Australian Capital Territory"
    # line 22: Quebec,...,18153,18160; line 8: Victoria,Australia,...,7338,7370 (Victoria is scoped by Australia)
    assert one(recs, location_key="CA-QC", date=date(2023, 3, 9))["value"] == 18160
    assert one(recs, location_key="AU-VIC", date=date(2023, 3, 9))["value"] == 7370
    # UK rows: territories are ISO countries (line 30: Gibraltar ... 111,111), the empty province is the UK itself
    assert one(recs, location_key="GI", date=date(2023, 3, 9))["value"] == 111
    assert one(recs, location_key="GB", date=date(2023, 3, 9))["value"] == 219948  # line 38
    assert one(recs, location_key="PN", date=date(2023, 3, 9))["value"] == 0  # "Pitcairn Islands"
    assert one(recs, location_key="AGG-CHANNEL-ISLANDS", date=date(2023, 3, 9))["value"] == 0  # line 28
    # 37 rows x 2 date columns; Diamond Princess, Grand Princess and Repatriated Travellers are explained skips
    assert (summary.rows_read, summary.records_out, summary.reject_count) == (37, 34 * 2, 0)
    assert sum(summary.skips.values()) == 3 * 2
    assert len({r["location_key"] for r in recs}) == 34  # every AU, CA and UK place row resolved, none merged


def test_jhu_metric_follows_the_object_name(tmp_path: Path) -> None:
    spec = find_spec("jhu_csse_time_series_global")
    recovered = tmp_path / "time_series_covid19_recovered_global.csv"
    recovered.write_bytes(JHU_DEATHS.read_bytes())
    records, _ = run_file(spec, recovered, prov("jhu_csse_time_series_global", recovered))
    assert {r["metric"] for r in records} == {"recovered_cumulative"}
    other = tmp_path / "jhu-export.csv"  # no metric in the name: every row says so, nothing is guessed
    other.write_bytes(JHU_DEATHS.read_bytes())
    records, summary = run_file(spec, other, prov("jhu_csse_time_series_global", other))
    assert list(records) == [] and summary.rejects[("@object.metric", "missing column")] == 34 * 2


def test_opencovid_csv_keeps_each_upstream() -> None:
    recs, summary = run("opencovid19fr_chiffres_cles_csv")
    # lines 103-104: 2020-10-01 FRA hospitalises 6652 (ministere-sante) and 6634 (opencovid19-fr)
    both = pick(recs, location_key="FR", date=date(2020, 10, 1), metric="hospital_occupancy")
    assert {r["upstream"]: r["value"] for r in both} == {"ministere-sante": 6652, "opencovid19-fr": 6634}
    # line 77: 2020-10-01,departement,DEP-75,Paris,,,,,1882,,109,413,...
    assert one(recs, location_key="FR-D75", date=date(2020, 10, 1), metric="hospital_occupancy")["value"] == 413
    assert summary.reject_count == 0 and summary.duplicate_ids == 0
    assert summary.skips[("deces", "NaN: no value in the consolidation (all SPF department rows of 2020-10-15)")] == 101


def test_opencovid_json_nested_and_com_codes() -> None:
    recs, summary = run("opencovid19fr_chiffres_cles_json")
    # lines 11-12: first record, 2020-03-20, ARS La Réunion, "code": "COM-974", "casConfirmes": 45
    r = one(recs, location_key="FR-D974", date=date(2020, 3, 20), upstream="agences-regionales-sante")
    assert r["value"] == 45 and r["metric"] == "cases_cumulative" and r["source_row"] == 1
    assert summary.reject_count == 0 and summary.rows_read == 314 and summary.duplicate_ids == 0


@pytest.mark.parametrize(
    ("source_id", "metric", "value"),
    [("gerstung_variant_share", "variant_share", 9.4), ("gerstung_variant_growth", "variant_growth_advantage", 4)],
)
def test_gerstung_bf7_france(source_id: str, metric: str, value: float) -> None:
    recs, summary = run(source_id)
    # README line 1417 (share table, BF.7 row, 7th column = France): 9.4; line 528 (growth table): 4±0
    r = one(recs, location_key="FR", variant="BF.7")
    assert (r["metric"], r["value"]) == (metric, value)
    # "Latest update: 2022-11-14" in README_2022-11-15.md
    assert r["date"] == date(2022, 11, 14) and r["vintage"] == datetime(2022, 11, 15, tzinfo=UTC)
    assert summary.reject_count == 0
    # 27 lineages x 6 "Other - ..." columns are filtered with a reason, not dropped silently
    assert sum(n for (f, _), n in summary.skips.items() if f == "country") == 27 * 6


def test_every_bundled_sample_previews_with_zero_rejects() -> None:
    specs = load_all()
    assert len(specs) == 10
    for spec in specs.values():
        assert spec.sample_path and spec.sample_path.exists(), spec.id
        records, summary = run_file(spec, spec.sample_path, prov(spec.id, spec.sample_path))
        n = sum(1 for _ in records)
        assert summary.error is None, spec.id
        assert n > 0 and summary.reject_count == 0, (spec.id, summary.lines())
        assert summary.duplicate_ids == 0, spec.id


def test_ids_are_deterministic() -> None:
    a, _ = run("spf_vacsi")
    b, _ = run("spf_vacsi")
    assert [r["record_id"] for r in a] == [r["record_id"] for r in b]


def test_every_bundled_sample_carries_its_attribution() -> None:
    """The project stands alone: each sample is in the repo with a SOURCE.md naming origin and licence."""
    from covidflow.catalog.specs import load_all

    for spec in load_all().values():
        assert spec.sample_path is not None and spec.sample_path.is_file(), spec.id
        source_md = (spec.sample_path.parent / "SOURCE.md").read_text(encoding="utf-8")
        assert "## Origin" in source_md and "licen" in source_md.lower(), spec.id
