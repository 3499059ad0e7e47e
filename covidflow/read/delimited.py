"""The csv reader: any delimiter, quoting, header on any line, per-row rejects, bounded memory.

Two ways through the same rules: ``read_csv`` (one ``RawRecord`` per row, per-record Python) and
``read_csv_blocks`` (for ``read_batches``), which parses blocks of whole lines with pyarrow and hands each
block that passes every check on as columns; a block with any anomaly is re-read by the per-record code,
so rejects, line numbers and errors are the per-record reader's own (see covidflow/read/README.md).
"""

from __future__ import annotations

import codecs
import csv
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO

from covidflow.read.base import RawRecord, RawReject, ReaderError, reject
from covidflow.read.compression import BUFFER_SIZE, open_input
from covidflow.read.text import LineProblem, LineState, iter_lines, skip_raw_lines, text_options

if TYPE_CHECKING:
    import io

    import pyarrow as pa

CSV_OPTIONS = {
    "delimiter": "field separator, one character (default ',')",
    "quotechar": "quote character, one character (default '\"')",
    "header_row": "1-based line holding the column names (default 1); 0 = no header (see columns)",
    "columns": "column names to use when header_row is 0 (default column_1, column_2, ...)",
    "skip_rows": "number of rows after the header to skip, e.g. a units row (default 0)",
    "comment": "lines starting with this prefix are skipped (default none)",
    "require_final_newline": "reject the last row if the file does not end with a newline (default false)",
}

#: Bytes of whole lines parsed at once by the columnar path (~7k SPF rows): small enough for the CPU caches.
BLOCK_BYTES = 1 << 18

# Our own per-record cap is max_record_bytes; the csv module's field cap (128 KiB by default) must not bite first.
csv.field_size_limit(2**31 - 1)

_BOM = codecs.BOM_UTF8


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


@dataclass(frozen=True)
class _Config:
    """Validated csv options (validated in the order the reader always did, so the first error is the same)."""

    encoding: str
    errors: str
    max_bytes: int
    delimiter: str
    quotechar: str
    header_row: int
    skip_rows: int
    comment: str | None
    require_newline: bool
    columns: Any

    @property
    def dialect(self) -> dict[str, Any]:
        return {"delimiter": self.delimiter, "quotechar": self.quotechar, "strict": True, "skipinitialspace": False}


def _config(options: Mapping[str, Any], name: str) -> _Config:
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
    return _Config(
        encoding, errors, max_bytes, delimiter, quotechar, header_row, skip_rows, comment, require_newline,
        options.get("columns"),
    )  # fmt: skip


class _Cursor:
    """Where the row loop is: the last record index, and the column names once known (no header: first row)."""

    def __init__(self, header: list[str] | None) -> None:
        self.index = 0
        self.header = header
        self.width = len(header) if header is not None else None


def _new_rows(reader: Any, state: LineState, cfg: _Config) -> Callable[[], Any]:
    """A factory of csv readers over the line source (a new one resumes after a LineProblem)."""

    def new_rows() -> Any:
        lines = iter_lines(
            reader, state, encoding=cfg.encoding, errors=cfg.errors, max_record_bytes=cfg.max_bytes, comment=cfg.comment
        )
        return csv.reader(lines, **cfg.dialect)

    return new_rows


def _prelude(data: io.BufferedReader, state: LineState, cfg: _Config, name: str) -> tuple[Any, list[str] | None]:
    """Read the preamble, the header and the skipped rows; return the csv reader positioned on the first data row."""
    rows = _new_rows(data, state, cfg)()
    if cfg.header_row:
        skip_raw_lines(data, state, cfg.header_row - 1)
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
        header = cfg.columns
        if header is not None:
            header = column_names(list(header), name)
    for _ in range(cfg.skip_rows):
        state.record_bytes = 0
        next(rows, None)
    return rows, header


def _with_line(exc: ReaderError, name: str, state: LineState) -> ReaderError:
    """A stream error (decompression, caps) names the line being read when it struck."""
    if exc.line is None and exc.index is None and exc.file == name:
        return ReaderError(name, exc.reason, line=state.line_no + 1)
    return exc


def read_csv(stream: BinaryIO, options: Mapping[str, Any], name: str) -> Iterator[RawRecord | RawReject]:
    """Yield one RawRecord per data row; malformed rows become RawRejects naming their line."""
    cfg = _config(options, name)
    with open_input(stream, options, name) as data:
        state = LineState()
        try:
            rows, header = _prelude(data, state, cfg, name)
            new_rows = _new_rows(data, state, cfg)
            yield from _rows(rows, new_rows, _Cursor(header), state, name, cfg.delimiter, cfg.require_newline)
        except ReaderError as exc:
            raise _with_line(exc, name, state) from None


def _rows(
    rows: Any,
    new_rows: Any,
    cursor: _Cursor,
    state: LineState,
    name: str,
    delimiter: str,
    require_newline: bool,
) -> Iterator[RawRecord | RawReject]:
    """The per-record loop; ``cursor`` is kept up to date at every yield, so the loop can stop and resume."""
    index, header, width = cursor.index, cursor.header, cursor.width
    while True:
        state.record_bytes = 0
        try:
            row = next(rows)
        except StopIteration:
            return
        except LineProblem as problem:
            index += 1
            cursor.index = index
            yield reject(name, index, problem.reason, line=problem.line, excerpt=problem.excerpt)
            rows = new_rows()
            continue
        except csv.Error as exc:
            index += 1
            reason = str(exc)
            if "unexpected end of data" in reason:
                reason = "unterminated quoted field at end of file (truncated?)"
            cursor.index = index
            yield reject(name, index, f"malformed CSV row: {reason}", line=state.record_line, excerpt=state.last_text)
            continue
        if not row:
            continue  # a blank line is not a record
        index += 1
        cursor.index = index
        if header is None:
            width = len(row)
            header = [f"column_{i}" for i in range(1, width + 1)]
            cursor.header, cursor.width = header, width
        if len(row) != width:
            reason = f"expected {width} fields, got {len(row)}"
            yield reject(name, index, reason, line=state.record_line, excerpt=delimiter.join(row))
        elif require_newline and state.missing_newline:
            reason = "last line has no newline (truncated file?)"
            yield reject(name, index, reason, line=state.record_line, excerpt=delimiter.join(row))
        else:
            yield RawRecord(index, dict(zip(header, row, strict=True)), line=state.record_line)


# --- the columnar path -------------------------------------------------------------------------------


class _Source:
    """The decompressed stream with bytes put back in front: blocks of whole lines for the columnar path,
    ``readline`` for the per-record path.

    It reads ``data`` only in ``BUFFER_SIZE`` steps (``read1``/``readline`` of the 64 KiB BufferedReader), as
    the per-record reader does, so decompression caps strike after the same bytes. A ReaderError from the
    stream is kept and raised when a line that needs bytes past it is read, as the per-record reader would.
    """

    def __init__(self, data: io.BufferedReader) -> None:
        self._data = data
        self._buf, self._pos = b"", 0
        self._eof = False
        self.error: ReaderError | None = None

    def exhausted(self) -> bool:
        return self._eof and self.error is None and self._pos >= len(self._buf)

    def block(self, target: int) -> bytes:
        """The next whole lines, about ``target`` bytes (b"" when no full line is at hand)."""
        buf, pos = self._buf, self._pos
        if len(buf) - pos < target and not self._eof and self.error is None:
            parts = [buf[pos:]] if pos < len(buf) else []
            size = len(buf) - pos
            while size < target:
                try:
                    chunk = self._data.read1(BUFFER_SIZE)
                except ReaderError as exc:
                    self.error = exc
                    break
                if not chunk:
                    self._eof = True
                    break
                parts.append(chunk)
                size += len(chunk)
            buf, pos = b"".join(parts), 0
        newline = buf.find(b"\n", max(min(pos + target, len(buf)) - 1, pos))
        if newline < 0:
            newline = buf.rfind(b"\n", pos)
        cut = newline + 1 if newline >= 0 else pos
        self._buf, self._pos = buf, cut
        return buf[pos:cut]

    def unread(self, count: int) -> None:
        """Put back the last ``count`` bytes handed out by ``block``."""
        self._pos -= count

    def readline(self, limit: int = -1) -> bytes:
        buf, pos = self._buf, self._pos
        if pos < len(buf):
            stop = len(buf) if limit < 0 else min(len(buf), pos + limit)
            newline = buf.find(b"\n", pos, stop)
            if newline >= 0:
                self._pos = newline + 1
                return buf[pos : newline + 1]
            if limit >= 0 and stop - pos == limit:
                self._pos = stop
                return buf[pos:stop]
            head = buf[pos:]
            self._buf, self._pos = b"", 0
            return head + self._more(limit - len(head) if limit >= 0 else -1)
        return self._more(limit)

    def _more(self, limit: int) -> bytes:
        if self.error is not None:
            raise self.error
        if self._eof:
            return b""
        line = self._data.readline(limit)
        if not line:
            self._eof = True
        return line


def _fast_encoding(encoding: str) -> str | None:
    """'utf-8', 'single-byte' (stateless, so a block decodes as its lines would one by one), or None."""
    info = codecs.lookup(encoding)
    if info.name == "utf-8":
        return "utf-8"
    if info.name in ("iso8859-1", "ascii"):
        return "single-byte"
    table = getattr(sys.modules.get(getattr(info.decode, "__module__", None) or ""), "decoding_table", None)
    return "single-byte" if isinstance(table, str) and len(table) == 256 else None


class _BlockParser:
    """Parse one block of whole lines with pyarrow, or say None when anything in it needs the per-record path.

    A block is clean when: it decodes (strict), has no blank line, comment line, bare CR, NUL or line over
    max_record_bytes, does not start with a BOM, has one row per line with the header's width, and its quotes
    are simple: each quoted cell is the quote character, text without it or a newline, the quote character,
    between delimiters or line ends. Python's csv and pyarrow read such lines alike, so the columns are the
    per-record reader's values.
    """

    def __init__(self, cfg: _Config, kind: str) -> None:
        import pyarrow.csv as pacsv

        self._cfg, self._kind = cfg, kind
        self._limit = cfg.max_bytes + 2  # the line reader's cap, room for CRLF
        self._comment = cfg.comment.encode(cfg.encoding) if cfg.comment else None
        self._quote = cfg.quotechar.encode("ascii")
        self._delimiter = ord(cfg.delimiter)
        self._parse_options = pacsv.ParseOptions(
            delimiter=cfg.delimiter,
            quote_char=cfg.quotechar,
            double_quote=False,
            escape_char=False,
            newlines_in_values=False,
            ignore_empty_lines=False,
        )
        self._names: list[str] = []
        self._convert: Any = None

    def parse(self, block: bytes, cursor: _Cursor) -> list[pa.Array] | None:
        """The block's columns (all strings), or None: then the per-record reader reads it."""
        import numpy as np
        import pyarrow as pa
        import pyarrow.csv as pacsv

        if cursor.header is None:
            return None
        try:
            text = block.decode(self._cfg.encoding)  # strict, in C: any bad byte goes to the per-record path
        except UnicodeDecodeError:
            return None
        utf8 = block if self._kind == "utf-8" else text.encode("utf-8")
        del text
        if utf8.startswith(_BOM) or b"\x00" in utf8:  # a BOM: line 1 drops it, pyarrow drops it on any block
            return None
        raw = np.frombuffer(block, np.uint8)
        data = raw if utf8 is block else np.frombuffer(utf8, np.uint8)
        newlines = np.flatnonzero(data == 10)
        lengths = np.diff(newlines, prepend=-1)  # of each line, with its "\n"
        raw_newlines, raw_lengths = newlines, lengths
        if data is not raw:
            raw_newlines = np.flatnonzero(raw == 10)
            if len(raw_newlines) != len(newlines):
                return None
            raw_lengths = np.diff(raw_newlines, prepend=-1)
        if int(raw_lengths.max()) > self._limit:  # the line reader's cap
            return None
        before_newline = data[newlines - 1]  # index -1 for a first line "\n" reads the last byte, a "\n" too
        cr_before_newline = before_newline == 13
        if ((lengths == 1) | ((lengths == 2) & cr_before_newline)).any():
            return None  # a blank line: not a record
        if np.count_nonzero(data == 13) != np.count_nonzero(cr_before_newline):
            return None  # a CR that does not end a line
        comment = self._comment
        if comment is not None and self._has_comment(block, raw, raw_newlines, comment):
            return None  # a comment line: skipped, not a record
        if self._quote in utf8 and not self._quotes_simple(data, newlines):
            return None  # a doubled quote, text after a closing quote, a quote inside a bare cell, a quoted newline
        width = len(cursor.header)
        if len(self._names) != width:
            self._names = [f"f{i}" for i in range(width)]
            self._convert = pacsv.ConvertOptions(
                column_types=dict.fromkeys(self._names, pa.string()),
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
                check_utf8=False,  # decoded above
            )
        try:
            table = pacsv.read_csv(
                pa.BufferReader(utf8),
                read_options=pacsv.ReadOptions(column_names=self._names, use_threads=False, block_size=len(utf8) + 64),
                parse_options=self._parse_options,
                convert_options=self._convert,
            )
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None  # a row of the wrong width, most often
        if table.num_rows != len(newlines) or table.num_columns != width:
            return None
        return [column.combine_chunks() for column in table.columns]

    @staticmethod
    def _has_comment(block: bytes, raw: Any, newlines: Any, comment: bytes) -> bool:
        """A line starting with the comment prefix (first byte checked in bulk, then the whole prefix)."""
        if raw[0] != comment[0] and not (raw[newlines[:-1] + 1] == comment[0]).any():
            return False
        return block.startswith(comment) or b"\n" + comment in block

    def _quotes_simple(self, data: Any, newlines: Any) -> bool:
        """Every quote opens a field (after a delimiter or line start) and the next one closes it (before a
        delimiter or line end) on the same line: then Python's csv and pyarrow read the cells alike."""
        import numpy as np

        quotes = np.flatnonzero(data == self._quote[0])
        if len(quotes) % 2:
            return False
        delimiter = self._delimiter
        before = data[quotes[0::2] - 1]  # the block ends with "\n": index -1 reads it, as a line start should
        after = data[quotes[1::2] + 1]  # a closing quote is never the last byte, which is "\n"
        if not (
            ((before == delimiter) | (before == 10)).all()
            and ((after == delimiter) | (after == 10) | (after == 13)).all()
        ):
            return False
        return not (np.searchsorted(quotes, newlines) & 1).any()  # an odd count before a newline: quoted newline


def _int64_range(start: int, count: int) -> pa.Array:
    """start, start + 1, ... as an int64 array, through a buffer: ``pa.array(ndarray)`` would import pandas."""
    import numpy as np
    import pyarrow as pa

    return pa.Array.from_buffers(
        pa.int64(), count, [None, pa.py_buffer(np.arange(start, start + count, dtype=np.int64))]
    )


def read_csv_blocks(
    stream: BinaryIO, options: Mapping[str, Any], name: str, *, block_bytes: int = BLOCK_BYTES
) -> Iterator[RawRecord | RawReject | pa.RecordBatch]:
    """What ``read_csv`` yields, with runs of clean rows as raw batches (``__row``, ``__line``, the columns).

    Options outside the columnar path (a delimiter or quote character that is not ASCII, an encoding that
    is neither UTF-8 nor single-byte) give ``read_csv``'s records unchanged.
    """
    cfg = _config(options, name)
    kind = _fast_encoding(cfg.encoding)
    ascii_chars = all(c.isascii() and c not in "\r\n" for c in (cfg.delimiter, cfg.quotechar))
    if kind is None or not ascii_chars or cfg.delimiter == cfg.quotechar:
        yield from read_csv(stream, options, name)
        return
    import pyarrow as pa

    from covidflow.read.batch import LINE, ROW

    parser = _BlockParser(cfg, kind)
    with open_input(stream, options, name) as data:
        state = LineState()
        try:
            _, header = _prelude(data, state, cfg, name)  # its csv reader is at a record boundary: not needed
            cursor = _Cursor(header)
            source = _Source(data)
            new_rows = _new_rows(source, state, cfg)
            while True:
                block = source.block(block_bytes)
                if block:
                    columns = parser.parse(block, cursor)
                    if columns is not None:
                        count = len(columns[0])  # one row per line: checked by the parser
                        first_row, first_line = cursor.index + 1, state.line_no + 1
                        arrays = [_int64_range(first_row, count), _int64_range(first_line, count), *columns]
                        yield pa.RecordBatch.from_arrays(arrays, names=[ROW, LINE, *cursor.header])
                        cursor.index += count
                        state.line_no += count
                        state.offset += len(block)
                        continue
                    source.unread(len(block))
                elif source.exhausted():
                    return
                # The per-record reader takes over from here to the first record boundary past the block.
                end = state.offset + max(len(block), 1)
                records = _rows(new_rows(), new_rows, cursor, state, name, cfg.delimiter, cfg.require_newline)
                finished = True
                for item in records:
                    yield item
                    if state.offset >= end:
                        finished = False
                        break
                records.close()
                if finished:
                    return  # the per-record reader reached the end of the object
        except ReaderError as exc:
            raise _with_line(exc, name, state) from None
