"""Differential test: the columnar core (BatchNormaliser) gives record for record what the per-record core gives.

Every bundled sample with its spec, every reader fixture and the bad-input corpus go through both cores; the
records (every field, in order, and as a multiset by record id), the rejects (row, line, field, reason, value)
and the skips (row, field, reason) must be the same. Batches of 7 rows exercise the batch boundaries.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from covidflow import PROJECT_ROOT
from covidflow.catalog.schema import arrow_schema
from covidflow.catalog.specs import SourceSpec, load_all
from covidflow.normalise.columnar import BatchNormaliser, BatchResult, RecordIds
from covidflow.normalise.core import Normaliser, Provenance
from covidflow.read import open_records
from covidflow.read.base import RawRecord, RawReject
from covidflow.read.batch import chunk_records

FIXTURES = PROJECT_ROOT / "tests" / "fixtures" / "readers"
LANDED = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)  # microseconds: the id's isoformat must carry them
INGESTED = datetime(2026, 1, 2, 3, 5, 0, tzinfo=UTC)


def prov_for(spec: SourceSpec, name: str) -> Provenance:
    return Provenance(spec["landing"]["prefix"] + name, LANDED, INGESTED, object_version="etag-1")


def canon(value: Any) -> Any:
    """Comparable form: aware datetimes as UTC ISO text (tzinfo objects differ), floats by repr (NaN, -0.0)."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict):
        return {k: canon(v) for k, v in value.items()}
    return value


def per_record(spec: SourceSpec, items: Iterable[RawRecord | RawReject], prov: Provenance):
    core = Normaliser(spec)
    records, rejects, skips = [], [], []
    for item in items:
        result = core.normalise(item, prov)
        records += [{k: canon(v) for k, v in r.items()} for r in result.records]
        rejects += [(r.source_id, r.object_key, r.row, r.line, r.field, r.reason, r.value) for r in result.rejects]
        skips += [(s.row, s.field, s.reason) for s in result.skips]
    return records, rejects, Counter(skips)


def columnar(spec: SourceSpec, items: Iterable[RawRecord | RawReject], prov: Provenance, batch_rows: int):
    core, deferring = BatchNormaliser(spec), BatchNormaliser(spec, defer_ids=True)
    schema = arrow_schema()
    records, rejects, skips = [], [], []
    kinds = Counter()
    for chunk in chunk_records(iter(items), batch_rows):
        kinds[type(chunk).__name__] += 1
        result = core.normalise(chunk, prov)
        assert_deferred_ids_agree(result, list(deferring.iter_normalise(chunk, prov)), core)
        assert isinstance(result, BatchResult)
        assert result.records.schema == schema  # types, order and nullability exactly
        assert result.skips.schema.names == ["row", "field", "reason"]
        records += [canon_record(r) for r in result.records.to_pylist()]
        rejects += [(r.source_id, r.object_key, r.row, r.line, r.field, r.reason, r.value) for r in result.rejects]
        skips += [tuple(s.values()) for s in result.skips.to_pylist()]
    return records, rejects, Counter(skips), kinds


def canon_record(record: dict[str, Any]) -> dict[str, Any]:
    return {k: canon(v) for k, v in record.items()}


def assert_deferred_ids_agree(result: BatchResult, parts: list[BatchResult], core: BatchNormaliser) -> None:
    """``defer_ids`` (what ``sources preview`` runs): the same records once the ids are filled in, and the same
    duplicate fingerprints as records that carry their ids (the per-record path's)."""
    filled = [r for p in parts for r in p.records_with_ids().to_pylist()]
    assert [canon_record(r) for r in filled] == [canon_record(r) for r in result.records.to_pylist()]
    for part in parts:
        if part.ids is not None:
            assert part.records.column("record_id").null_count == part.records.num_rows  # really deferred
            assert (
                part.records_with_ids(3, 9)
                .column("record_id")
                .equals(part.records_with_ids().column("record_id").slice(3, 6))
            )
        carried = (
            RecordIds.of_table(part.records_with_ids(), core.schema).fingerprints() if part.records.num_rows else []
        )
        assert list(part.id_fingerprints(core.schema)) == list(carried)


def assert_same(
    spec: SourceSpec, items: list[RawRecord | RawReject], prov: Provenance, batch_rows: int, expected: Any = None
) -> Counter:
    want_records, want_rejects, want_skips = expected or per_record(spec, items, prov)
    got_records, got_rejects, got_skips, kinds = columnar(spec, items, prov, batch_rows)
    assert len(got_records) == len(want_records)
    by_id = sorted(want_records, key=lambda r: (r["record_id"], r["source_row"]))
    assert sorted(got_records, key=lambda r: (r["record_id"], r["source_row"])) == by_id  # the multiset
    assert got_records == want_records  # and even the order
    assert Counter(got_rejects) == Counter(want_rejects)
    assert got_rejects == want_rejects
    assert got_skips == want_skips
    return kinds


def read_all(spec: SourceSpec, path: Path) -> list[RawRecord | RawReject]:
    return list(open_records(path, spec["format"], spec.get("reader") or {}))


_EXPECTED: dict[tuple[str, Path, Provenance], Any] = {}


def assert_same_as_file(spec: SourceSpec, path: Path, prov: Provenance, batch_rows: int) -> Counter:
    """assert_same over a file; the per-record core's output is computed once per (spec, file, provenance)."""
    items = read_all(spec, path)
    key = (spec.id, path, prov)
    if key not in _EXPECTED:
        _EXPECTED[key] = per_record(spec, items, prov)
    return assert_same(spec, items, prov, batch_rows, expected=_EXPECTED[key])


SPECS = load_all()


@pytest.mark.parametrize("batch_rows", [65_536, 7])
@pytest.mark.parametrize("source_id", sorted(SPECS))
def test_every_bundled_sample(source_id: str, batch_rows: int) -> None:
    spec = SPECS[source_id]
    kinds = assert_same_as_file(spec, spec.sample_path, prov_for(spec, spec.sample_path.name), batch_rows)
    if spec.id != "opencovid19fr_chiffres_cles_json":  # its records have different keys: the list path, by design
        assert set(kinds) == {"RecordBatch"}, kinds  # the columnar path really ran


def test_samples_under_names_that_do_not_give_a_vintage() -> None:
    """file_name vintages fall back to landed_at (with microseconds) when the object name has no date."""
    for spec in SPECS.values():
        if spec["vintage"]["from"] == "file_name":
            assert_same(spec, read_all(spec, spec.sample_path), prov_for(spec, "renamed.bin"), 1000)


FIXTURE_SPECS = [
    ("spf_hosp_head.csv", "spf_donnees_hospitalieres"),
    ("who_head.csv", "who_covid19_global_weekly"),
    ("opencovid_tail.csv", "opencovid19fr_chiffres_cles_csv"),
    ("opencovid_head.json", "opencovid19fr_chiffres_cles_json"),
    ("gerstung_readme_excerpt.md", "gerstung_variant_share"),
    ("gerstung_readme_excerpt.md", "gerstung_variant_growth"),
]


@pytest.mark.parametrize("batch_rows", [65_536, 2])
@pytest.mark.parametrize(("fixture", "source_id"), FIXTURE_SPECS)
def test_every_reader_fixture(fixture: str, source_id: str, batch_rows: int) -> None:
    spec = SPECS[source_id]
    assert_same_as_file(spec, FIXTURES / fixture, prov_for(spec, "README_2022-11-15.md"), batch_rows)


def test_the_fixtures_listed_are_all_the_fixtures() -> None:
    assert {f for f, _ in FIXTURE_SPECS} == {p.name for p in FIXTURES.iterdir() if p.name != "README.md"}


# -- the bad-input corpus (tests/unit/test_sources_bad_input.py) and more ---------------------------------------

HEADER = b'"dep";"sexe";"jour";"hosp";"rea";"rad";"dc"\r\n'
GOOD = b'"75";0;"2020-04-01";2633;720;863;404\r\n'
BAD_SPF = {
    "missing column": b'"dep";"sexe";"jour";"hosp";"rad";"dc"\r\n"75";0;"2020-04-01";2633;863;404\r\n',
    "unknown location": HEADER + GOOD + b'"99";0;"2020-04-01";1;1;1;1\r\n',
    "unparsable date": HEADER + b'"75";0;"2020-13-01";1;1;1;1\r\n',
    "negative": HEADER + b'"75";0;"2020-04-01";-5;720;863;404\r\n',
    "unknown sex": HEADER + b'"75";9;"2020-04-01";1;1;1;1\r\n',
    "not a number": HEADER + b'"75";0;"2020-04-01";abc;1;1;1\r\n',
    "truncated row": HEADER + GOOD + b'"75";0;"2020-04-02";26',
    "wrong encoding": HEADER + GOOD + '"é";0;"2020-04-02";1;1;1;1\r\n'.encode("latin-1"),
    "dates strptime is picky about": HEADER
    + b'"75";0;" 2020-04-01 ";1;1;1;1\r\n"75";0;"2020-4-1";1;1;1;1\r\n"75";0;"2020-04-01x";1;1;1;1\r\n'
    + b'"75";0;"2020-02-30";1;1;1;1\r\n"75";0;"";1;1;1;1\r\n"75";0;"20200401";1;1;1;1\r\n'
    + b'"75";0;"2020-04- 1";1;1;1;1\r\n"75";0;"\xd9\xa2\xd9\xa0\xd9\xa2\xd9\xa0-04-01";1;1;1;1\r\n',
    "odd numbers": HEADER
    + b'"75";0;"2020-04-01";1_000;+3;.5;1e3\r\n"75";0;"2020-04-01"; 7 ;1\xe2\x80\xaf000;nan;inf\r\n'
    + b'"75";0;"2020-04-01";-0;-0.0;1e999;\xd9\xa3\r\n"75";0;"2020-04-01";1,5;1.5.5;0x10;1 2\r\n'
    + b'"75";0;"2020-04-01";;  ;\t;-1e-2\r\n"75";0;"2020-04-01";' + b"9" * 45 + b";00012;1.;4.9e-324\r\n",
    "empty and odd places": HEADER + b'"";0;"2020-04-01";1;1;1;1\r\n" 75 ";0;"2020-04-01";1;1;1;1\r\n'
    + b'"2a";1;"2020-04-01";1;1;1;1\r\n"977";2;"2020-04-01";1;1;1;1\r\n',
}  # fmt: skip


@pytest.mark.parametrize("batch_rows", [65_536, 1])
@pytest.mark.parametrize("case", sorted(BAD_SPF))
def test_bad_input_corpus(case: str, batch_rows: int, tmp_path: Path) -> None:
    spec = SPECS["spf_donnees_hospitalieres"]
    path = tmp_path / "x.csv"
    path.write_bytes(BAD_SPF[case])
    items = read_all(spec, path)
    assert_same(spec, items, prov_for(spec, "donnees-hospitalieres-covid19-2020-04-14-19h00.csv"), batch_rows)


def variant(source_id: str, **changes: Any) -> SourceSpec:
    """A bundled spec with some keys replaced (None removes the key)."""
    spec = SPECS[source_id]
    data = {**spec.data, **changes}
    return SourceSpec(spec.id, spec.path, {k: v for k, v in data.items() if v is not None})


def rec(i: int, **fields: Any) -> RawRecord:
    return RawRecord(i, fields, i + 1)


def erviss_row(i: int, **over: Any) -> RawRecord:
    base = {"survtype": "x", "datasource": "GISAID", "countryname": "France", "yearweek": "2022-W44",
            "pathogen": "SARS-CoV-2", "variant": "BA.5", "indicator": "proportion", "age": "total",
            "value": "42.8"}  # fmt: skip
    return rec(i, **{**base, **over})


PROV = Provenance("some/where/x.csv", LANDED, INGESTED)


def test_long_format_maps_weeks_and_maximum() -> None:
    spec = SPECS["ecdc_erviss_variants"]
    items = [
        erviss_row(1),
        erviss_row(2, value="142.8"),  # share above 100
        erviss_row(3, indicator="weird"),  # unknown metric value
        erviss_row(4, age="0-9"),  # not in the strict map
        erviss_row(5, yearweek="2022-W60"),
        erviss_row(6, yearweek="2022-44"),
        erviss_row(7, yearweek="2022W44"),
        erviss_row(8, yearweek=" 2022-W44 "),
        erviss_row(9, countryname="Atlantis"),
        erviss_row(10, countryname="  "),
        erviss_row(11, variant=""),  # empty dimension
        erviss_row(12, value="-3", indicator="detections"),  # weekly flow: negative allowed? no: not a stock kind
        erviss_row(13, value="NaN"),
        erviss_row(14, datasource="TESSy", value=""),
    ]
    for batch_rows in (100, 3):
        assert_same(spec, items, PROV, batch_rows)


def test_decimal_comma_pattern_and_value_skips() -> None:
    spec = variant(
        "ecdc_erviss_variants",
        value={"column": "value", "decimal": ",", "pattern": r"^~?(?P<value>[-0-9.,]+)\s*%?$",
               "skip": {"^n/a$": "not available", "^$": "blank"}},
    )  # fmt: skip
    values = ["42,8", "1.234,5", "42.8", "n/a", "", "~7 %", "x", "-1,0", "1,2,3", "0,000001"]
    items = [erviss_row(i, value=v) for i, v in enumerate(values, 1)]
    assert_same(spec, items, PROV, 4)


def test_filters_in_not_in_and_regex() -> None:
    spec = variant(
        "ecdc_erviss_variants",
        filters=[
            {"column": "survtype", "in": ["drop"], "reason": "dropped by in"},
            {"column": "pathogen", "not_in": ["SARS-CoV-2"], "reason": "other pathogen"},
            {"column": "variant", "matches": "^Other", "reason": "remainder"},
            {"column": "no_such_column", "in": [""], "reason": "absent column reads as empty"},
        ],
    )
    items = [erviss_row(1, survtype="drop"), erviss_row(2, pathogen="flu"), erviss_row(3, variant="Other x")]
    assert_same(spec, items, PROV, 10)  # the last filter catches every remaining row
    spec2 = variant("ecdc_erviss_variants", filters=spec["filters"][:3])
    assert_same(spec2, [*items, erviss_row(4), erviss_row(5, countryname="Atlantis")], PROV, 2)


def test_vintage_from_a_column_and_dimension_not_strict() -> None:
    spec = variant(
        "ecdc_erviss_variants",
        vintage={"from": "column", "column": "published", "format": "%d/%m/%Y"},
        dimensions={"variant": {"column": "variant"}, "age_group": {"column": "age", "map": {"total": "all"},
                    "strict": False}, "upstream": "constant-upstream", "sex": {"column": "sex"}},
    )  # fmt: skip
    items = [
        erviss_row(1, published="18/11/2022", sex="female"),
        erviss_row(2, published="2022-11-18", sex="female"),  # unparsable vintage
        erviss_row(3, published="18/11/2022", sex="", age="0-9"),  # empty sex
        erviss_row(4, published="19/11/2022", sex="male", age="0-9"),
    ]
    assert_same(spec, items, PROV, 10)
    assert_same(spec, [rec(1, countryname="France")], PROV, 10)  # missing columns, in the core's order


def test_file_name_vintage_without_fallback_rejects_every_row() -> None:
    spec = variant("ecdc_weekly_cases_deaths", vintage={"from": "file_name", "pattern": r"_(?P<date>\d{8})"})
    items = [rec(1, location="FR", year_week="2022-35", indicator="cases", value="1")]
    assert_same(spec, items, PROV, 10)
    with_date = Provenance("a/b_20221118.csv", LANDED, INGESTED)
    assert_same(variant(spec.id, vintage={**spec["vintage"], "format": "%Y%m%d"}), items, with_date, 10)


def test_typed_columns_from_json_like_records() -> None:
    """Typed formats give int64 / float64 / null columns: str() and float() of them as the core does."""
    spec = variant("opencovid19fr_chiffres_cles_json", absent_metric_columns=None)
    metrics = list(spec["metrics"])
    rows = []
    for i in range(1, 9):
        fields: dict[str, Any] = {"date": "2020-03-20", "code": "FRA" if i % 2 else "DEP-75", "sourceType": "x"}
        for j, m in enumerate(metrics):
            fields[m] = [3, None, -2, 2**60 + 1][(i + j) % 4] if j % 2 else [1.5, float("nan"), -0.0, 1e308][i % 4]
        rows.append(rec(i, **fields))
    assert_same(spec, rows, PROV, 3)
    assert_same(spec, [rec(1, date=20200320, code=75, sourceType=None, **{m: 1 for m in metrics})], PROV, 1)


def test_unpivot_with_typed_and_null_columns() -> None:
    spec = SPECS["gerstung_variant_share"]
    rows = [rec(i, column_1=f"BA.{i}", France=v, Germany=None, **{"Other - Africa": "1"})
            for i, v in enumerate(["9.4", "(0.1)", "", "x", "-1"], 1)]  # fmt: skip
    assert_same(spec, rows, Provenance("a/README_2022-11-15.md", LANDED, INGESTED), 2)
    mixed = [rec(1, column_1="BF.7", France=9.4, Germany=3), rec(2, column_1="BQ.1", France=1.0, Germany=2)]
    assert_same(spec, mixed, PROV, 10)  # float and int wide columns: the per-record path, same output
    assert_same(variant(spec.id, unpivot={"columns": "^zz", "name": "country", "value": "share"}), rows, PROV, 10)


def test_multi_column_location_and_points() -> None:
    spec = SPECS["jhu_csse_time_series_global"]
    base = {"Province/State": "", "Country/Region": "France", "Lat": "46.2", "Long": "2.2", "1/22/20": "1"}
    rows = [
        rec(1, **base),
        rec(2, **{**base, "Province/State": "Reunion", "Lat": "-21.1", "Long": "55.5"}),
        rec(3, **{**base, "Province/State": " ", "Country/Region": " ", "Lat": "x"}),
        rec(4, **{**base, "Country/Region": "Narnia", "Lat": "91", "Long": "0"}),
        rec(5, **{**base, "Lat": "", "Long": "nan", "1/22/20": "-3"}),
    ]
    assert_same(spec, rows, PROV, 2)


def test_prefixes_and_aliases() -> None:
    spec = SPECS["opencovid19fr_chiffres_cles_csv"]
    metrics = {m: "1" for m in spec["metrics"]}
    codes = ["DEP-75", "REG-11", "COM-974", "FRA", "WORLD", "DEP-00", "XYZ", "", "dep-75", "DEP- 75"]
    rows = [rec(i, date="2020-10-01", maille_code=c, source_type="s", **metrics) for i, c in enumerate(codes, 1)]
    assert_same(spec, rows, PROV, 4)


def test_hooks_take_the_per_record_path(tmp_path: Path) -> None:
    spec = variant("spf_vacsi", hook="covidflow.sources.hooks.drop_blank_rows")
    rows = [rec(1, dep="01", jour="2021-01-06", n_dose1="1", n_cum_dose1="1"),
            rec(2, dep="", jour="", n_dose1="", n_cum_dose1="")]  # fmt: skip
    assert_same(spec, rows, PROV, 10)


def test_raw_rejects_and_record_lists() -> None:
    core = BatchNormaliser(SPECS["spf_vacsi"])
    bad = RawReject(3, "x.csv line 4: not valid utf-8", line=4, excerpt="\\xe9")
    result = core.normalise_reject(bad, PROV)
    assert [(r.row, r.line, r.field, r.reason, r.value) for r in result.rejects] == [
        (3, 4, "(record)", "unreadable record", "x.csv line 4: not valid utf-8")
    ]
    assert result.records.num_rows == 0 and result.skips.num_rows == 0
    assert core.normalise(bad, PROV).rejects == result.rejects
    listed = core.normalise([rec(1, dep="75", jour="2021-01-27", n_dose1="2486", n_cum_dose1="38731")], PROV)
    assert listed.records.schema == arrow_schema() and listed.records.column("value").to_pylist() == [2486.0, 38731.0]


def test_wide_batches_come_in_bounded_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    import covidflow.normalise.columnar as columnar_module

    monkeypatch.setattr(columnar_module, "LONG_ROWS", 500)
    spec = SPECS["jhu_csse_time_series_global"]
    items = read_all(spec, spec.sample_path)
    core = BatchNormaliser(spec)
    [batch] = list(chunk_records(iter(items)))
    prov = prov_for(spec, spec.sample_path.name)
    parts = list(core.iter_normalise(batch, prov))
    assert len(parts) == 19 and all(p.records.num_rows == 1143 for p in parts)  # one row (1,143 dates) per part
    assert_same_as_file(spec, spec.sample_path, prov, 65_536)


def test_number_grammar_agrees_with_python_float() -> None:
    """The values Arrow casts itself must be exactly what float() gives (the grammar's promise)."""
    import random
    import re

    import pyarrow.compute as pc

    from covidflow.normalise.columnar import NUMBER_GRAMMAR, NUMBER_MAX_BYTES

    rng = random.Random(12)
    texts = ["0", "-0", "+1", "1.", ".5", "00012", "1e5", "1E-05", "-.5e-3", "9" * 39, "0." + "1" * 37]
    for _ in range(20_000):
        k = rng.randrange(3)
        if k == 0:
            texts.append(str(rng.randrange(10 ** rng.randrange(1, 25))))
        elif k == 1:
            texts.append(repr(rng.random() * 10 ** rng.randrange(-30, 30)))
        else:
            texts.append(f"{rng.random() * 10 ** rng.randrange(0, 15):.{rng.randrange(0, 20)}f}")
    grammar = re.compile(NUMBER_GRAMMAR)
    kept = [t for t in texts if grammar.match(t) and len(t) <= NUMBER_MAX_BYTES]
    assert len(kept) > 19_000
    cast = pc.cast(pa.array(kept), pa.float64()).to_pylist()
    assert [repr(v) for v in cast] == [repr(float(t)) for t in kept]
    assert all(math.isfinite(v) for v in cast)


# -- preview on the columnar core: the same summary as the per-record loop it replaced ----------------------------


def per_record_preview(spec: SourceSpec, path: Path, prov: Provenance) -> tuple[list[dict], list[str]]:
    """The per-record preview loop as it was before the columnar core (the reference)."""
    from covidflow.normalise.preview import Summary
    from covidflow.read import ReaderError

    norm, summary, seen, records = Normaliser(spec), Summary(), set(), []
    try:
        for raw in open_records(path, spec["format"], spec.get("reader") or {}):
            summary.rows_read += 1
            result = norm.normalise(raw, prov)
            for reject in result.rejects:
                summary.add_reject(reject)
            for skip in result.skips:
                summary.skips[(skip.field, skip.reason)] += 1
            for record in result.records:
                if record["record_id"] in seen:
                    summary.duplicate_ids += 1
                else:
                    seen.add(record["record_id"])
                summary.records_out += 1
                records.append(record)
    except ReaderError as exc:
        summary.error = str(exc)
    return records, summary.lines()


def preview_cases(tmp_path: Path) -> list[tuple[SourceSpec, Path, Provenance]]:
    cases = [(s, s.sample_path, prov_for(s, s.sample_path.name)) for s in SPECS.values()]
    spf = SPECS["spf_donnees_hospitalieres"]
    for i, body in enumerate(BAD_SPF.values()):
        path = tmp_path / f"bad{i}.csv"
        path.write_bytes(body)
        cases.append((spf, path, prov_for(spf, "x.csv")))
    dupes = tmp_path / "dupes.csv"
    dupes.write_bytes(HEADER + GOOD * 3 + b'"75";1;"2020-04-01";1;1;1;1\r\n' + GOOD)
    gz = tmp_path / "x.csv.gz"
    import gzip

    gz.write_bytes(gzip.compress(spf.sample_path.read_bytes())[:20_000])  # truncated: a file error midway
    return [*cases, (spf, dupes, prov_for(spf, "x.csv")), (spf, gz, prov_for(spf, "x.csv.gz"))]


def test_preview_summary_is_what_the_per_record_loop_printed(tmp_path: Path) -> None:
    from covidflow.normalise.preview import run_file

    for spec, path, prov in preview_cases(tmp_path):
        want_records, want_lines = per_record_preview(spec, path, prov)
        stream, summary = run_file(spec, path, prov)
        got = list(stream)
        assert summary.lines() == want_lines, (spec.id, path.name)
        assert [canon(r) for r in got] == [canon(r) for r in want_records], (spec.id, path.name)
        drained, summary2 = run_file(spec, path, prov)
        first = list(itertools.islice(drained, 5))
        drained.drain()  # what the CLI does after printing --limit records: count the rest without dicts
        assert summary2.lines() == want_lines and [canon(r) for r in first] == [canon(r) for r in want_records[:5]]


@pytest.mark.parametrize("workers", ["1", "4"])
def test_preview_on_any_number_of_threads(workers: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks normalised on 1 or 4 threads: the same summary and records, in reading order, with a file error
    midway (the truncated gzip) counted after everything read before it."""
    from covidflow.normalise import preview

    monkeypatch.setattr(preview, "PREVIEW_BATCH_ROWS", 64)  # many chunks in flight
    monkeypatch.setenv(preview.PREVIEW_WORKERS_ENV, workers)
    for spec, path, prov in preview_cases(tmp_path)[-3:]:
        want_records, want_lines = per_record_preview(spec, path, prov)
        stream, summary = preview.run_file(spec, path, prov)
        assert [canon(r) for r in stream] == [canon(r) for r in want_records], path.name
        assert summary.lines() == want_lines, path.name


@pytest.mark.parametrize("value", ["0", "-1", "two", " 2"])
def test_preview_workers_must_be_a_whole_number(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from covidflow.normalise import preview

    monkeypatch.setenv(preview.PREVIEW_WORKERS_ENV, value)
    with pytest.raises(ValueError, match="COVIDFLOW_PREVIEW_WORKERS must be a whole number of threads"):
        preview.preview_workers()


def test_duplicate_ids_beyond_the_check_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Same count and truncation flag as the per-record set, around the limit and for small and large batches."""
    import numpy as np

    from covidflow.normalise import preview

    rng = np.random.default_rng(3)
    ids = rng.integers(0, 3000, size=20_000).astype(np.uint64)  # fingerprints, in reading order
    for limit in (10, 1500, 2999, 5000):
        seen, dupes, truncated = set(), 0, False
        for i in ids.tolist():
            if i in seen:
                dupes += 1
            elif len(seen) < limit:
                seen.add(i)
            else:
                truncated = True
        for sizes in ([20_000], [5000, 1, 7000, 7999], [3] * 6666 + [2]):
            summary = preview.Summary()
            checker = preview._DuplicateIds(summary, limit)
            start = 0
            for size in sizes:
                checker.add(ids[start : start + size])
                start += size
            assert (summary.duplicate_ids, summary.duplicate_check_truncated) == (dupes, truncated), (limit, sizes)


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_nested_bulletins_of_the_docs(fmt: str, tmp_path: Path) -> None:
    """The nested-document spec of docs/adding-a-source.md over the bundled bulletins (lists become skips)."""
    import re

    from covidflow.catalog.specs import load_spec
    from covidflow.normalise.preview import run_file

    doc = (PROJECT_ROOT / "docs" / "adding-a-source.md").read_text(encoding="utf-8")
    text = re.findall(r"```yaml\n(.*?)```", doc, flags=re.S)[1]
    text = text.replace("format: yaml", f"format: {fmt}").replace('"*.yaml"', f'"*.{fmt}"')
    path = tmp_path / "opencovid19fr_bulletins.yaml"
    path.write_text(text, encoding="utf-8")
    spec = load_spec(path)
    samples = sorted((PROJECT_ROOT / "include" / "samples" / "opencovid19fr_bulletins").glob(f"*.{fmt}"))
    assert len(samples) == 2
    for sample in samples:
        items = read_all(spec, sample)
        for batch_rows in (65_536, 3):
            assert_same(spec, items, prov_for(spec, sample.name), batch_rows)
        prov = prov_for(spec, sample.name)
        previewed, summary = run_file(spec, sample, prov)
        want_records, want_lines = per_record_preview(spec, sample, prov)
        assert [canon(r) for r in previewed] == [canon(r) for r in want_records]
        assert summary.lines() == want_lines
        # every record with dropped lists: the @ignored columns are in the batches themselves
        lists = {"@ignored.a.victimes": "cases (3 items)", "@ignored.b": None}
        marked = [RawRecord(r.index, {**r.fields, **lists}, r.line) for r in items if isinstance(r, RawRecord)]
        kinds = assert_same(spec, marked, prov, 4)
        assert "RecordBatch" in kinds


def sample_files() -> list[tuple[str, Path]]:
    """Every bundled data file with each spec whose landing patterns take its name (not only ``sample:``)."""
    import fnmatch

    out = []
    for path in sorted((PROJECT_ROOT / "include" / "samples").glob("*/*")):
        if path.name == "SOURCE.md":
            continue
        for spec in SPECS.values():
            if any(fnmatch.fnmatch(path.name, p) for p in spec["landing"]["patterns"]):
                out.append((spec.id, path))
    return out


@pytest.mark.parametrize(("source_id", "path"), sample_files(), ids=lambda v: getattr(v, "name", v))
def test_every_sample_file_a_spec_takes(source_id: str, path: Path) -> None:
    spec = SPECS[source_id]
    assert_same_as_file(spec, path, prov_for(spec, path.name), 65_536)


def test_every_sample_file_is_covered() -> None:
    """A data file no spec takes would escape the differential test: only the docs' bulletins (tested above)."""
    taken = {path for _, path in sample_files()}
    data = {p for p in (PROJECT_ROOT / "include" / "samples").glob("*/*") if p.name != "SOURCE.md"}
    assert {p.parent.name for p in data - taken} == {"opencovid19fr_bulletins"}
    assert any("deaths" in p.name for p in taken)  # the JHU family's second file


def test_repeated_columns_are_exact_and_their_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """One cached array per value, sliced per part: the right length and value every time (-0.0 is not 0.0, a
    longer part rebuilds), and the cache never holds more than its byte budget (long-running executors)."""
    import math

    from covidflow.normalise import columnar

    monkeypatch.setattr(columnar, "_REPEATED", {})
    monkeypatch.setattr(columnar, "_REPEATED_BYTES", 1 << 20)
    for m in (5, 3, 9):
        assert columnar._repeat(pa.scalar("FR-D75"), m).to_pylist() == ["FR-D75"] * m
    assert [math.copysign(1, v) for v in columnar._repeat(pa.scalar(-0.0), 2).to_pylist()] == [-1, -1]
    assert [math.copysign(1, v) for v in columnar._repeat(pa.scalar(0.0), 2).to_pylist()] == [1, 1]
    assert columnar._repeat(pa.scalar(None, pa.string()), 4).null_count == 4
    for i in range(200):  # a new object key per object: 200 x ~0.3 MB would be 60 MB without the bound
        key = f"landing/spf/donnees-hospitalieres-{i:04d}.csv"
        assert columnar._repeat(pa.scalar(key), 8_000).to_pylist()[-1] == key
        assert sum(a.nbytes for a in columnar._REPEATED.values()) <= 1 << 20


def test_tiled_columns_are_exact_for_any_length_and_type(monkeypatch: pytest.MonkeyPatch) -> None:
    """A tiled metric column is the pattern end to end, cut at any length (a longer part rebuilds, a shorter one
    slices the cached array): strings from buffers (multi-byte text included), other types and nulls by a take."""
    from covidflow.normalise import columnar

    monkeypatch.setattr(columnar, "_REPEATED", {})
    pattern = pa.array(["hosp", "réa", "", "dc"])
    for m in (8, 3, 13, 4, 1):
        tiled = columnar._tile(pattern, m)
        tiled.validate(full=True)
        assert tiled.to_pylist() == (pattern.to_pylist() * 4)[:m]
    assert columnar._tile(pa.array(["a", None]), 3).to_pylist() == ["a", None, "a"]
    assert columnar._tile(pa.array([1.5, -0.0]), 3).to_pylist() == [1.5, -0.0, 1.5]
    assert columnar._tile(pa.array(["x", "y"]), 2).to_pylist() == ["x", "y"]  # a pattern of its own, not "hosp"...
