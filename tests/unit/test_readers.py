"""Reader API, csv, json/jsonl and compression: exact records, rejects and errors on small inline inputs."""

from __future__ import annotations

import gzip
import io
import random
import zipfile
from pathlib import Path

import pytest

from covidflow.read import FORMATS, READER_OPTIONS, RawRecord, RawReject, ReaderError, open_records, read_records

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "readers"


def read(data: bytes, fmt: str = "csv", name: str = "in/test.csv", **options: object) -> list[RawRecord | RawReject]:
    return list(read_records(io.BytesIO(data), fmt, options, name=name))


def read_until_error(data: bytes, fmt: str = "csv", **options: object) -> tuple[list, ReaderError]:
    out: list[RawRecord | RawReject] = []
    with pytest.raises(ReaderError) as caught:
        for item in read_records(io.BytesIO(data), fmt, options, name="in/test"):
            out.append(item)
    return out, caught.value


def fields(items: list[RawRecord | RawReject]) -> list[dict]:
    return [r.fields for r in items if isinstance(r, RawRecord)]


# --- API ---------------------------------------------------------------------------------------------


def test_formats_and_options_cover_each_other() -> None:
    assert {"csv", "json", "jsonl", "xlsx", "parquet", "xml", "yaml", "html", "markdown"} == FORMATS
    assert set(READER_OPTIONS) == FORMATS
    for fmt, options in READER_OPTIONS.items():
        assert {"compression", "zip_member", "max_decompressed_bytes", "max_compression_ratio"} <= set(options), fmt
        assert all(isinstance(v, str) and v and "\n" not in v for v in options.values()), fmt
    assert {"delimiter", "quotechar", "encoding", "encoding_errors", "header_row", "skip_rows", "comment"} <= set(
        READER_OPTIONS["csv"]
    )
    assert "records_path" in READER_OPTIONS["json"]


def test_unknown_format_and_option_are_named() -> None:
    with pytest.raises(ReaderError, match=r"^s3://b/k\.csv: unknown format 'tsv'"):
        read(b"a\n1\n", "tsv", name="s3://b/k.csv")
    with pytest.raises(ReaderError, match=r"unknown option\(s\) \['delimeter'\] for format csv"):
        read(b"a\n1\n", delimeter=";")


def test_open_records_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    with pytest.raises(ReaderError, match=rf"^{missing}: file not found$"):
        open_records(missing, "csv", {})


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_empty_file_every_format(tmp_path: Path, fmt: str) -> None:
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    options = {"record_tag": "r"} if fmt == "xml" else {}
    with pytest.raises(ReaderError, match="empty file") as caught:
        list(open_records(empty, fmt, options))
    assert str(caught.value).startswith(str(empty))


# --- csv ---------------------------------------------------------------------------------------------


def test_spf_semicolon_quoted_crlf() -> None:
    records = list(open_records(FIXTURES / "spf_hosp_head.csv", "csv", {"delimiter": ";"}))
    assert len(records) == 6
    assert records[0] == RawRecord(
        1, {"dep": "01", "sexe": "0", "jour": "2020-04-01", "hosp": "92", "rea": "28", "rad": "43", "dc": "12"}, line=2
    )
    assert [r.line for r in records] == [2, 3, 4, 5, 6, 7]
    assert all("\r" not in v for r in records for v in r.fields.values())


def test_who_replacement_char_and_quoted_comma() -> None:
    records = list(open_records(FIXTURES / "who_head.csv", "csv", {}))
    assert [r.fields["Country"] for r in records] == [
        "C\ufffdte d'Ivoire",
        "C\ufffdte d'Ivoire",
        "Bonaire, Saint Eustatius and Saba",
    ]
    assert records[2].fields["New_deaths"] == ""


def test_last_line_without_newline_is_kept_unless_required() -> None:
    path = FIXTURES / "opencovid_tail.csv"
    records = list(open_records(path, "csv", {}))
    assert [r.fields["maille_nom"] for r in records] == ["Provence-Alpes-Côte d'Azur", "Corse"]
    strict = list(open_records(path, "csv", {"require_final_newline": True}))
    assert isinstance(strict[0], RawRecord)
    assert strict[1] == RawReject(
        2, f"{path} line 3: last line has no newline (truncated file?)", line=3, excerpt=strict[1].excerpt
    )
    assert strict[1].excerpt.startswith("2020-10-24,region,REG-94,Corse")


def test_bom_header_row_skip_rows_comments_blank_lines() -> None:
    data = b"\xef\xbb\xbfexported 2020-04-01\r\n\r\nid|name\r\nunits|text\r\n1|a\r\n# note\r\n\r\n2|'b|c'\r\n"
    records = read(data, delimiter="|", quotechar="'", header_row=3, skip_rows=1, comment="#")
    assert records == [RawRecord(1, {"id": "1", "name": "a"}, line=5), RawRecord(2, {"id": "2", "name": "b|c"}, line=8)]


def test_bom_is_stripped_from_first_header() -> None:
    assert fields(read(b"\xef\xbb\xbfa,b\n1,2\n")) == [{"a": "1", "b": "2"}]


def test_tab_delimiter_and_no_header() -> None:
    assert fields(read(b"1\t2\n3\t4\n", delimiter="\\t", header_row=0)) == [
        {"column_1": "1", "column_2": "2"},
        {"column_1": "3", "column_2": "4"},
    ]
    assert fields(read(b"1,2\n", header_row=0, columns=["x", "y"])) == [{"x": "1", "y": "2"}]


def test_quoted_newline_keeps_record_start_line() -> None:
    assert read(b'a,b\n1,"two\nlines"\n3,4\n') == [
        RawRecord(1, {"a": "1", "b": "two\nlines"}, line=2),
        RawRecord(2, {"a": "3", "b": "4"}, line=4),
    ]


def test_too_many_and_too_few_fields() -> None:
    assert read(b"a,b,c\n1,2\n1,2,3,4\n5,6,7\n") == [
        RawReject(1, "in/test.csv line 2: expected 3 fields, got 2", line=2, excerpt="1,2"),
        RawReject(2, "in/test.csv line 3: expected 3 fields, got 4", line=3, excerpt="1,2,3,4"),
        RawRecord(3, {"a": "5", "b": "6", "c": "7"}, line=4),
    ]


def test_unterminated_quote_at_end_is_a_reject() -> None:
    assert read(b'a,b\n1,2\n3,"unfinished\n') == [
        RawRecord(1, {"a": "1", "b": "2"}, line=2),
        RawReject(
            2,
            "in/test.csv line 3: malformed CSV row: unterminated quoted field at end of file (truncated?)",
            line=3,
            excerpt='3,"unfinished\n',
        ),
    ]


def test_stray_quote_is_a_reject_and_reading_goes_on() -> None:
    records = read(b'a,b\n"x"y,1\n2,3\n')
    assert isinstance(records[0], RawReject)
    assert records[0].reason.startswith("in/test.csv line 2: malformed CSV row: ")
    assert records[1] == RawRecord(2, {"a": "2", "b": "3"}, line=3)


def test_latin1_declared_utf8_strict_rejects_the_row() -> None:
    data = "dep,nom\n01,Ain\n02,Aisne\n03,Allier é\n".encode("latin-1") + b"04,Alpes\n"
    records = read(data)
    assert fields(records) == [
        {"dep": "01", "nom": "Ain"},
        {"dep": "02", "nom": "Aisne"},
        {"dep": "04", "nom": "Alpes"},
    ]
    reject = records[2]
    assert reject == RawReject(
        3,
        "in/test.csv line 4: bytes not valid utf-8 at byte offset 34 (column 11 of line 4): b'\\xe9\\n'",
        line=4,
        excerpt="03,Allier \ufffd\n",
    )
    assert data[34:35] == b"\xe9"
    assert [r.index for r in records] == [1, 2, 3, 4]


def test_latin1_replace_and_declared_latin1() -> None:
    data = "dep,nom\n03,Allier é\n".encode("latin-1")
    assert fields(read(data, encoding_errors="replace")) == [{"dep": "03", "nom": "Allier \ufffd"}]
    assert fields(read(data, encoding="latin-1")) == [{"dep": "03", "nom": "Allier é"}]


def test_utf16_is_refused_clearly() -> None:
    with pytest.raises(ReaderError, match="encoding 'utf-16' is not supported"):
        read("a\n1\n".encode("utf-16"), encoding="utf-16")


def test_duplicate_header_names_are_an_error() -> None:
    with pytest.raises(ReaderError, match=r"^in/test.csv line 1: duplicate column names in header: \['a'\]"):
        read(b"a,b,a\n1,2,3\n")


def test_long_line_is_rejected_and_reading_resumes() -> None:
    data = b"a,b\n1,2\n" + b"x" * 5000 + b",y\n3,4\n"
    assert read(data, max_record_bytes=100) == [
        RawRecord(1, {"a": "1", "b": "2"}, line=2),
        RawReject(
            2,
            "in/test.csv line 3: line longer than max_record_bytes=100 (5003 bytes), skipped",
            line=3,
            excerpt="x" * 102,
        ),
        RawRecord(3, {"a": "3", "b": "4"}, line=4),
    ]


def test_unterminated_quote_mid_file_is_bounded_by_max_record_bytes() -> None:
    data = b'a,b\n1,"open\n' + b"2,3\n" * 100 + b"4,5\n"
    records = read(data, max_record_bytes=64)
    assert isinstance(records[0], RawReject)
    assert "record longer than max_record_bytes=64 (unterminated quote?)" in records[0].reason
    assert records[0].line == 2
    assert fields(records)[-1] == {"a": "4", "b": "5"}


# --- json / jsonl ------------------------------------------------------------------------------------


def test_opencovid_json_nested_flattened() -> None:
    records = list(open_records(FIXTURES / "opencovid_head.json", "json", {}))
    assert [r.index for r in records] == [1, 2, 3]
    first = records[0].fields
    assert first["source.nom"] == "ARS La Réunion"
    assert first["casConfirmes"] == 45 and "source" not in first
    assert records[2].fields["victimes"] == [{"date": "2020-03-20", "sexe": "homme"}]
    assert records[2].fields["code"] == "DEP-14"


def test_json_records_path_and_numbers() -> None:
    data = b'{"meta": {"n": 2}, "data": {"items": [{"a": 1, "b": 2.5, "c": null, "d": {}}, {"a": "x"}]}}'
    assert fields(read(data, "json", records_path="data.items")) == [{"a": 1, "b": 2.5, "c": None, "d": {}}, {"a": "x"}]


def test_json_errors() -> None:
    with pytest.raises(ReaderError, match="top-level JSON value is not an array; set records_path"):
        read(b'{"a": 1}', "json")
    with pytest.raises(ReaderError, match=r"no records at records_path 'data.x'"):
        read(b'{"data": {"items": []}}', "json", records_path="data.x")
    assert read(b"[]", "json") == []
    records, error = read_until_error(b'[{"a": 1}, 7, {"a": 2}, {"a": ', "json")
    assert fields(records) == [{"a": 1}, {"a": 2}]
    assert records[1] == RawReject(2, "in/test record 2: record is a JSON int, not an object", excerpt="7")
    assert str(error).startswith("in/test record 4: invalid or truncated JSON after 3 records")


def test_jsonl_rejects_bad_lines_and_goes_on() -> None:
    data = b'{"a": 1}\n\n{bad\n[1]\n{"b": {"c": 2}}'
    records = read(data, "jsonl")
    assert records[0] == RawRecord(1, {"a": 1}, line=1)
    assert records[1].reason.startswith("in/test.csv line 3: invalid JSON: ")
    assert records[2] == RawReject(
        3, "in/test.csv line 4: record is a JSON array, not an object", line=4, excerpt="[1]"
    )
    assert records[3] == RawRecord(4, {"b.c": 2}, line=5)


# --- compression -------------------------------------------------------------------------------------


def _numbers_csv(rows: int) -> bytes:
    rng = random.Random(7)
    return b"a,b\n" + b"".join(b"%d,%d\n" % (i, rng.randrange(10**9)) for i in range(rows))


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for member, data in members.items():
            archive.writestr(member, data)
    return buf.getvalue()


def test_gzip_auto_and_explicit() -> None:
    data = gzip.compress(b"a;b\n1;2\n")
    assert fields(read(data, delimiter=";")) == [{"a": "1", "b": "2"}]
    assert fields(read(data, delimiter=";", compression="gzip")) == [{"a": "1", "b": "2"}]
    with pytest.raises(ReaderError, match=r"^in/test.csv line 1: unreadable header: bytes not valid utf-8 at byte "):
        read(data, delimiter=";", compression="none")


def test_truncated_gzip_yields_rows_before_the_cut_then_errors() -> None:
    data = gzip.compress(_numbers_csv(100_000))
    records, error = read_until_error(data[: len(data) // 2])
    assert 40_000 < len(records) < 60_000
    assert all(isinstance(r, RawRecord) for r in records)
    assert [r.fields["a"] for r in records] == [str(i) for i in range(len(records))]
    assert str(error) == (
        f"in/test line {len(records) + 2}: truncated or corrupt gzip data: "
        "Compressed file ended before the end-of-stream marker was reached"
    )


def test_zip_member_selection() -> None:
    data = _zip({"readme.txt": b"hello", "data/cases.csv": b"a\n1\n"})
    with pytest.raises(ReaderError, match=r"zip holds 2 matching members; set zip_member"):
        read(data)
    assert fields(read(data, zip_member="*.csv")) == [{"a": "1"}]
    assert fields(read(data, zip_member="data/cases.csv")) == [{"a": "1"}]
    with pytest.raises(ReaderError, match=r"no zip member matches '\*.json'"):
        read(data, zip_member="*.json")


def test_zip_from_a_non_seekable_stream_is_spooled() -> None:
    class Pipe(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self._inner = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, buf) -> int:  # type: ignore[no-untyped-def]
            chunk = self._inner.read(len(buf))
            buf[: len(chunk)] = chunk
            return len(chunk)

    stream = Pipe(_zip({"x.csv": b"a\n1\n2\n"}))
    assert not stream.seekable()
    assert fields(list(read_records(stream, "csv", {}, name="pipe"))) == [{"a": "1"}, {"a": "2"}]


def test_truncated_zip_yields_rows_before_the_cut_then_errors() -> None:
    data = _zip({"x.csv": _numbers_csv(100_000), "y.txt": b"other"})
    records, error = read_until_error(data[: len(data) // 2], zip_member="x.csv")
    assert 40_000 < len(records) < 60_000
    assert [r.fields["a"] for r in records] == [str(i) for i in range(len(records))]
    assert str(error) == f"in/test line {len(records) + 2}: truncated zip: member ends before its end-of-data marker"


def test_gzip_bomb_is_stopped_by_ratio_then_by_size() -> None:
    bomb = gzip.compress(b"a,b\n" + b"0" * (64 * 1024**2), compresslevel=9)
    assert len(bomb) < 100_000
    _, error = read_until_error(bomb)
    assert "gzip compression ratio above max_compression_ratio=100 (zip bomb?)" in str(error)
    _, error = read_until_error(bomb, max_compression_ratio=10**6, max_decompressed_bytes=16 * 1024**2)
    assert "gzip decompresses to more than max_decompressed_bytes=16777216" in str(error)


def test_zip_bomb_is_refused_before_reading() -> None:
    bomb = _zip({"bomb.csv": b"a\n" + b"0" * (32 * 1024**2)})
    with pytest.raises(ReaderError, match=r"in/test: zip member bomb.csv ratio above max_compression_ratio=100"):
        read(bomb, name="in/test")
    with pytest.raises(ReaderError, match=r"zip member bomb.csv states 33554434 bytes > 1000"):
        read(bomb, max_decompressed_bytes=1000)


def test_gzip_of_empty_content_is_an_empty_file() -> None:
    with pytest.raises(ReaderError, match=r"^in/test.csv: empty file \(nothing after decompression\)$"):
        read(gzip.compress(b""))
