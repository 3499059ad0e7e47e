"""The json and jsonl readers: records streamed with ijson (C backend), nested objects flattened to dotted keys.

Nested documents (a daily bulletin: the date at the top, a national block, regional and departmental blocks) are
read with the ``records`` option, shared with the yaml reader: several record paths, fields carried down from
the document, fixed fields per block, and lists inside a record (individual cases) dropped with a reason. The
cores then see ordinary flat records.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO

import ijson

from covidflow.read.base import RawRecord, RawReject, ReaderError, reject
from covidflow.read.compression import open_input
from covidflow.read.text import LineProblem, LineState, iter_lines, text_options

NESTED_OPTIONS = {
    "records": "nested documents: a list of record blocks, each {path: dotted.path, set: {field: value}}; the "
    "value at path is one record (a mapping) or several (a list of mappings); set adds fixed fields, e.g. "
    "the code of a national block that has none. The whole document is held in memory",
    "carry": "with records: dotted paths of document fields copied into every record (date, source.nom)",
    "ignore": "with records: {field: reason} for lists inside a record (individual cases...); every such list "
    "is dropped and explained as a skip, with this reason or a generic one",
}
JSON_OPTIONS = {
    "records_path": "dotted path to the array of records inside a top-level object, e.g. data.items "
    "(ijson prefix syntax: 'item' stands for array elements); default: the top-level array",
    **NESTED_OPTIONS,
}
#: A record field that tells the cores a list was dropped from it: ``@ignored.<field>`` -> the reason (a skip).
IGNORED_PREFIX = "@ignored."
_GENERIC_IGNORE = "a list inside a record, not one of the spec's record blocks: ignored"
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


def nested_options_problems(options: Mapping[str, Any]) -> list[str]:
    """What is wrong with the records/carry/ignore options (empty when nothing): for spec validation."""
    problems: list[str] = []
    blocks = options.get("records")
    if blocks is None:
        return [f"option {k!r} needs the records option" for k in ("carry", "ignore") if k in options]
    if "records_path" in options:
        problems.append("records and records_path exclude each other")
    if not isinstance(blocks, list) or not blocks:
        return [*problems, "records must be a non-empty list of {path: ..., set: {...}}"]
    for i, block in enumerate(blocks):
        if not isinstance(block, dict) or not isinstance(block.get("path"), str) or not block["path"].strip("."):
            problems.append(f"records[{i}] needs a dotted path, e.g. {{path: donneesRegionales}}")
        elif set(block) - {"path", "set"} or not isinstance(block.get("set", {}), dict):
            problems.append(f"records[{i}] takes path and set (a mapping of fixed fields) only")
    carry = options.get("carry", [])
    if not isinstance(carry, list) or not all(isinstance(c, str) and c for c in carry):
        problems.append("carry must be a list of dotted paths")
    ignore = options.get("ignore", {})
    if not isinstance(ignore, dict) or not all(isinstance(v, str) and v for v in ignore.values()):
        problems.append("ignore must map a field to the reason it is ignored")
    return problems


def _at(document: Any, path: str) -> Any:
    """The value at a dotted path through mappings, or None when any step is missing."""
    value = document
    for step in path.split("."):
        if not isinstance(value, dict) or step not in value:
            return None
        value = value[step]
    return value


def nested_records(document: Any, options: Mapping[str, Any], name: str, index: int) -> Iterator[RawRecord | RawReject]:
    """The records of one nested document, per the ``records`` option; ``index`` is the count so far.

    Each record is the block's mapping flattened, under the carried document fields and over the block's fixed
    ``set`` fields; lists inside it become ``@ignored.<field>`` (the reason), which the cores count as skips.
    A block absent from the document yields nothing (bulletins leave out what they do not report).
    """
    if not isinstance(document, dict):
        kind = "array" if isinstance(document, list) else type(document).__name__
        yield reject(name, index + 1, f"document is a {kind}, not a mapping with record blocks", excerpt=repr(document))
        return
    carried = {}
    for path in options.get("carry", []):
        value = _at(document, path)
        if value is not None and not isinstance(value, (dict, list)):
            carried[path] = value
    ignore = options.get("ignore", {})
    for block in options["records"]:
        found = _at(document, block["path"])
        items = found if isinstance(found, list) else [] if found is None else [found]
        for item in items:
            index += 1
            if not isinstance(item, dict):
                kind = "array" if isinstance(item, list) else type(item).__name__
                yield reject(name, index, f"{block['path']}: item is a {kind}, not a mapping", excerpt=repr(item))
                continue
            fields = dict(carried)
            for key, value in flatten(item).items():
                if isinstance(value, list):
                    leaf = key.rsplit(".", 1)[-1]
                    reason = ignore.get(key) or ignore.get(leaf) or _GENERIC_IGNORE
                    fields[f"{IGNORED_PREFIX}{key}"] = f"{reason} ({len(value)} items)"
                else:
                    fields[key] = value
            fields.update(block.get("set", {}))
            yield RawRecord(index, fields)


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
    problems = nested_options_problems(options)
    if problems:
        raise ReaderError(name, "; ".join(problems))
    if options.get("records") is not None:
        yield from _read_nested_json(stream, options, name)
        return
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


def _read_nested_json(stream: BinaryIO, options: Mapping[str, Any], name: str) -> Iterator[RawRecord | RawReject]:
    with open_input(stream, options, name) as data:
        if data.peek(3).startswith(codecs.BOM_UTF8):
            data.read(3)
        if not data.peek(1 << 16).strip():
            raise ReaderError(name, "empty file (only whitespace)")
        try:
            (document,) = ijson.items(data, "", use_float=True)
        except (ijson.JSONError, ValueError) as exc:
            raise ReaderError(name, f"invalid JSON: {str(exc).splitlines()[0]}") from None
    count = 0
    for record in nested_records(document, options, name, 0):
        count += 1
        yield record
    if count == 0:
        paths = ", ".join(b["path"] for b in options["records"])
        raise ReaderError(name, f"no records at any record path ({paths})")


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
