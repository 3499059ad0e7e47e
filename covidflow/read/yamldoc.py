"""The yaml reader: each document is a record or a list of records; safe loading only."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO

import yaml

from covidflow.read.base import RawRecord, RawReject, ReaderError
from covidflow.read.compression import open_input
from covidflow.read.jsondoc import to_record

YAML_OPTIONS: dict[str, str] = {}

# The C loader when libyaml is there; both are the safe loaders (no python/object tags).
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_yaml(stream: BinaryIO, options: Mapping[str, Any], name: str) -> Iterator[RawRecord | RawReject]:
    """Documents are loaded one at a time (a single huge document is held whole; see README limits)."""
    with open_input(stream, options, name) as data:
        index = 0
        try:
            for document in yaml.load_all(data, Loader=_Loader):  # a safe loader: no object-constructing tags
                if document is None:
                    continue
                for value in document if isinstance(document, list) else [document]:
                    index += 1
                    yield to_record(name, index, value)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            line = mark.line + 1 if mark is not None else None
            raise ReaderError(name, f"invalid YAML after {index} records: {problem}", line=line) from None
