"""The yaml reader: each document is a record or a list of records, or (``records`` option) a nested bulletin
whose blocks are the records; safe loading only."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO

import yaml

from covidflow.read.base import RawRecord, RawReject, ReaderError
from covidflow.read.compression import open_input
from covidflow.read.jsondoc import NESTED_OPTIONS, nested_options_problems, nested_records, to_record

YAML_OPTIONS: dict[str, str] = {**NESTED_OPTIONS}

# The C loader when libyaml is there; both are the safe loaders (no python/object tags).
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_yaml(stream: BinaryIO, options: Mapping[str, Any], name: str) -> Iterator[RawRecord | RawReject]:
    """Documents are loaded one at a time (a single huge document is held whole; see README limits)."""
    problems = nested_options_problems(options)
    if problems:
        raise ReaderError(name, "; ".join(problems))
    nested = options.get("records") is not None
    with open_input(stream, options, name) as data:
        index = 0
        try:
            for document in yaml.load_all(data, Loader=_Loader):  # a safe loader: no object-constructing tags
                if document is None:
                    continue
                if nested:
                    for record in nested_records(document, options, name, index):
                        index = record.index
                        yield record
                    continue
                for value in document if isinstance(document, list) else [document]:
                    index += 1
                    yield to_record(name, index, value)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            line = mark.line + 1 if mark is not None else None
            raise ReaderError(name, f"invalid YAML after {index} records: {problem}", line=line) from None
        if nested and index == 0:
            paths = ", ".join(b["path"] for b in options["records"])
            raise ReaderError(name, f"no records at any record path ({paths})")
