"""Bad input gives a clear reject or file error naming file, row and field: nothing dropped silently, no crash."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from pathlib import Path

from covidflow import PROJECT_ROOT
from covidflow.catalog.specs import find_spec
from covidflow.normalise.core import Normaliser, Provenance
from covidflow.normalise.preview import run_file
from covidflow.read.base import RawRecord

HEADER = b'"dep";"sexe";"jour";"hosp";"rea";"rad";"dc"\r\n'
GOOD = b'"75";0;"2020-04-01";2633;720;863;404\r\n'
PROV = Provenance("spf/donnees-hospitalieres/x.csv", datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC))


def spf(tmp_path: Path, body: bytes, name: str = "x.csv"):
    path = tmp_path / name
    path.write_bytes(body)
    records, summary = run_file(find_spec("spf_donnees_hospitalieres"), path, PROV)
    return list(records), summary


def only_reject(summary):
    assert summary.reject_count == 1, summary.lines()
    ((key, examples),) = summary.reject_examples.items()
    return key, examples[0]


def test_missing_column(tmp_path: Path) -> None:
    recs, summary = spf(tmp_path, b'"dep";"sexe";"jour";"hosp";"rad";"dc"\r\n"75";0;"2020-04-01";2633;863;404\r\n')
    assert len(recs) == 3  # hosp, rad, dc still come out; rea is rejected, not silently absent
    (field, reason), message = only_reject(summary)
    assert (field, reason) == ("rea", "missing column")
    assert message.startswith("spf/donnees-hospitalieres/x.csv row 1 (line 2): field 'rea'")


def test_unknown_location(tmp_path: Path) -> None:
    recs, summary = spf(tmp_path, HEADER + GOOD + b'"99";0;"2020-04-01";1;1;1;1\r\n')
    assert len(recs) == 4
    (field, reason), message = only_reject(summary)
    assert (field, reason) == ("dep", "unknown location (fr_department)")
    assert "row 2 (line 3)" in message and "'99'" in message


def test_unparsable_date(tmp_path: Path) -> None:
    _, summary = spf(tmp_path, HEADER + b'"75";0;"2020-13-01";1;1;1;1\r\n')
    (field, reason), message = only_reject(summary)
    assert field == "jour" and reason.startswith("unparsable date") and "'2020-13-01'" in message


def test_negative_count_where_impossible(tmp_path: Path) -> None:
    recs, summary = spf(tmp_path, HEADER + b'"75";0;"2020-04-01";-5;720;863;404\r\n')
    assert len(recs) == 3
    (field, reason), message = only_reject(summary)
    assert (field, reason) == ("hosp", "negative value for hospital_occupancy (stock)")
    assert "'-5'" in message


def test_unknown_sex_code(tmp_path: Path) -> None:
    _, summary = spf(tmp_path, HEADER + b'"75";9;"2020-04-01";1;1;1;1\r\n')
    (field, reason), _ = only_reject(summary)
    assert field == "sexe" and "not in the spec's map" in reason


def test_not_a_number(tmp_path: Path) -> None:
    _, summary = spf(tmp_path, HEADER + b'"75";0;"2020-04-01";abc;1;1;1\r\n')
    assert only_reject(summary)[0] == ("hosp", "not a number")


def test_truncated_row(tmp_path: Path) -> None:
    recs, summary = spf(tmp_path, HEADER + GOOD + b'"75";0;"2020-04-02";26')
    assert len(recs) == 4
    (field, _), message = only_reject(summary)
    assert field == "(record)" and "expected 7 fields, got 4" in message and "line 3" in message


def test_truncated_gzip_file(tmp_path: Path) -> None:
    data = (PROJECT_ROOT / "include/samples/spf_donnees_hospitalieres").glob("*.csv").__next__().read_bytes()
    packed = gzip.compress(data)
    recs, summary = spf(tmp_path, packed[: len(packed) // 2], name="x.csv.gz")
    assert summary.error is not None and "truncated or corrupt gzip" in summary.error
    assert len(recs) == summary.records_out < 4 * 4242  # what was read before the cut is reported, then the error


def test_wrong_encoding(tmp_path: Path) -> None:
    recs, summary = spf(tmp_path, HEADER + GOOD + '"é";0;"2020-04-02";1;1;1;1\r\n'.encode("latin-1"))
    assert len(recs) == 4
    (field, _), message = only_reject(summary)
    assert field == "(record)" and "not valid utf-8" in message and "line 3" in message


def test_empty_file(tmp_path: Path) -> None:
    recs, summary = spf(tmp_path, b"")
    assert recs == [] and summary.error is not None and "empty file" in summary.error


def test_share_above_100_is_rejected() -> None:
    norm = Normaliser(find_spec("ecdc_erviss_variants"))
    raw = RawRecord(1, {"survtype": "x", "datasource": "GISAID", "countryname": "France", "yearweek": "2022-W44",
                        "pathogen": "SARS-CoV-2", "variant": "BA.5", "indicator": "proportion", "age": "total",
                        "value": "142.8"})  # fmt: skip
    result = norm.normalise(raw, PROV)
    assert not result.records and result.rejects[0].reason == "variant_share above 100"


def test_file_name_vintage_and_landed_at_fallback() -> None:
    norm = Normaliser(find_spec("spf_donnees_hospitalieres"))
    fields = {"dep": "75", "sexe": "0", "jour": "2020-04-01", "hosp": "1", "rea": "1", "rad": "1", "dc": "1"}
    dated = Provenance("spf/donnees-hospitalieres/donnees-hospitalieres-covid19-2020-04-14-19h00.csv",
                       PROV.landed_at, PROV.ingested_at)  # fmt: skip
    rec = norm.normalise(RawRecord(1, fields), dated).records[0]
    assert rec["vintage"] == datetime(2020, 4, 14, 19, 0, tzinfo=UTC) and rec["vintage_basis"] == "file_name"
    other = norm.normalise(RawRecord(1, fields), PROV).records[0]
    assert other["vintage"] == PROV.landed_at and other["record_id"] != rec["record_id"]


def test_hook_runs_and_its_drops_are_counted(tmp_path: Path) -> None:
    spec_text = (PROJECT_ROOT / "include/sources/spf_vacsi.yaml").read_text(encoding="utf-8")
    spec_path = tmp_path / "spf_vacsi.yaml"
    spec_path.write_text(spec_text + "hook: covidflow.sources.hooks.drop_blank_rows\n", encoding="utf-8")
    from covidflow.catalog.specs import load_spec

    data = tmp_path / "vacsi-dep.csv"
    data.write_bytes(b"dep;jour;n_dose1;n_cum_dose1\n01;2021-01-06;1;1\n;;;\n")
    records, summary = run_file(load_spec(spec_path), data, PROV)
    assert len(list(records)) == 2 and summary.reject_count == 0
    assert summary.skips == {("(hook)", "hook produced no rows"): 1}


def test_core_imports_neither_spark_nor_airflow() -> None:
    import subprocess
    import sys

    code = (
        "import sys, covidflow.normalise.core, covidflow.normalise.spark_schema;"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('pyspark', 'airflow', 'py4j')];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PROJECT_ROOT)
