"""xlsx, parquet, xml, yaml, html and markdown readers: exact records and clear errors, on small inline inputs."""

from __future__ import annotations

import datetime as dt
import gzip
import io
from pathlib import Path

import openpyxl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from covidflow.read import RawRecord, RawReject, ReaderError, open_records, read_records

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "readers"


def read(data: bytes, fmt: str, **options: object) -> list[RawRecord | RawReject]:
    return list(read_records(io.BytesIO(data), fmt, options, name="in/f"))


# --- xlsx --------------------------------------------------------------------------------------------


def _workbook() -> bytes:
    book = openpyxl.Workbook()
    first = book.active
    first.title = "Notes"
    first.append(["nothing here"])
    sheet = book.create_sheet("Data")
    sheet.append(["Exported by SPF"])
    sheet.append(["dep", "jour", "hosp"])
    sheet.append(["01", dt.datetime(2020, 4, 1), 92])
    sheet.append([])
    sheet.append(["02", dt.datetime(2020, 4, 1), None])
    sheet.append(["03", dt.datetime(2020, 4, 1), 5, "extra"])
    buf = io.BytesIO()
    book.save(buf)
    return buf.getvalue()


def test_xlsx_sheet_by_name_and_number_with_header_row() -> None:
    expected = [
        RawRecord(1, {"dep": "01", "jour": dt.datetime(2020, 4, 1), "hosp": 92}, line=3),
        RawRecord(2, {"dep": "02", "jour": dt.datetime(2020, 4, 1), "hosp": None}, line=5),
        RawReject(3, "in/f line 6: expected 3 fields, got 4", line=6),
    ]
    assert read(_workbook(), "xlsx", sheet="Data", header_row=2) == expected
    assert read(_workbook(), "xlsx", sheet=2, header_row=2) == expected
    assert read(_workbook(), "xlsx") == []


def test_xlsx_errors() -> None:
    with pytest.raises(ReaderError, match=r"in/f: no sheet 'Cases' \(sheets: \['Notes', 'Data'\]\)"):
        read(_workbook(), "xlsx", sheet="Cases")
    with pytest.raises(ReaderError, match="in/f: not a readable xlsx workbook"):
        read(_workbook()[:400], "xlsx")
    assert read(gzip.compress(_workbook()), "xlsx", compression="gzip", sheet="Data", header_row=2)[0].index == 1


# --- parquet -----------------------------------------------------------------------------------------


def _parquet(rows: int) -> bytes:
    table = pa.table({"dep": [f"{i:02d}" for i in range(rows)], "src": [{"nom": "SPF", "n": i} for i in range(rows)]})
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=1000)
    return buf.getvalue()


def test_parquet_batches_and_struct_flattening() -> None:
    records = read(_parquet(2500), "parquet", batch_size=700)
    assert len(records) == 2500
    assert records[0] == RawRecord(1, {"dep": "00", "src.nom": "SPF", "src.n": 0})
    assert records[-1] == RawRecord(2500, {"dep": "2499", "src.nom": "SPF", "src.n": 2499})


def test_parquet_truncated_is_an_error() -> None:
    with pytest.raises(ReaderError, match=r"^in/f record 1: unreadable parquet after 0 records: "):
        read(_parquet(10)[:-20], "parquet")


# --- xml ---------------------------------------------------------------------------------------------

XML = b"""<?xml version="1.0" encoding="UTF-8"?>
<export xmlns="urn:spf">
  <row dep="01"><jour>2020-04-01</jour><hosp>92</hosp><source><nom>SPF</nom></source></row>
  <row dep="02"><jour>2020-04-01</jour><tag>a</tag><tag>b</tag></row>
</export>
"""


def test_xml_records_attributes_children_namespaces() -> None:
    assert read(XML, "xml", record_tag="row") == [
        RawRecord(1, {"dep": "01", "jour": "2020-04-01", "hosp": "92", "source.nom": "SPF"}, line=3),
        RawRecord(2, {"dep": "02", "jour": "2020-04-01", "tag": ["a", "b"]}, line=4),
    ]


def test_xml_truncated_yields_then_errors() -> None:
    out = []
    with pytest.raises(ReaderError, match=r"^in/f line 4: invalid or truncated XML after 1 records"):
        for item in read_records(io.BytesIO(XML[:-60]), "xml", {"record_tag": "row"}, name="in/f"):
            out.append(item)
    assert [r.fields["dep"] for r in out] == ["01"]


def test_xml_needs_record_tag_and_ignores_external_entities(tmp_path: Path) -> None:
    with pytest.raises(ReaderError, match="option record_tag is required"):
        read(XML, "xml")
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP SECRET")
    xxe = f'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file://{secret}">]><r><row><v>&x;</v></row></r>'
    records = read(xxe.encode(), "xml", record_tag="row")
    assert "TOP SECRET" not in repr(records)


# --- yaml --------------------------------------------------------------------------------------------


def test_yaml_documents_and_lists() -> None:
    data = b"---\ndep: '01'\nsource: {nom: SPF}\n---\n- {dep: '02'}\n- 3\n---\n"
    assert read(data, "yaml") == [
        RawRecord(1, {"dep": "01", "source.nom": "SPF"}),
        RawRecord(2, {"dep": "02"}),
        RawReject(3, "in/f record 3: record is a JSON int, not an object", excerpt="3"),
    ]


def test_yaml_refuses_object_tags() -> None:
    with pytest.raises(ReaderError, match=r"^in/f line 1: invalid YAML after 0 records: could not determine a const"):
        read(b"a: !!python/object/apply:os.system ['echo hi']\n", "yaml")


# --- html / markdown ---------------------------------------------------------------------------------


def test_html_nth_table_with_th_td_and_colspan() -> None:
    page = b"""<html><body><table><tr><td>menu</td></tr></table>
<table>
 <thead><tr><th>dep</th><th colspan="2">hosp</th></tr></thead>
 <tbody><tr><th>01</th><td> 9&nbsp;2 </td><td>x</td></tr>
 <tr><td>02</td><td>5</td></tr></tbody>
</table></body></html>"""
    with pytest.raises(ReaderError, match=r"duplicate column names in header: \['hosp'\]"):
        read(page, "html", table_index=1)
    page = page.replace(b'<th colspan="2">hosp</th>', b"<th>hosp</th><th>rea</th>")
    assert read(page, "html", table_index=1) == [
        RawRecord(1, {"dep": "01", "hosp": "9 2", "rea": "x"}, line=4),
        RawReject(2, "in/f line 5: expected 3 fields, got 2", line=5, excerpt="02 | 5"),
    ]
    with pytest.raises(ReaderError, match=r"^in/f: no table 5: the document has 2 table\(s\)$"):
        read(page, "html", table_index=5)


def test_markdown_pipe_table() -> None:
    doc = (
        b"# Title\n\n```\n| not | a |\n|---|---|\n```\n\n"
        b"| dep | nom |\n|:---|---:|\n| 01 | Ain |\n| 02 |\n| 03 | a \\| b |\n\nafter\n"
    )
    assert read(doc, "markdown") == [
        RawRecord(1, {"dep": "01", "nom": "Ain"}, line=10),
        RawReject(2, "in/f line 11: expected 2 fields, got 1", line=11, excerpt="| 02 |\n"),
        RawRecord(3, {"dep": "03", "nom": "a | b"}, line=12),
    ]


def test_markdown_gerstung_embedded_html_tables() -> None:
    path = FIXTURES / "gerstung_readme_excerpt.md"
    growth = list(open_records(path, "markdown", {}))
    assert len(growth) == 2
    assert growth[0].line == 55
    assert list(growth[0].fields)[:3] == ["column_1", "Australia", "Austria"]
    assert growth[0].fields["column_1"] == "B.1.1.529"
    assert growth[0].fields["France"] == "-7±0"
    share = list(open_records(path, "markdown", {"after_heading": "Variant share"}))
    assert [r.fields["France"] for r in share] == ["0.0"]
    assert share == list(open_records(path, "markdown", {"table_index": 1}))
    with pytest.raises(ReaderError, match=r"no table 1 after a heading containing 'Variant share'"):
        list(open_records(path, "markdown", {"after_heading": "Variant share", "table_index": 1}))
