"""Line-oriented reading shared by csv, jsonl and markdown: bounded lines, per-line decoding, positions.

A line longer than ``max_record_bytes`` is never built: it is read in chunks and discarded, then reported.
Decoding is per line, so one undecodable row is one reject, not a failed file; this needs an encoding in
which b"\\n" is the newline byte (UTF-8, Latin-1, cp1252... — not UTF-16/32).
"""

from __future__ import annotations

import codecs
import io
from collections.abc import Iterator, Mapping
from typing import Any

from covidflow.read.base import ReaderError

DEFAULT_MAX_RECORD_BYTES = 1024**2
EXCERPT_CHARS = 200
_CHUNK = 1 << 16
_BOM = codecs.BOM_UTF8

TEXT_OPTIONS = {
    "encoding": "text encoding of the file (default utf-8); must keep b'\\n' as newline (not utf-16/32)",
    "encoding_errors": "strict (an undecodable row becomes a reject) or replace (bad bytes become U+FFFD)",
    "max_record_bytes": f"cap on one line/record in bytes (default {DEFAULT_MAX_RECORD_BYTES}); longer is rejected",
}


class LineProblem(Exception):
    """One line (or the record it belongs to) cannot be used; the reader turns it into a RawReject."""

    def __init__(self, line: int, reason: str, excerpt: str = "") -> None:
        super().__init__(reason)
        self.line, self.reason, self.excerpt = line, reason, excerpt


class LineState:
    """Where the line source is; shared by successive line generators over one stream."""

    def __init__(self) -> None:
        self.line_no = 0  # physical lines consumed so far
        self.offset = 0  # byte offset of the next line
        self.record_bytes = 0  # bytes of the record being assembled; the consumer resets it to 0
        self.record_line = 0  # first physical line of the record being assembled
        self.last_text = ""  # the last decoded line, for excerpts
        self.missing_newline = False  # the last line of the file had no newline


def text_options(options: Mapping[str, Any], name: str) -> tuple[str, str, int]:
    """Validated (encoding, errors, max_record_bytes)."""
    encoding = options.get("encoding", "utf-8")
    try:
        codecs.lookup(encoding)
    except (LookupError, TypeError):
        raise ReaderError(name, f"unknown encoding {encoding!r}") from None
    if "\n".encode(encoding) != b"\n":
        raise ReaderError(name, f"encoding {encoding!r} is not supported: newlines must be single '\\n' bytes")
    errors = options.get("encoding_errors", "strict")
    if errors not in ("strict", "replace"):
        raise ReaderError(name, f"encoding_errors must be 'strict' or 'replace', got {errors!r}")
    max_bytes = options.get("max_record_bytes", DEFAULT_MAX_RECORD_BYTES)
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
        raise ReaderError(name, f"max_record_bytes must be a positive integer, got {max_bytes!r}")
    return encoding, errors, max_bytes


def _discard_rest_of_line(reader: io.BufferedReader) -> int:
    """Skip to just after the next newline in bounded memory; return how many bytes were skipped."""
    skipped = 0
    while chunk := reader.readline(_CHUNK):
        skipped += len(chunk)
        if chunk.endswith(b"\n"):
            break
    return skipped


def skip_raw_lines(reader: io.BufferedReader, state: LineState, count: int) -> None:
    """Skip ``count`` physical lines without decoding them (preamble before a header)."""
    for _ in range(count):
        raw = reader.readline(_CHUNK)
        if not raw:
            return
        state.line_no += 1
        state.offset += len(raw)
        if not raw.endswith(b"\n"):
            state.offset += _discard_rest_of_line(reader)


def iter_lines(
    reader: io.BufferedReader,
    state: LineState,
    *,
    encoding: str,
    errors: str,
    max_record_bytes: int,
    comment: str | None = None,
) -> Iterator[str]:
    """Decoded lines, terminators kept; raises LineProblem for a too-long or undecodable line, then can resume.

    After a LineProblem, call again with the same ``state`` to continue with the next line.
    """
    readline = reader.readline
    limit = max_record_bytes + 2  # room for CRLF
    comment_bytes = comment.encode(encoding) if comment else None
    is_utf8 = codecs.lookup(encoding).name == "utf-8"
    while True:
        raw = readline(limit)
        if not raw:
            return
        state.line_no += 1
        start = state.offset
        state.offset += len(raw)
        if state.record_bytes == 0:
            state.record_line = state.line_no
        if raw[-1] != 10:  # no newline: either the line is too long, or it is the last line of the file
            if len(raw) == limit:
                skipped = _discard_rest_of_line(reader)
                state.offset += skipped
                raise LineProblem(
                    state.line_no,
                    f"line longer than max_record_bytes={max_record_bytes} ({len(raw) + skipped} bytes), skipped",
                    raw[:EXCERPT_CHARS].decode(encoding, "replace"),
                )
            state.missing_newline = True
        if state.line_no == 1 and is_utf8 and raw.startswith(_BOM):
            raw, start = raw[3:], start + 3
        state.record_bytes += len(raw)
        if state.record_bytes > limit:
            raise LineProblem(
                state.record_line,
                f"record longer than max_record_bytes={max_record_bytes} (unterminated quote?), skipped",
                state.last_text[:EXCERPT_CHARS],
            )
        if comment_bytes is not None and state.record_bytes == len(raw) and raw.startswith(comment_bytes):
            state.record_bytes = 0
            continue
        try:
            text = raw.decode(encoding, errors)
        except UnicodeDecodeError as exc:
            raise LineProblem(
                state.line_no,
                f"bytes not valid {encoding} at byte offset {start + exc.start} (column {exc.start + 1} of line "
                f"{state.line_no}): {raw[exc.start : exc.start + 4]!r}",
                raw[:EXCERPT_CHARS].decode(encoding, "replace"),
            ) from None
        state.last_text = text
        yield text
