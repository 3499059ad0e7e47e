"""The columnar csv path gives exactly what the per-record reader gives, grouped by ``chunk_records``.

Every case is read twice: ``chunk_records(read_records(...))`` (the reference) and ``read_batches`` /
``rechunk(read_csv_blocks(..., block_bytes=N))``, with block sizes small enough that block boundaries fall on
every line (inside quoted newlines too) and batch sizes small enough that batches are cut everywhere. Batches,
rejects (reason, line, excerpt), record lists and the final error must be equal, in the same order.
"""

from __future__ import annotations

import codecs
import contextlib
import gzip
import io
import random
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from covidflow import PROJECT_ROOT
from covidflow.catalog.specs import load_all
from covidflow.read import RawRecord, ReaderError, read_records
from covidflow.read.batch import chunk_records, read_batches, rechunk
from covidflow.read.delimited import BLOCK_BYTES, read_csv_blocks

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "readers"
NAME = "in/test.csv"
SMALL_BLOCKS = (1, 2, 5, 16, 64, 300, BLOCK_BYTES)
BATCH_ROWS = (1, 3, 65_536)


def outcome(items: Callable[[], Iterator[Any]]) -> tuple[list[Any], str | None]:
    """Everything yielded, then the exception (type and message) that ended the iteration, if any."""
    out: list[Any] = []
    try:
        for item in items():
            out.append(item)
    except Exception as exc:  # a ReaderError, or any other exception: it must be the same one
        return out, f"{type(exc).__name__}: {exc}"
    return out, None


def reference(data: bytes, options: dict[str, Any], batch_rows: int) -> tuple[list[Any], str | None]:
    return outcome(lambda: chunk_records(read_records(io.BytesIO(data), "csv", options, name=NAME), batch_rows))


def assert_same(got: tuple[list[Any], str | None], want: tuple[list[Any], str | None], label: str) -> None:
    got_items, got_error = got
    want_items, want_error = want
    assert got_error == want_error, label
    assert len(got_items) == len(want_items), (label, [type(i).__name__ for i in got_items], want_items)
    for i, (a, b) in enumerate(zip(got_items, want_items, strict=True)):
        if isinstance(b, pa.RecordBatch):
            assert isinstance(a, pa.RecordBatch), (label, i, a)
            assert a.schema == b.schema, (label, i, a.schema, b.schema)
            assert a.equals(b), (label, i, a.to_pylist(), b.to_pylist())
        else:
            assert a == b, (label, i, a, b)


def check(data: bytes, options: dict[str, Any], blocks: tuple[int, ...] = SMALL_BLOCKS, batches=BATCH_ROWS) -> None:
    for batch_rows in batches:
        want = reference(data, options, batch_rows)
        got = outcome(lambda: read_batches(io.BytesIO(data), "csv", options, name=NAME, batch_rows=batch_rows))  # noqa: B023
        assert_same(got, want, f"read_batches batch_rows={batch_rows}")
        for block in blocks:
            got = outcome(
                lambda: rechunk(read_csv_blocks(io.BytesIO(data), options, NAME, block_bytes=block), batch_rows)  # noqa: B023
            )
            assert_same(got, want, f"block_bytes={block} batch_rows={batch_rows}")


def columnar_rows(data: bytes, options: dict[str, Any], block: int = BLOCK_BYTES) -> tuple[int, int]:
    """(rows that came out as columns, rows that came out as records) of the columnar reader."""
    columns = records = 0
    for item in read_csv_blocks(io.BytesIO(data), options, NAME, block_bytes=block):
        if isinstance(item, pa.RecordBatch):
            columns += item.num_rows
        elif isinstance(item, RawRecord):
            records += 1
    return columns, records


# --- the cases ---------------------------------------------------------------------------------------

SPF_HEADER = b'"dep";"sexe";"jour";"hosp";"rea";"rad";"dc"\r\n'
SPF_GOOD = b'"75";0;"2020-04-01";2633;720;863;404\r\n'
SPF = {"delimiter": ";"}

INLINE: dict[str, tuple[bytes, dict[str, Any]]] = {
    # test_readers.py
    "bom_header_skip_comment": (
        b"\xef\xbb\xbfexported 2020-04-01\r\n\r\nid|name\r\nunits|text\r\n1|a\r\n# note\r\n\r\n2|'b|c'\r\n",
        {"delimiter": "|", "quotechar": "'", "header_row": 3, "skip_rows": 1, "comment": "#"},
    ),
    "bom_first_header": (b"\xef\xbb\xbfa,b\n1,2\n", {}),
    "tab_no_header": (b"1\t2\n3\t4\n", {"delimiter": "\\t", "header_row": 0}),
    "columns_given": (b"1,2\n3,4\n", {"header_row": 0, "columns": ["x", "y"]}),
    "quoted_newline": (b'a,b\n1,"two\nlines"\n3,4\n', {}),
    "wrong_widths": (b"a,b,c\n1,2\n1,2,3,4\n5,6,7\n", {}),
    "unterminated_at_end": (b'a,b\n1,2\n3,"unfinished\n', {}),
    "stray_quote": (b'a,b\n"x"y,1\n2,3\n', {}),
    "latin1_as_utf8": ("dep,nom\n01,Ain\n02,Aisne\n03,Allier é\n".encode("latin-1") + b"04,Alpes\n", {}),
    "latin1_replace": ("dep,nom\n03,Allier é\n04,b\n".encode("latin-1"), {"encoding_errors": "replace"}),
    "latin1_declared": ('dep,nom\n03,Allier é\n04,"Hérault"\n'.encode("latin-1"), {"encoding": "latin-1"}),
    "duplicate_header": (b"a,b,a\n1,2,3\n", {}),
    "long_line": (b"a,b\n1,2\n" + b"x" * 5000 + b",y\n3,4\n", {"max_record_bytes": 100}),
    "unterminated_mid_file": (b'a,b\n1,"open\n' + b"2,3\n" * 100 + b"4,5\n", {"max_record_bytes": 64}),
    "gzip_semicolon": (gzip.compress(b"a;b\n1;2\n"), {"delimiter": ";"}),
    "gzip_as_none": (gzip.compress(b"a;b\n1;2\n"), {"delimiter": ";", "compression": "none"}),
    "gzip_empty": (gzip.compress(b""), {}),
    "empty": (b"", {}),
    # test_sources_bad_input.py (SPF shape)
    "spf_missing_column": (b'"dep";"sexe";"jour";"hosp";"rad";"dc"\r\n"75";0;"2020-04-01";2633;863;404\r\n', SPF),
    "spf_unknown_location": (SPF_HEADER + SPF_GOOD + b'"99";0;"2020-04-01";1;1;1;1\r\n', SPF),
    "spf_truncated_row": (SPF_HEADER + SPF_GOOD + b'"75";0;"2020-04-02";26', SPF),
    "spf_wrong_encoding": (SPF_HEADER + SPF_GOOD + '"é";0;"2020-04-02";1;1;1;1\r\n'.encode("latin-1"), SPF),
    "spf_good": (SPF_HEADER + SPF_GOOD * 50, SPF),
    # quoting
    "doubled_quote": (b'a,b\n1,"say ""hi"""\n2,3\n', {}),
    "quote_in_bare_cell": (b'a,b\n1,it"s\n2,3\n', {}),
    "lone_quote_cell": (b'a,b\n1,"\n2,3\n', {}),
    "space_after_close": (b'a,b\n1,"x" \n2,3\n', {}),
    "space_before_open": (b'a,b\n1, "x"\n2,3\n', {}),
    "quoted_delimiter": (b'a,b\n"1,5",2\n3,4\n', {}),
    "empty_quoted": (b'a,b\n"",2\n3,""\n', {}),
    "quoted_crlf_in_value": (b'a,b\r\n1,"x\r\ny"\r\n3,4\r\n', {}),
    "many_quoted_newlines": (b"a,b\n" + b'1,"p\nq\nr"\n2,3\n' * 20, {}),
    "custom_quote": (b"a;b\n'x;y';2\n'z';3\n", {"delimiter": ";", "quotechar": "'"}),
    # line ends, blanks, odd bytes
    "bare_cr_mid_line": (b"a,b\n1,x\ry\n2,3\n", {}),
    "cr_only_endings": (b"a,b\r1,2\r3,4\r", {}),
    "cr_before_crlf": (b"a,b\n1,2\r\r\n3,4\n", {}),
    "nul_byte": (b"a,b\n1,x\x00y\n2,3\n", {}),
    "blank_lines": (b"a,b\n\n1,2\n\r\n\n3,4\n\n", {}),
    "whitespace_line": (b"a,b\n \n1,2\n", {}),
    "one_column_blank_line": (b"a\n1\n\n2\n", {}),
    "trailing_delimiter": (b"a,b,c\n1,2,\n,,\n", {}),
    "no_final_newline": (b"a,b\n1,2\n3,4", {}),
    "no_final_newline_required": (b"a,b\n1,2\n3,4", {"require_final_newline": True}),
    "final_newline_required_ok": (b"a,b\n1,2\n3,4\n", {"require_final_newline": True}),
    "header_only": (b"a,b\n", {}),
    "header_only_no_newline": (b"a,b", {}),
    "blank_header": (b"\n\na,b\n", {}),
    "header_bad_bytes": (b"a,\xff\n1,2\n", {}),
    "header_row_0_first_row_bad": (b"1,\xff\n1,2\n3,4,5\n6,7\n", {"header_row": 0}),
    "header_row_past_end": (b"a,b\n", {"header_row": 5}),
    "skip_rows_past_end": (b"a,b\n1,2\n", {"skip_rows": 3}),
    "skip_rows_bad_line": (b"a,b\n\xff,1\n1,2\n", {"skip_rows": 1}),
    "skip_rows_long_line": (b"a,b\n" + b"y" * 300 + b"\n1,2\n", {"skip_rows": 1, "max_record_bytes": 100}),
    "comments_everywhere": (b"#c\na,b\n#x\n1,2\n#y,z\n3,4\n#", {"comment": "#"}),
    "comment_multichar": (b"a,b\n//1,2\n3,4\n/5,6\n", {"comment": "//"}),
    "comment_inside_quoted": (b'a,b\n1,"x\n#y"\n3,4\n', {"comment": "#"}),
    "bom_no_header": (b"\xef\xbb\xbf1,2\n3,4\n", {"header_row": 0}),
    "bom_mid_file": (b"a,b\n\xef\xbb\xbf1,2\n3,4\n", {}),
    "utf8_multibyte": ('a;b\nÎle-de-France;Côte d\'Azur\n"Ré";ü\n'.encode(), {"delimiter": ";"}),
    "utf8_surrogate": (b"a,b\n1,\xed\xa0\x80\n2,3\n", {}),
    "utf8_overlong": (b"a,b\n1,\xc0\xaf\n2,3\n", {}),
    "utf8_replace": (b"a,b\n1,\xff\xfe\n2,3\n", {"encoding_errors": "replace"}),
    "cp1252_undefined_strict": (b"a,b\n1,\x81\n2,\x80\n", {"encoding": "cp1252"}),
    "cp1252_undefined_replace": (b"a,b\n1,\x81\n2,\x80\n", {"encoding": "cp1252", "encoding_errors": "replace"}),
    "ascii_strict": (b"a,b\n1,\xe9\n2,3\n", {"encoding": "ascii"}),
    "utf8_sig_generic_path": (b"\xef\xbb\xbfa,b\n1,2\n\xef\xbb\xbf3,4\n", {"encoding": "utf-8-sig"}),
    "non_ascii_delimiter_generic_path": ("a§b\n1§2\n".encode(), {"delimiter": "§"}),
    "long_line_exact_limit": (b"a,b\n" + b"x" * 98 + b",\n" + b"x" * 99 + b",\n1,2\n", {"max_record_bytes": 100}),
    "long_line_exact_limit_crlf": (
        b"a,b\r\n" + b"x" * 98 + b",\r\n" + b"x" * 99 + b",\r\n1,2\r\n",
        {"max_record_bytes": 100},
    ),
    "bad_option": (b"a,b\n1,2\n", {"header_row": -1}),
    "bad_delimiter": (b"a,b\n1,2\n", {"delimiter": ";;"}),
}


@pytest.mark.parametrize("case", sorted(INLINE))
def test_inline_cases(case: str) -> None:
    data, options = INLINE[case]
    check(data, options)


def test_unknown_option_fails_at_the_call() -> None:
    with pytest.raises(ReaderError, match=r"unknown option\(s\) \['delimeter'\] for format csv"):
        read_batches(io.BytesIO(b"a\n1\n"), "csv", {"delimeter": ";"}, name=NAME)


@pytest.mark.parametrize("fixture", sorted(p.name for p in FIXTURES.glob("*.csv")))
def test_reader_fixtures(fixture: str) -> None:
    data = (FIXTURES / fixture).read_bytes()
    for options in ({}, {"delimiter": ";"}, {"require_final_newline": True}):
        check(data, options)


def _csv_samples() -> list[tuple[str, Path, dict[str, Any]]]:
    """Every csv file under include/samples/, with the reader options of the spec whose sample sits beside it."""
    options = {
        spec.sample_path.parent: (source_id, dict(spec.get("reader") or {}))
        for source_id, spec in load_all().items()
        if spec["format"] == "csv" and spec.sample_path is not None
    }
    found = []
    for path in sorted((PROJECT_ROOT / "include" / "samples").glob("*/*.csv*")):
        source_id, reader = options[path.parent]
        found.append((f"{source_id}/{path.name}", path, reader))
    return found


SAMPLES = _csv_samples()


def test_every_csv_spec_sample_is_covered() -> None:
    paths = {path for _, path, _ in SAMPLES}
    specs = [spec for spec in load_all().values() if spec["format"] == "csv"]
    assert len(specs) >= 6 and all(spec.sample_path in paths for spec in specs)


@pytest.mark.parametrize(("source_id", "path", "options"), SAMPLES, ids=[s[0] for s in SAMPLES])
def test_bundled_samples(source_id: str, path: Path, options: dict[str, Any]) -> None:
    data = path.read_bytes()
    check(data, options, blocks=(1000, 4096, BLOCK_BYTES), batches=(7, 65_536))
    # The samples are clean: the default block size must take every row columnar, else the fast path is dead;
    # a last line without a newline is read per record (see opencovid19fr).
    columns, records = columnar_rows(data, options)
    assert columns > 0 and records == (0 if data.endswith(b"\n") else 1), (source_id, columns, records)


def test_clean_rows_stay_columnar_next_to_a_bad_row() -> None:
    body = SPF_GOOD * 10_000
    data = SPF_HEADER + body[: len(body) // 2] + b'"75";0;"2020-04-01";1;2\r\n' + body[len(body) // 2 :]
    columns, records = columnar_rows(data, SPF, block=4096)
    assert records < 500 and columns + records == 10_000  # only the bad row's block is per-record
    check(data, SPF, blocks=(4096,), batches=(65_536, 999))


# --- compression, caps and truncation: the same rows before the error, the same line in it -----------------


def _numbers_csv(rows: int) -> bytes:
    rng = random.Random(7)
    return b"a,b\n" + b"".join(b"%d,%d\n" % (i, rng.randrange(10**9)) for i in range(rows))


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for member, data in members.items():
            archive.writestr(member, data)
    return buf.getvalue()


BIG_BLOCKS = (4096, 100_000, BLOCK_BYTES)


def test_truncated_gzip() -> None:
    data = gzip.compress(_numbers_csv(100_000))
    cut = data[: len(data) // 2]
    check(cut, {}, blocks=BIG_BLOCKS, batches=(65_536, 10_000))
    items, error = reference(cut, {}, 65_536)
    assert error is not None and "truncated or corrupt gzip data" in error
    assert sum(b.num_rows for b in items) > 40_000  # the rows before the cut are yielded before the error


def test_truncated_zip() -> None:
    data = _zip({"x.csv": _numbers_csv(100_000), "y.txt": b"other"})
    check(data[: len(data) // 2], {"zip_member": "x.csv"}, blocks=BIG_BLOCKS, batches=(65_536,))


def test_zip_and_gzip_whole() -> None:
    check(
        _zip({"readme.txt": b"hello", "data/cases.csv": _numbers_csv(3000)}), {"zip_member": "*.csv"}, blocks=BIG_BLOCKS
    )
    check(gzip.compress(SPF_HEADER + SPF_GOOD * 3000), SPF, blocks=(100, 4096, BLOCK_BYTES))


def test_decompressed_size_cap_strikes_on_the_same_line() -> None:
    data = gzip.compress(_numbers_csv(100_000))
    options = {"max_decompressed_bytes": 700_000}
    check(data, options, blocks=BIG_BLOCKS, batches=(65_536, 777))
    _, error = reference(data, options, 65_536)
    assert error is not None and "max_decompressed_bytes=700000" in error


def test_compression_ratio_cap_strikes_on_the_same_line() -> None:
    data = gzip.compress(b"a,b\n" + b"1234567890123456789012345678901234567890,abcdefghijklmnopqrstuvwxyz\n" * 150_000)
    check(data, {}, blocks=(BLOCK_BYTES, 100_000), batches=(65_536,))
    _, error = reference(data, {}, 65_536)
    assert error is not None and "compression ratio above" in error


def test_gzip_bomb_one_giant_line() -> None:
    bomb = gzip.compress(b"a,b\n" + b"0" * (64 * 1024**2), compresslevel=9)
    check(bomb, {}, blocks=(BLOCK_BYTES,), batches=(65_536,))
    check(
        bomb,
        {"max_compression_ratio": 10**6, "max_decompressed_bytes": 16 * 1024**2},
        blocks=(BLOCK_BYTES,),
        batches=(65_536,),
    )


def test_zip_bomb() -> None:
    bomb = _zip({"bomb.csv": b"a\n" + b"0" * (32 * 1024**2)})
    check(bomb, {}, blocks=(BLOCK_BYTES,), batches=(65_536,))


def test_giant_line_between_blocks() -> None:
    data = b"a,b\n" + b"1,2\n" * 5000 + b"x" * (3 * 1024**2) + b",y\n" + b"3,4\n" * 5000
    check(data, {}, blocks=(4096, BLOCK_BYTES), batches=(65_536, 3000))


# --- random byte soup: whatever the bytes, both paths agree --------------------------------------------

ALPHABET = [b"a", b"b", b"1", b",", b";", b'"', b"'", b"\n", b"\r\n", b"\r", b" ", b"#", b"\xe9", b"\xc3\xa9", b"\x00"]


def _soup(rng: random.Random) -> bytes:
    header = rng.choice([b"a,b,c\n", b"a;b;c\n", b'"a","b"\n', b"a\n"])
    lines = []
    for _ in range(rng.randrange(1, 40)):
        if rng.random() < 0.7:  # mostly plausible rows, so the columnar path is exercised
            cells = [
                rng.choice([b"1", b"xy", b'"q"', b'""', b"", b'"a,b"', b"'s'"]) for _ in range(rng.randrange(1, 4))
            ]
            lines.append(rng.choice([b",", b";"]).join(cells) + rng.choice([b"\n", b"\r\n"]))
        else:
            lines.append(b"".join(rng.choice(ALPHABET) for _ in range(rng.randrange(0, 12))))
    return header + b"".join(lines)


def test_random_inputs_agree() -> None:
    rng = random.Random(12)
    option_sets: list[dict[str, Any]] = [
        {},
        {"delimiter": ";"},
        {"quotechar": "'"},
        {"comment": "#"},
        {"encoding": "latin-1"},
        {"encoding": "cp1252", "encoding_errors": "replace"},
        {"encoding_errors": "replace"},
        {"header_row": 0},
        {"skip_rows": 1, "require_final_newline": True},
        {"max_record_bytes": 8},
    ]
    columnar = 0
    for _ in range(300):
        data = _soup(rng)
        options = rng.choice(option_sets)
        check(data, options, blocks=(1, 7, 33, BLOCK_BYTES), batches=(2, 65_536))
        with contextlib.suppress(Exception):  # errors are compared in check(); here only count columnar rows
            columnar += columnar_rows(data, options, block=7)[0]
    assert columnar > 300  # the soup takes the columnar path often, not only the per-record one


def test_fast_encodings_are_stateless_single_byte_or_utf8() -> None:
    from covidflow.read.delimited import _fast_encoding

    assert _fast_encoding("utf-8") == _fast_encoding("UTF8") == "utf-8"
    for name in ("latin-1", "cp1252", "iso8859-15", "ascii", "cp850"):
        assert _fast_encoding(name) == "single-byte", name
        assert len(bytes(range(256)).decode(name, "replace")) == 256  # one byte, one character: blocks decode as lines
    for name in ("utf-8-sig", "shift_jis", "utf-7", "gb18030"):
        assert _fast_encoding(name) is None, name
    assert codecs.lookup("latin-1").name == "iso8859-1"
