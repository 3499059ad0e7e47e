"""The xml, html and markdown readers: records from elements or table rows, streamed and cleared as they go."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO

from lxml import etree

from covidflow.read.base import RawRecord, RawReject, ReaderError, reject
from covidflow.read.compression import open_input
from covidflow.read.delimited import column_names
from covidflow.read.text import LineProblem, LineState, iter_lines, text_options

XML_OPTIONS = {
    "record_tag": "element name of one record (any namespace); its attributes and child elements are the fields",
}
HTML_OPTIONS = {
    "table_index": "0-based index of the <table> in document order (default 0); its first row is the header",
    "encoding": "text encoding of the page (default utf-8)",
}
MARKDOWN_OPTIONS = {
    "table_index": "0-based index of the table (pipe table or embedded HTML <table>) after after_heading (default 0)",
    "after_heading": "only count tables after the first heading whose text contains this string",
}

#: An HTML table embedded in Markdown is parsed as one block; this caps its size.
MAX_EMBEDDED_TABLE_BYTES = 64 * 1024**2
_SPACES = re.compile(r"\s+")


def _local(tag: Any) -> str:
    return etree.QName(tag).localname if isinstance(tag, str) else ""


def _element_fields(el: Any, prefix: str, out: dict[str, Any]) -> None:
    """Attributes and children as dotted fields; a repeated child becomes a list of values."""
    for key, value in el.attrib.items():
        out[f"{prefix}{_local(key)}"] = value
    for child in el:
        key = _local(child.tag)
        if not key:
            continue  # comments, processing instructions
        if len(child) or child.attrib:
            _element_fields(child, f"{prefix}{key}.", out)
            continue
        value = (child.text or "").strip()
        full = f"{prefix}{key}"
        if full in out:
            previous = out[full]
            out[full] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            out[full] = value
    if not len(el) and el.text and el.text.strip() and prefix:
        out[prefix.rstrip(".")] = el.text.strip()


def read_xml(stream: BinaryIO, options: Mapping[str, Any], name: str) -> Iterator[RawRecord | RawReject]:
    """One record per ``record_tag`` element; elements are cleared after use so memory stays bounded."""
    tag = options.get("record_tag")
    if not isinstance(tag, str) or not tag:
        raise ReaderError(name, "option record_tag is required for xml (the element name of one record)")
    with open_input(stream, options, name) as data:
        index = 0
        events = etree.iterparse(
            data, events=("end",), tag=f"{{*}}{tag}", resolve_entities=False, no_network=True, load_dtd=False
        )
        try:
            for _, el in events:
                index += 1
                fields: dict[str, Any] = {}
                _element_fields(el, "", fields)
                if not fields and el.text and el.text.strip():
                    fields[tag] = el.text.strip()
                yield RawRecord(index, fields, line=el.sourceline)
                el.clear(keep_tail=True)
                while el.getprevious() is not None:
                    del el.getparent()[0]
        except etree.XMLSyntaxError as exc:
            line = exc.lineno if exc.lineno else None
            raise ReaderError(name, f"invalid or truncated XML after {index} records: {exc.msg}", line=line) from None
        if index == 0:
            raise ReaderError(name, f"no <{tag}> elements (check record_tag)")


def _row_cells(tr: Any) -> list[str]:
    cells: list[str] = []
    for cell in tr:
        if _local(cell.tag).lower() not in ("td", "th"):
            continue
        text = _SPACES.sub(" ", "".join(cell.itertext())).strip()
        span = cell.get("colspan", "1")
        cells.extend([text] * (int(span) if span.isdigit() and 0 < int(span) < 1000 else 1))
    return cells


def _table_rows(source: Any, table_index: int, encoding: str) -> Iterator[tuple[int | None, list[str]]]:
    """(line, cells) for each row of the table_index-th table, parsing HTML incrementally."""
    seen = -1
    stack: list[int] = []
    events = etree.iterparse(
        source, events=("start", "end"), tag=("table", "tr"), html=True, no_network=True, encoding=encoding
    )
    for event, el in events:
        if el.tag == "table":
            if event == "start":
                seen += 1
                stack.append(seen)
            else:
                done = stack.pop() == table_index
                el.clear()
                if done:
                    return
        elif event == "end":
            if stack and stack[-1] == table_index:
                yield el.sourceline, _row_cells(el)
            el.clear(keep_tail=True)
    if seen < table_index:
        raise LookupError(f"no table {table_index}: the document has {seen + 1} table(s)")


def _records_from_rows(rows: Iterator[tuple[int | None, list[str]]], name: str) -> Iterator[RawRecord | RawReject]:
    header: list[str] | None = None
    index = 0
    for line, cells in rows:
        if header is None:
            header = column_names(cells, name)
            continue
        if not cells:
            continue
        index += 1
        if len(cells) != len(header):
            reason = f"expected {len(header)} fields, got {len(cells)}"
            yield reject(name, index, reason, line=line, excerpt=" | ".join(cells))
        else:
            yield RawRecord(index, dict(zip(header, cells, strict=True)), line=line)


def _table_index(options: Mapping[str, Any], name: str) -> int:
    value = options.get("table_index", 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ReaderError(name, f"option table_index must be a non-negative integer, got {value!r}")
    return value


def read_html(stream: BinaryIO, options: Mapping[str, Any], name: str) -> Iterator[RawRecord | RawReject]:
    """Rows of the Nth <table>: th/td cells, colspan repeated (rowspan is not expanded)."""
    table_index = _table_index(options, name)
    with open_input(stream, options, name) as data:
        try:
            yield from _records_from_rows(_table_rows(data, table_index, options.get("encoding", "utf-8")), name)
        except LookupError as exc:
            raise ReaderError(name, str(exc)) from None
        except etree.XMLSyntaxError as exc:
            raise ReaderError(name, f"unparseable HTML: {exc.msg}", line=exc.lineno or None) from None


_PIPE_DELIMITER = re.compile(r"^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$")
_PIPE_SPLIT = re.compile(r"(?<!\\)\|")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
#: An HTML block starting a table: the line begins with <table>, possibly inside wrapper tags like <small>.
_HTML_TABLE_START = re.compile(r"^\s{0,3}(<[A-Za-z][^>]*>\s*)*<table\b", re.IGNORECASE)
_FENCE = re.compile(r"^\s{0,3}(```|~~~)")


def _pipe_cells(line: str) -> list[str]:
    text = line.strip()
    if text.startswith("|"):
        text = text[1:]
    if text.endswith("|") and not text.endswith("\\|"):
        text = text[:-1]
    return [cell.strip().replace("\\|", "|") for cell in _PIPE_SPLIT.split(text)]


def read_markdown(stream: BinaryIO, options: Mapping[str, Any], name: str) -> Iterator[RawRecord | RawReject]:
    """Rows of one table in a Markdown document: GFM pipe tables and embedded HTML tables both count."""
    table_index = _table_index(options, name)
    heading = options.get("after_heading")
    encoding, errors, max_bytes = text_options(options, name)
    with open_input(stream, options, name) as data:
        state = LineState()
        lines = iter_lines(data, state, encoding=encoding, errors=errors, max_record_bytes=max_bytes)
        found = yield from _markdown_table(lines, state, table_index, heading, name)
        if not found:
            where = f" after a heading containing {heading!r}" if heading else ""
            raise ReaderError(name, f"no table {table_index}{where}")


def _markdown_table(
    lines: Iterator[str], state: LineState, table_index: int, heading: str | None, name: str
) -> Iterator[RawRecord | RawReject]:
    seen, active, fenced = -1, heading is None, False
    previous: str | None = None
    try:
        for text in lines:
            state.record_bytes = 0
            if _FENCE.match(text):
                fenced, previous = not fenced, None
                continue
            if fenced:
                continue
            match = _HEADING.match(text)
            if match:
                active = active or heading in match.group(2)
                previous = None
                continue
            if _HTML_TABLE_START.match(text):
                seen += active
                block = _html_block(text, lines, state, name)
                if active and seen == table_index:
                    yield from _records_from_rows(_table_rows(_BytesSource(block), 0, "utf-8"), name)
                    return True
                previous = None
                continue
            if previous is not None and "|" in previous and _PIPE_DELIMITER.match(text):
                seen += active
                if active and seen == table_index:
                    yield from _pipe_table(previous, lines, state, name)
                    return True
            previous = text
    except LineProblem as problem:
        raise ReaderError(name, problem.reason, line=problem.line) from None
    return False


def _pipe_table(header_line: str, lines: Iterator[str], state: LineState, name: str) -> Iterator[RawRecord | RawReject]:
    header = column_names(_pipe_cells(header_line), name)
    for index, text in enumerate(lines, 1):
        state.record_bytes = 0
        if not text.strip() or "|" not in text:
            return
        cells = _pipe_cells(text)
        if len(cells) != len(header):
            reason = f"expected {len(header)} fields, got {len(cells)}"
            yield reject(name, index, reason, line=state.line_no, excerpt=text)
        else:
            yield RawRecord(index, dict(zip(header, cells, strict=True)), line=state.line_no)


def _html_block(first: str, lines: Iterator[str], state: LineState, name: str) -> bytes:
    """An embedded <table>...</table> block; buffered whole, up to MAX_EMBEDDED_TABLE_BYTES."""
    start = state.line_no
    parts, size = [first], len(first)
    text = first
    while "</table" not in text.lower():
        text = next(lines, None)
        if text is None:
            raise ReaderError(name, "HTML table not closed before end of file", line=start)
        state.record_bytes = 0
        parts.append(text)
        size += len(text)
        if size > MAX_EMBEDDED_TABLE_BYTES:
            raise ReaderError(name, f"embedded HTML table larger than {MAX_EMBEDDED_TABLE_BYTES} bytes", line=start)
    # Leading blank lines keep lxml's line numbers equal to the file's.
    return ("\n" * (start - 1) + "".join(parts)).encode("utf-8")


class _BytesSource:
    def __init__(self, data: bytes) -> None:
        self._data, self._pos = data, 0

    def read(self, n: int = -1) -> bytes:
        end = len(self._data) if n < 0 else self._pos + n
        chunk, self._pos = self._data[self._pos : end], min(end, len(self._data))
        return chunk
