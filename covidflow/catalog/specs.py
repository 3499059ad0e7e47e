"""Source specs (include/sources/<id>.yaml): safe YAML with line numbers, JSON Schema, then semantic checks.

Every error names the file, the line and the field (``spf.yaml:12: metrics.hosp: 'hospital' is not a metric``)
so a data engineer can fix a spec without reading Python.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from covidflow import PROJECT_ROOT
from covidflow.catalog.locations import load_registry
from covidflow.catalog.metrics import load_metrics

SOURCES_DIR = PROJECT_ROOT / "include" / "sources"
SAMPLES_DIR = PROJECT_ROOT / "include" / "samples"
SPEC_SCHEMA_PATH = PROJECT_ROOT / "include" / "schemas" / "source_spec.schema.json"
#: Columns a spec may read from the landed object's name rather than from the records (``object.pattern``).
OBJECT_FIELD_PREFIX = "@object."


@dataclass(frozen=True)
class SpecProblem:
    file: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.field or '(top)'}: {self.message}"


class SpecError(ValueError):
    """A spec is invalid; ``problems`` lists every error found, each naming file, line and field."""

    def __init__(self, problems: list[SpecProblem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


@dataclass(frozen=True)
class SourceSpec:
    id: str
    path: Path
    data: dict[str, Any]

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    @property
    def sample_path(self) -> Path | None:
        sample = self.data.get("sample")
        return SAMPLES_DIR / sample if sample else None


@cache
def _object_regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def object_fields(spec_data: dict[str, Any], object_key: str) -> dict[str, str]:
    """Constant columns of every record of one object, read from its file name by the spec's ``object.pattern``.

    Each named group becomes ``@object.<group>`` (JHU's ``time_series_covid19_deaths_global.csv`` ->
    ``{"@object.metric": "deaths"}``), which the spec then maps like any column (``metric: {column: ...}``).
    The one implementation: the per-record core merges it into each raw record, the columnar core appends it as
    constant columns. Empty when the spec has no ``object`` rule or the name does not match (preview warns).
    """
    rule = spec_data.get("object")
    if not rule:
        return {}
    m = _object_regex(rule["pattern"]).search(object_key.rsplit("/", 1)[-1])
    if not m:
        return {}
    return {f"{OBJECT_FIELD_PREFIX}{k}": v for k, v in m.groupdict().items() if v is not None}


def _columns_read(data: dict[str, Any]) -> list[tuple[tuple[Any, ...], str]]:
    """(spec path, column) of every column a spec reads by name, for checks on reserved names."""
    out: list[tuple[tuple[Any, ...], str]] = []
    metric = data.get("metric")
    if isinstance(metric, dict):
        out.append((("metric", "column"), metric["column"]))
    for name, rule in (data.get("dimensions") or {}).items():
        if isinstance(rule, dict):
            out.append((("dimensions", name, "column"), rule["column"]))
    for i, f in enumerate(data.get("filters") or []):
        out.append((("filters", i, "column"), f["column"]))
    loc = data.get("location") or {}
    out += [(("location", "column"), loc["column"])] if loc.get("column") else []
    out += [(("location", "columns", i), c) for i, c in enumerate(loc.get("columns") or [])]
    return out


def _lines(node: yaml.Node, path: tuple[Any, ...] = (), out: dict[tuple[Any, ...], int] | None = None) -> dict:
    """Map each path in the YAML document to its 1-based line."""
    out = {} if out is None else out
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            out[(*path, key)] = key_node.start_mark.line + 1
            _lines(value_node, (*path, key), out)
            out[(*path, key)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _lines(item, (*path, i), out)
    return out


def _line_of(lines: dict[tuple[Any, ...], int], path: tuple[Any, ...]) -> int | None:
    while path and path not in lines:
        path = path[:-1]
    return lines.get(path)


def _dotted(path: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in path)


@cache
def _validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SPEC_SCHEMA_PATH.read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema)


def _semantic(data: dict[str, Any]) -> list[tuple[tuple[Any, ...], str]]:
    """Checks JSON Schema cannot express: metric names, reader options, regexes, file name = id."""
    from covidflow.read import FORMATS, READER_OPTIONS

    problems: list[tuple[tuple[Any, ...], str]] = []
    metrics = load_metrics()
    fmt = data.get("format")
    if fmt not in FORMATS:
        problems.append((("format",), f"unknown format {fmt!r} (readers available: {', '.join(sorted(FORMATS))})"))
    else:
        for opt in data.get("reader", {}) or {}:
            if opt not in READER_OPTIONS[fmt]:
                accepted = ", ".join(sorted(READER_OPTIONS[fmt]))
                problems.append((("reader", opt), f"option {opt!r} is not accepted by format {fmt} ({accepted})"))
        if fmt in ("json", "yaml") and isinstance(data.get("reader"), dict):
            from covidflow.read.jsondoc import nested_options_problems

            path = ("reader", "records") if "records" in data["reader"] else ("reader",)
            problems += [(path, message) for message in nested_options_problems(data["reader"])]
    for col, name in (data.get("metrics") or {}).items():
        if name not in metrics:
            problems.append((("metrics", col), f"{name!r} is not a metric in include/metrics.yaml"))
    metric = data.get("metric")
    if isinstance(metric, str) and metric not in metrics:
        problems.append((("metric",), f"{metric!r} is not a metric in include/metrics.yaml"))
    if isinstance(metric, dict):
        for raw, name in metric.get("map", {}).items():
            if name not in metrics:
                problems.append((("metric", "map", raw), f"{name!r} is not a metric in include/metrics.yaml"))
    for section, key in (("validate", "non_negative"), ("validate", "allow_negative")):
        for i, name in enumerate((data.get(section) or {}).get(key, [])):
            if name not in metrics:
                problems.append(((section, key, i), f"{name!r} is not a metric in include/metrics.yaml"))
    registry = load_registry()
    for raw, key in ((data.get("location") or {}).get("aliases") or {}).items():
        if not registry.knows(key):
            problems.append((("location", "aliases", raw), f"{key!r} is not a key in include/locations/"))
    regexes = [
        (("unpivot", "columns"), (data.get("unpivot") or {}).get("columns")),
        (("value", "pattern"), (data.get("value") or {}).get("pattern")),
        (("vintage", "pattern"), (data.get("vintage") or {}).get("pattern")),
        *((("filters", i, "matches"), f.get("matches")) for i, f in enumerate(data.get("filters") or [])),
        *((("value", "skip", rx), rx) for rx in ((data.get("value") or {}).get("skip") or {})),
    ]
    for path, rx in regexes:
        if rx is None:
            continue
        try:
            re.compile(rx)
        except re.error as exc:
            problems.append((path, f"invalid regular expression: {exc}"))
    object_rule = data.get("object") or {}
    groups: set[str] = set()
    if object_rule:
        try:
            groups = set(re.compile(object_rule["pattern"]).groupindex)
        except re.error as exc:
            problems.append((("object", "pattern"), f"invalid regular expression: {exc}"))
        else:
            if not groups:
                problems.append((("object", "pattern"), "needs at least one named group, e.g. (?P<metric>[a-z]+)"))
    unpivot = data.get("unpivot") or {}
    if object_rule and unpivot and not unpivot.get("columns"):
        problems.append((("unpivot",), "with object.pattern, unpivot needs columns (a regex): @object.* are not wide"))
    for path, column in _columns_read(data):
        if column.startswith(OBJECT_FIELD_PREFIX) and column[len(OBJECT_FIELD_PREFIX) :] not in groups:
            where = "object.pattern has no such named group" if object_rule else "the spec has no object.pattern"
            problems.append((path, f"{column!r} reads the object's name, but {where}"))
    vintage = data.get("vintage") or {}
    if vintage.get("from") == "file_name" and "(?P<date>" not in (vintage.get("pattern") or ""):
        problems.append((("vintage", "pattern"), "from: file_name needs a pattern with a group named date"))
    if vintage.get("from") == "column" and not vintage.get("column"):
        problems.append((("vintage", "column"), "from: column needs column"))
    return problems


def load_spec(path: Path | str) -> SourceSpec:
    """Load and validate one spec; raise SpecError listing every problem with file, line and field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError([SpecProblem(str(path), None, "", f"cannot read: {exc}")]) from None
    return parse_spec(text, path)


def parse_spec(text: str, path: Path | str) -> SourceSpec:
    """Validate a spec's text as if read from ``path`` (the stream gets specs as text from its driver)."""
    path = Path(path)
    name = str(path)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        refused = "could not determine a constructor" in str(getattr(exc, "problem", ""))  # a !!python/... tag
        what = "YAML tag refused (specs are plain data)" if refused else "YAML syntax"
        raise SpecError([SpecProblem(name, line, "", f"{what}: {getattr(exc, 'problem', exc)}")]) from None
    if not isinstance(data, dict) or node is None:
        raise SpecError([SpecProblem(name, 1, "", "a spec must be a YAML mapping")])
    lines = _lines(node)
    problems = []
    for err in sorted(_validator().iter_errors(data), key=lambda e: list(map(str, e.absolute_path))):
        path_t = tuple(err.absolute_path)
        problems.append(SpecProblem(name, _line_of(lines, path_t), _dotted(path_t), err.message))
    if not problems:
        for path_t, message in _semantic(data):
            problems.append(SpecProblem(name, _line_of(lines, path_t), _dotted(path_t), message))
        if data["id"] != path.stem:
            problems.append(SpecProblem(name, lines.get(("id",)), "id", f"id {data['id']!r} must equal file name"))
    if problems:
        raise SpecError(problems)
    return SourceSpec(data["id"], path, data)


def spec_paths(directory: Path = SOURCES_DIR) -> list[Path]:
    return sorted(Path(directory).glob("*.yaml"))


def load_all(directory: Path = SOURCES_DIR) -> dict[str, SourceSpec]:
    """Every spec by id; the first invalid one raises (use ``sources validate`` to see them all)."""
    return {spec.id: spec for spec in (load_spec(p) for p in spec_paths(directory))}


def find_spec(source_id: str, directory: Path = SOURCES_DIR) -> SourceSpec:
    path = Path(directory) / f"{source_id}.yaml"
    if not path.exists():
        known = ", ".join(p.stem for p in spec_paths(directory))
        raise SpecError([SpecProblem(str(path), None, "id", f"no spec for source {source_id!r} (known: {known})")])
    return load_spec(path)
