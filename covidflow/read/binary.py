"""The xlsx and parquet readers: formats that need random access, so non-seekable inputs are spooled first."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO

from covidflow.read.base import RawRecord, RawReject, ReaderError, reject
from covidflow.read.compression import seekable_input
from covidflow.read.delimited import column_names
from covidflow.read.jsondoc import flatten

XLSX_OPTIONS = {
    "sheet": "worksheet name, or 1-based worksheet number (default: the first sheet)",
    "header_row": "1-based row holding the column names (default 1)",
}
PARQUET_OPTIONS = {
    "batch_size": "rows per record batch read at a time (default 10000)",
}


def _cell_text(value: Any) -> str:
    return "" if value is None else str(value)


def read_xlsx(stream: BinaryIO, options: Mapping[str, Any], name: str) -> Iterator[RawRecord | RawReject]:
    """Rows of one worksheet via openpyxl read-only mode (rows are streamed from the sheet XML)."""
    import openpyxl
    from openpyxl.utils.exceptions import InvalidFileException

    sheet = options.get("sheet")
    header_row = options.get("header_row", 1)
    if isinstance(header_row, bool) or not isinstance(header_row, int) or header_row < 1:
        raise ReaderError(name, f"option header_row must be a positive integer, got {header_row!r}")
    with seekable_input(stream, options, name) as f:
        try:
            book = openpyxl.load_workbook(f, read_only=True, data_only=True)
        except (zipfile.BadZipFile, InvalidFileException, KeyError, OSError, ValueError) as exc:
            raise ReaderError(name, f"not a readable xlsx workbook: {exc}") from None
        try:
            if sheet is None:
                ws = book.worksheets[0]
            elif isinstance(sheet, int) and not isinstance(sheet, bool):
                if not 1 <= sheet <= len(book.worksheets):
                    raise ReaderError(name, f"sheet {sheet} out of range (workbook has {len(book.worksheets)})")
                ws = book.worksheets[sheet - 1]
            elif sheet in book.sheetnames:
                ws = book[sheet]
            else:
                raise ReaderError(name, f"no sheet {sheet!r} (sheets: {book.sheetnames})")
            ws.reset_dimensions()  # stated dimensions are often wrong; read what is there
            yield from _sheet_rows(ws.iter_rows(values_only=True), header_row, name)
        finally:
            book.close()


def _sheet_rows(rows: Iterator[tuple[Any, ...]], header_row: int, name: str) -> Iterator[RawRecord | RawReject]:
    header: list[str] | None = None
    index = 0
    try:
        for line, row in enumerate(rows, 1):
            if line < header_row:
                continue
            values = list(row)
            while values and values[-1] is None:  # trailing empty cells are not fields
                values.pop()
            if header is None:
                if not values:
                    raise ReaderError(name, "empty header row", line=line)
                header = column_names([_cell_text(v) for v in values], name)
                continue
            if not values:
                continue  # a blank row is not a record
            index += 1
            if len(values) > len(header):
                yield reject(name, index, f"expected {len(header)} fields, got {len(values)}", line=line)
                continue
            values += [None] * (len(header) - len(values))
            yield RawRecord(index, dict(zip(header, values, strict=True)), line=line)
    except (zipfile.BadZipFile, KeyError, OSError, ValueError) as exc:
        raise ReaderError(name, f"corrupt worksheet after {index} records: {exc}", index=index + 1) from None
    if header is None:
        raise ReaderError(name, f"no header row {header_row} in the sheet (empty sheet?)")


def read_parquet(stream: BinaryIO, options: Mapping[str, Any], name: str) -> Iterator[RawRecord | RawReject]:
    """Rows from pyarrow record batches; struct columns are flattened to dotted keys like JSON."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    batch_size = options.get("batch_size", 10_000)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ReaderError(name, f"option batch_size must be a positive integer, got {batch_size!r}")
    with seekable_input(stream, options, name) as f:
        index = 0
        try:
            parquet = pq.ParquetFile(f)
            for batch in parquet.iter_batches(batch_size=batch_size):
                for row in batch.to_pylist():
                    index += 1
                    yield RawRecord(index, flatten(row))
        except (pa.ArrowException, OSError) as exc:
            raise ReaderError(name, f"unreadable parquet after {index} records: {exc}", index=index + 1) from None
