"""The json and jsonl readers: records streamed with ijson (C backend), nested objects flattened to dotted keys."""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO

import ijson

from covidflow.read.base import RawRecord, RawReject, ReaderError, reject
from covidflow.read.compression import open_input
from covidflow.read.text import LineProblem, LineState, iter_lines, text_options

JSON_OPTIONS = {
    "records_path": "dotted path to the array of records inside a top-level object, e.g. data.items "
    "(ijson prefix syntax: 'item' stands for array elements); default: the top-level array",
}
JSONL_OPTIONS: dict[str, str] = {}


def flatten(value: Mapping[str, Any], prefix: str = "", out: dict[str, Any] | None = None) -> dict[str, Any]:
    """Nested objects become dotted keys ({"source": {"nom": x}} -> {"source.nom": x}); lists stay values."""
    out = {} if out is None else out
    for key, item in value.items():
        if isinstance(item, dict) and item:
            flatten(item, f"{prefix}{key}.", out)
        else:
            out[f"{prefix}{key}"] = item
    return out


def to_record(name: str, index: int, value: Any, line: int | None = None) -> RawRecord | RawReject:
    if isinstance(value, dict):
        return RawRecord(index, flatten(value), line=line)
    kind = "array" if isinstance(value, list) else type(value).__name__
    return reject(name, index, f"record is a JSON {kind}, not an object", line=line, excerpt=repr(value))


def read_json(stream: BinaryIO, options: Mapping[str, Any], name: str) -> Iterator[RawRecord | RawReject]:
    """Stream the records of a top-level array, or of the array at ``records_path``; never loads the whole file."""
    path = options.get("records_path")
    if path is not None and (not isinstance(path, str) or not path.strip(".")):
        raise ReaderError(name, f"option records_path must be a dotted path, got {path!r}")
    with open_input(stream, options, name) as data:
        if data.peek(3).startswith(codecs.BOM_UTF8):
            data.read(3)
        first = data.peek(1 << 16).lstrip()[:1]
        if not first:
            raise ReaderError(name, "empty file (only whitespace)")
        if path is None and first != b"[":
            raise ReaderError(name, "top-level JSON value is not an array; set records_path to where the records are")
        prefix = f"{path}.item" if path else "item"
        index = 0
        try:
            for value in ijson.items(data, prefix, use_float=True):
                index += 1
                yield to_record(name, index, value)
        except ijson.JSONError as exc:
            reason = f"invalid or truncated JSON after {index} records: {str(exc).splitlines()[0]}"
            raise ReaderError(name, reason, index=index + 1) from None
        if path and index == 0:
            raise ReaderError(name, f"no records at records_path {path!r} (missing, not an array, or empty)")


def read_jsonl(stream: BinaryIO, options: Mapping[str, Any], name: str) -> Iterator[RawRecord | RawReject]:
    """One JSON object per line; a bad line is a reject, blank lines are skipped."""
    encoding, errors, max_bytes = text_options(options, name)
    with open_input(stream, options, name) as data:
        state = LineState()
        index = 0
        while True:
            try:
                for text in iter_lines(data, state, encoding=encoding, errors=errors, max_record_bytes=max_bytes):
                    state.record_bytes = 0
                    if not text.strip():
                        continue
                    index += 1
                    try:
                        value = json.loads(text)
                    except ValueError as exc:
                        yield reject(name, index, f"invalid JSON: {exc}", line=state.line_no, excerpt=text)
                        continue
                    yield to_record(name, index, value, line=state.line_no)
                return
            except LineProblem as problem:
                state.record_bytes = 0
                index += 1
                yield reject(name, index, problem.reason, line=problem.line, excerpt=problem.excerpt)
            except ReaderError as exc:
                if exc.line is None and exc.index is None:
                    raise ReaderError(name, exc.reason, line=state.line_no + 1) from None
                raise
