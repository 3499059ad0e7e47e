"""Streaming format readers: the bytes of one landed object -> RawRecord / RawReject, in bounded memory.

``read_records`` is the one entry point; specs name a ``format`` from ``FORMATS`` and reader ``options``
from ``READER_OPTIONS[format]``. Configuration errors (unknown format or option, missing file) raise
ReaderError at the call; problems with the data surface while iterating.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from covidflow.read.base import RawRecord, RawReject, ReaderError
from covidflow.read.binary import PARQUET_OPTIONS, XLSX_OPTIONS, read_parquet, read_xlsx
from covidflow.read.compression import COMPRESSION_OPTIONS
from covidflow.read.delimited import CSV_OPTIONS, read_csv
from covidflow.read.jsondoc import JSON_OPTIONS, JSONL_OPTIONS, read_json, read_jsonl
from covidflow.read.markup import HTML_OPTIONS, MARKDOWN_OPTIONS, XML_OPTIONS, read_html, read_markdown, read_xml
from covidflow.read.text import TEXT_OPTIONS
from covidflow.read.yamldoc import YAML_OPTIONS, read_yaml

__all__ = [
    "FORMATS",
    "READER_OPTIONS",
    "RawRecord",
    "RawReject",
    "ReaderError",
    "open_records",
    "read_records",
]

Reader = Callable[[BinaryIO, Mapping[str, Any], str], Iterator[RawRecord | RawReject]]

_READERS: dict[str, tuple[Reader, dict[str, str]]] = {
    "csv": (read_csv, {**CSV_OPTIONS, **TEXT_OPTIONS}),
    "json": (read_json, {**JSON_OPTIONS}),
    "jsonl": (read_jsonl, {**JSONL_OPTIONS, **TEXT_OPTIONS}),
    "xlsx": (read_xlsx, {**XLSX_OPTIONS}),
    "parquet": (read_parquet, {**PARQUET_OPTIONS}),
    "xml": (read_xml, {**XML_OPTIONS}),
    "yaml": (read_yaml, {**YAML_OPTIONS}),
    "html": (read_html, {**HTML_OPTIONS}),
    "markdown": (read_markdown, {**MARKDOWN_OPTIONS, **TEXT_OPTIONS}),
}

#: The supported format names.
FORMATS: frozenset[str] = frozenset(_READERS)

#: For each format, the option names it accepts with a one-line meaning (compression options included).
READER_OPTIONS: dict[str, dict[str, str]] = {
    fmt: {**opts, **COMPRESSION_OPTIONS} for fmt, (_, opts) in sorted(_READERS.items())
}


def _reader(fmt: str, options: Mapping[str, Any], name: str) -> Reader:
    if fmt not in _READERS:
        raise ReaderError(name, f"unknown format {fmt!r} (supported: {', '.join(sorted(FORMATS))})")
    unknown = sorted(set(options) - set(READER_OPTIONS[fmt]))
    if unknown:
        accepted = sorted(READER_OPTIONS[fmt])
        raise ReaderError(name, f"unknown option(s) {unknown} for format {fmt} (accepted: {accepted})")
    return _READERS[fmt][0]


def read_records(
    stream: BinaryIO, fmt: str, options: Mapping[str, Any], *, name: str
) -> Iterator[RawRecord | RawReject]:
    """Read one object's records from a binary stream; ``name`` (S3 key or path) is in every message."""
    reader = _reader(fmt, options or {}, name)
    return reader(stream, options or {}, name)


def open_records(path: Path | str, fmt: str, options: Mapping[str, Any]) -> Iterator[RawRecord | RawReject]:
    """Open a local file and read its records; the file is closed when the iterator ends or is dropped."""
    name = str(path)
    reader = _reader(fmt, options or {}, name)
    handle = open_local(path)
    return _closing(handle, reader(handle, options or {}, name))


def open_local(path: Path | str) -> BinaryIO:
    """A local file opened for a reader; a missing or unreadable file is a ReaderError naming it."""
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise ReaderError(str(path), "file not found") from None
    except OSError as exc:
        raise ReaderError(str(path), f"cannot open: {exc.strerror or exc}") from None


def _closing(handle: BinaryIO, records: Iterator[RawRecord | RawReject]) -> Iterator[RawRecord | RawReject]:
    with handle:
        yield from records
