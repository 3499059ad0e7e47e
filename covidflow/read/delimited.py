"""The csv reader: any delimiter, quoting, header on any line, per-row rejects, bounded memory."""

from __future__ import annotations

import csv
from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO

from covidflow.read.base import RawRecord, RawReject, ReaderError, reject
from covidflow.read.compression import open_input
from covidflow.read.text import LineProblem, LineState, iter_lines, skip_raw_lines, text_options

CSV_OPTIONS = {
    "delimiter": "field separator, one character (default ',')",
    "quotechar": "quote character, one character (default '\"')",
    "header_row": "1-based line holding the column names (default 1); 0 = no header (see columns)",
    "columns": "column names to use when header_row is 0 (default column_1, column_2, ...)",
    "skip_rows": "number of rows after the header to skip, e.g. a units row (default 0)",
    "comment": "lines starting with this prefix are skipped (default none)",
    "require_final_newline": "reject the last row if the file does not end with a newline (default false)",
}

# Our own per-record cap is max_record_bytes; the csv module's field cap (128 KiB by default) must not bite first.
csv.field_size_limit(2**31 - 1)


def _char_option(options: Mapping[str, Any], key: str, default: str, name: str) -> str:
    value = options.get(key, default)
    if value == "\\t":
        value = "\t"
    if not isinstance(value, str) or len(value) != 1:
        raise ReaderError(name, f"option {key} must be one character, got {value!r}")
    return value


def column_names(raw: list[str], name: str) -> list[str]:
    """Header cells as field names: stripped, empty ones named column_N; duplicates are an error."""
    names = [cell.strip() or f"column_{i}" for i, cell in enumerate(raw, 1)]
    seen: set[str] = set()
    dupes = [n for n in names if n in seen or seen.add(n)]
    if dupes:
        raise ReaderError(name, f"duplicate column names in header: {sorted(set(dupes))}")
    return names


def read_csv(stream: BinaryIO, options: Mapping[str, Any], name: str) -> Iterator[RawRecord | RawReject]:
    """Yield one RawRecord per data row; malformed rows become RawRejects naming their line."""
    encoding, errors, max_bytes = text_options(options, name)
    delimiter = _char_option(options, "delimiter", ",", name)
    quotechar = _char_option(options, "quotechar", '"', name)
    header_row = options.get("header_row", 1)
    skip_rows = options.get("skip_rows", 0)
    comment = options.get("comment")
    require_newline = bool(options.get("require_final_newline", False))
    for key, value in (("header_row", header_row), ("skip_rows", skip_rows)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ReaderError(name, f"option {key} must be a non-negative integer, got {value!r}")
    if comment is not None and (not isinstance(comment, str) or not comment):
        raise ReaderError(name, f"option comment must be a non-empty string, got {comment!r}")
    dialect = {"delimiter": delimiter, "quotechar": quotechar, "strict": True, "skipinitialspace": False}

    with open_input(stream, options, name) as data:
        state = LineState()

        def new_rows() -> Any:
            lines = iter_lines(
                data, state, encoding=encoding, errors=errors, max_record_bytes=max_bytes, comment=comment
            )
            return csv.reader(lines, **dialect)

        rows = new_rows()
        try:
            if header_row:
                skip_raw_lines(data, state, header_row - 1)
                try:
                    header = next(rows, None)
                except (LineProblem, csv.Error) as exc:
                    raise ReaderError(name, f"unreadable header: {exc}", line=state.line_no) from None
                if not header:
                    raise ReaderError(name, "empty file (no header row)" if state.line_no <= 1 else "no header row")
                try:
                    header = column_names(header, name)
                except ReaderError as exc:
                    raise ReaderError(name, exc.reason, line=state.record_line) from None
            else:
                header = options.get("columns")
                if header is not None:
                    header = column_names(list(header), name)
            for _ in range(skip_rows):
                state.record_bytes = 0
                next(rows, None)
            yield from _rows(rows, new_rows, header, state, name, delimiter, require_newline)
        except ReaderError as exc:
            if exc.line is None and exc.index is None and exc.file == name:
                raise ReaderError(name, exc.reason, line=state.line_no + 1) from None
            raise


def _rows(
    rows: Any,
    new_rows: Any,
    header: list[str] | None,
    state: LineState,
    name: str,
    delimiter: str,
    require_newline: bool,
) -> Iterator[RawRecord | RawReject]:
    index = 0
    width = len(header) if header is not None else None
    while True:
        state.record_bytes = 0
        try:
            row = next(rows)
        except StopIteration:
            return
        except LineProblem as problem:
            index += 1
            yield reject(name, index, problem.reason, line=problem.line, excerpt=problem.excerpt)
            rows = new_rows()
            continue
        except csv.Error as exc:
            index += 1
            reason = str(exc)
            if "unexpected end of data" in reason:
                reason = "unterminated quoted field at end of file (truncated?)"
            yield reject(name, index, f"malformed CSV row: {reason}", line=state.record_line, excerpt=state.last_text)
            continue
        if not row:
            continue  # a blank line is not a record
        index += 1
        if header is None:
            width = len(row)
            header = [f"column_{i}" for i in range(1, width + 1)]
        if len(row) != width:
            reason = f"expected {width} fields, got {len(row)}"
            yield reject(name, index, reason, line=state.record_line, excerpt=delimiter.join(row))
        elif require_newline and state.missing_newline:
            reason = "last line has no newline (truncated file?)"
            yield reject(name, index, reason, line=state.record_line, excerpt=delimiter.join(row))
        else:
            yield RawRecord(index, dict(zip(header, row, strict=True)), line=state.record_line)
