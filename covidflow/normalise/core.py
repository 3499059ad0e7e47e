"""The normalisation core: (spec, raw record, provenance) -> canonical records, rejects and explained skips.

Pure Python, no I/O, no Airflow or Spark imports: the Airflow publish task and the Spark job both build one
:class:`Normaliser` per source and call :meth:`Normaliser.normalise` per raw record, so there is exactly one
implementation of every mapping rule. Deterministic: the same input gives the same records and ids.

Nothing is dropped silently: a value becomes a record, a ``Reject`` (with file, row, field and reason) or a
``Skip`` (an explained, expected omission: a spec filter, or a cell the publisher left empty).
"""

from __future__ import annotations

import importlib
import inspect
import posixpath
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from covidflow.catalog.locations import Location, LocationRegistry, load_registry
from covidflow.catalog.metrics import Metric, load_metrics
from covidflow.catalog.schema import ObservationSchema, load_schema, record_id
from covidflow.catalog.specs import SourceSpec, object_fields
from covidflow.read.base import RawRecord, RawReject
from covidflow.read.jsondoc import IGNORED_PREFIX

HOOK_PREFIX = "covidflow.sources.hooks."
_ISO_WEEK = re.compile(r"^(\d{4})-W?(\d{1,2})$")
_EMPTY = re.compile(r"^\s*$")
# Kinds whose values cannot be negative; shares cannot exceed 100 (percent).
_NON_NEGATIVE_KINDS = frozenset({"stock", "cumulative", "share"})


@dataclass(frozen=True)
class Provenance:
    """Where a raw record came from: the landed object and when it was landed and read."""

    object_key: str
    landed_at: datetime
    ingested_at: datetime
    object_version: str | None = None


@dataclass(frozen=True)
class Reject:
    """A value or row that could not become a canonical record; goes to the dead-letter topic."""

    source_id: str
    object_key: str
    row: int
    line: int | None
    field: str
    reason: str  # generic, for grouping ("unknown location")
    value: str = ""  # the offending value, for the message

    @property
    def message(self) -> str:
        where = f"{self.object_key} row {self.row}" + (f" (line {self.line})" if self.line else "")
        what = f": {self.value!r}" if self.value else ""
        return f"{where}: field {self.field!r}: {self.reason}{what}"


@dataclass(frozen=True)
class Skip:
    """An expected omission, explained by the spec (filter) or the publisher (empty = not reported)."""

    row: int
    field: str
    reason: str


@dataclass
class Result:
    records: list[dict[str, Any]] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    skips: list[Skip] = field(default_factory=list)


class _RowReject(Exception):
    def __init__(self, column: str, reason: str, value: Any = "") -> None:
        super().__init__(reason)
        self.column, self.reason, self.value = column, reason, "" if value is None else str(value)


def _parse_date(text: str, fmt: str) -> date:
    return datetime.strptime(text.strip(), fmt).date()


def name_vintage(
    rule: dict[str, Any], object_key: str, pattern: re.Pattern[str] | None = None
) -> tuple[date, time | None] | None:
    """The publication day (and hour:minute, if the pattern has them) in an object's name, per a ``file_name``
    vintage rule. None when the name does not match; ValueError when it matches but the date does not parse.

    The one implementation of the rule: the publisher uses it for a whole object, the core per record.
    """
    regex = pattern or (re.compile(rule["pattern"]) if rule.get("pattern") else None)
    m = regex.search(posixpath.basename(object_key)) if regex else None
    if not m:
        return None
    day = _parse_date(m.group("date"), rule.get("format", "%Y-%m-%d"))
    groups = m.groupdict()
    if groups.get("hour") is None and groups.get("minute") is None:
        return day, None
    return day, time(int(groups.get("hour") or 0), int(groups.get("minute") or 0))


def _load_hook(name: str) -> Callable[[dict[str, Any]], Iterable[dict[str, Any]]]:
    """Hooks live inside covidflow.sources.hooks only: specs can never name arbitrary code."""
    module, _, func = name.rpartition(".")
    if module != HOOK_PREFIX.rstrip(".") or not func.isidentifier() or func.startswith("_"):
        raise ValueError(f"hook {name!r} must be a public function directly in {HOOK_PREFIX.rstrip('.')}")
    hook = getattr(importlib.import_module(module), func, None)
    if not inspect.isfunction(hook) or hook.__module__ != module:  # not a name hooks.py merely imports
        raise ValueError(f"hook {name!r}: no such function in {module}")
    return hook


class Normaliser:
    """One source's mapping rules, compiled once; call :meth:`normalise` for every raw record."""

    def __init__(
        self,
        spec: SourceSpec,
        *,
        registry: LocationRegistry | None = None,
        metrics: dict[str, Metric] | None = None,
        schema: ObservationSchema | None = None,
    ) -> None:
        self.spec = spec
        self.registry = registry or load_registry()
        self.metrics = metrics or load_metrics()
        self.schema = schema or load_schema()
        d = spec.data
        self.hook = _load_hook(d["hook"]) if d.get("hook") else None
        self.filters = [
            (f["column"], set(f.get("in", [])) or None, set(f.get("not_in", [])) or None,
             re.compile(f["matches"]) if f.get("matches") else None, f["reason"])
            for f in d.get("filters", [])
        ]  # fmt: skip
        up = d.get("unpivot")
        self.unpivot = up
        self.unpivot_rx = re.compile(up["columns"]) if up and up.get("columns") else None
        self.location = d["location"]
        self.date = d["date"]
        self.date_format = self.date.get("format", "%Y-%m-%d")
        self.period = self.date.get("period", "week" if self.date_format == "iso_week" else "day")
        value = d.get("value", {})
        self.value_rx = re.compile(value["pattern"]) if value.get("pattern") else None
        self.decimal_comma = value.get("decimal") == ","
        self.value_skips = [(re.compile(rx), reason) for rx, reason in (value.get("skip") or {}).items()]
        self.value_skips.append((_EMPTY, "empty cell: not reported by the publisher"))
        self.absent_skip = d.get("absent_metric_columns") == "skip"
        self.dimensions = d.get("dimensions", {})
        rules = d.get("validate", {})
        allow = set(rules.get("allow_negative", []))
        self.non_negative = {
            m for m, meta in self.metrics.items() if meta.kind in _NON_NEGATIVE_KINDS and m not in allow
        } | set(rules.get("non_negative", []))
        self.maximum = {m: 100.0 for m, meta in self.metrics.items() if meta.kind == "share"} | rules.get("max", {})
        self.vintage = d["vintage"]
        self.vintage_rx = re.compile(self.vintage["pattern"]) if self.vintage.get("pattern") else None
        self._object_fields: tuple[str, dict[str, str]] = ("", {})  # (object key, its @object.* columns)
        self._nested = "records" in (d.get("reader") or {})  # nested documents: lists dropped as @ignored.*

    # -- public -------------------------------------------------------------------------------------------

    def normalise(self, raw: RawRecord | RawReject, prov: Provenance) -> Result:
        """All canonical records one raw record yields, plus rejects and skips; never raises on bad data."""
        result = Result()
        if isinstance(raw, RawReject):
            result.rejects.append(self._reject(raw.index, raw.line, prov, "(record)", "unreadable record", raw.reason))
            return result
        if self._object_fields[0] != prov.object_key:  # constant per object: computed once per object
            self._object_fields = (prov.object_key, object_fields(self.spec.data, prov.object_key))
        fields = {**raw.fields, **self._object_fields[1]} if self._object_fields[1] else raw.fields
        if self._nested:  # the reader dropped lists inside the record (individual cases): say so
            ignored = {k: v for k, v in fields.items() if k.startswith(IGNORED_PREFIX)}
            result.skips += [Skip(raw.index, k[len(IGNORED_PREFIX) :], str(v)) for k, v in ignored.items()]
            fields = {k: v for k, v in fields.items() if k not in ignored} if ignored else fields
        try:
            rows = list(self.hook(dict(fields))) if self.hook else [fields]
        except Exception as exc:  # a hook bug must not kill the stream: reject the record, name the error
            result.rejects.append(self._reject(raw.index, raw.line, prov, "(hook)", "hook failed", repr(exc)))
            return result
        if not rows:
            result.skips.append(Skip(raw.index, "(hook)", "hook produced no rows"))
        for row in rows:
            for long_row in self._unpivot(row):
                skipped = self._filtered(long_row)
                if skipped:
                    result.skips.append(Skip(raw.index, *skipped))
                    continue
                try:
                    self._one_row(long_row, raw, prov, result)
                except _RowReject as exc:
                    result.rejects.append(self._reject(raw.index, raw.line, prov, exc.column, exc.reason, exc.value))
        return result

    # -- steps --------------------------------------------------------------------------------------------

    def _reject(self, row: int, line: int | None, prov: Provenance, col: str, reason: str, value: str) -> Reject:
        return Reject(self.spec.id, prov.object_key, row, line, col, reason, value)

    @staticmethod
    def _cell(row: dict[str, Any], column: str) -> Any:
        if column not in row:
            raise _RowReject(column, "missing column")
        return row[column]

    def _filtered(self, row: dict[str, Any]) -> tuple[str, str] | None:
        for column, isin, notin, rx, reason in self.filters:
            value = "" if row.get(column) is None else str(row.get(column))
            if (isin and value in isin) or (notin and value not in notin) or (rx and rx.search(value)):
                return column, reason
        return None

    def _unpivot(self, row: dict[str, Any]) -> Iterable[dict[str, Any]]:
        if not self.unpivot:
            yield row
            return
        exclude = set(self.unpivot.get("exclude", []))
        wide = [c for c in row if c not in exclude and (not self.unpivot_rx or self.unpivot_rx.search(c))]
        keep = {k: v for k, v in row.items() if k not in wide}
        for column in wide:
            yield {**keep, self.unpivot["name"]: column, self.unpivot["value"]: row[column]}

    def _place(self, row: dict[str, Any]) -> Location:
        spec = self.location
        columns = spec.get("columns") or [spec["column"]]
        raw_values = [self._cell(row, c) for c in columns]
        column, value = next(
            ((c, str(v).strip()) for c, v in zip(columns, raw_values, strict=True) if v is not None and str(v).strip()),
            (columns[-1], ""),
        )
        if not value:
            raise _RowReject(column, "empty location")
        if value in spec.get("aliases", {}):
            return self.registry.get(spec["aliases"][value])
        scheme, code = spec["scheme"], value
        for prefix, prefix_scheme in spec.get("prefixes", {}).items():
            if value.startswith(prefix):
                scheme, code = prefix_scheme, value[len(prefix) :]
                break
        country = row.get(spec["country_column"]) if spec.get("country_column") else None
        place = self.registry.resolve(code, scheme, country=None if country is None else str(country))
        if place is None:
            raise _RowReject(column, f"unknown location ({scheme})", value)
        return place

    def _point(self, row: dict[str, Any]) -> dict[str, float] | None:
        lat_col, lon_col = self.location.get("lat"), self.location.get("lon")
        if not lat_col or not lon_col:
            return None
        try:
            lat, lon = float(row.get(lat_col)), float(row.get(lon_col))
        except (TypeError, ValueError):
            return None
        return {"lat": lat, "lon": lon} if -90 <= lat <= 90 and -180 <= lon <= 180 else None

    def _dates(self, row: dict[str, Any], vintage: datetime) -> tuple[date, date]:
        if "vintage_offset_days" in self.date:
            day = vintage.date() + timedelta(days=self.date["vintage_offset_days"])
            return day, day
        column = self.date["column"]
        raw = self._cell(row, column)
        text = "" if raw is None else str(raw).strip()
        try:
            if self.date_format == "iso_week":
                m = _ISO_WEEK.match(text)
                if not m:
                    raise ValueError(text)
                start = date.fromisocalendar(int(m.group(1)), int(m.group(2)), 1)
                return start, start + timedelta(days=6)
            day = _parse_date(text, self.date_format)
        except ValueError:
            raise _RowReject(column, f"unparsable date (expected {self.date_format})", text) from None
        if self.period == "week":
            if self.date.get("week_ends_on_date", True):
                return day - timedelta(days=6), day
            return day, day + timedelta(days=6)
        return day, day

    def _dimension(self, row: dict[str, Any], name: str) -> str:
        rule = self.dimensions.get(name)
        if rule is None:
            return self.schema.dimension_defaults[name]
        if isinstance(rule, str):
            return rule
        raw = self._cell(row, rule["column"])
        text = "" if raw is None else str(raw).strip()
        mapping = rule.get("map")
        if mapping is not None:
            if text in mapping:
                return mapping[text]
            if rule.get("strict", True):
                raise _RowReject(rule["column"], f"unknown {name} value (not in the spec's map)", text)
        if not text:
            raise _RowReject(rule["column"], f"empty {name}")
        return text

    def _metric_cells(self, row: dict[str, Any]) -> list[tuple[str, str]]:
        """(column, metric) pairs to read from this row."""
        if "metrics" in self.spec.data:
            return list(self.spec["metrics"].items())
        metric = self.spec["metric"]
        if isinstance(metric, str):
            return [(self.spec["value"]["column"], metric)]
        raw = self._cell(row, metric["column"])
        text = "" if raw is None else str(raw).strip()
        if text not in metric["map"]:
            raise _RowReject(metric["column"], "unknown metric value (not in the spec's map)", text)
        return [(self.spec["value"]["column"], metric["map"][text])]

    def _number(self, column: str, cell: Any) -> float | str:
        """The value, or the reason to skip it (str)."""
        if isinstance(cell, bool):
            raise _RowReject(column, "not a number", cell)
        if isinstance(cell, (int, float)) or (cell is not None and type(cell).__name__ == "Decimal"):
            return float(cell)
        text = "" if cell is None else str(cell)
        for rx, reason in self.value_skips:
            if rx.search(text):
                return reason
        if self.value_rx:
            m = self.value_rx.search(text)
            if not m:
                raise _RowReject(column, f"value does not match pattern {self.value_rx.pattern}", text)
            text = m.group("value")
        text = text.strip().replace("\u202f", "").replace(" ", "")
        if self.decimal_comma:
            text = text.replace(".", "").replace(",", ".")
        try:
            number = float(text)
        except ValueError:
            raise _RowReject(column, "not a number", cell) from None
        if number != number or number in (float("inf"), float("-inf")):
            raise _RowReject(column, "not a finite number", cell)
        return number

    def vintage_of(self, row: dict[str, Any], prov: Provenance) -> tuple[datetime, str]:
        """When the source published the value, and how we know (file_name | column | landed_at)."""
        rule = self.vintage
        if rule["from"] == "file_name":
            named = name_vintage(rule, prov.object_key, self.vintage_rx)
            if named:
                day, hm = named
                return datetime.combine(day, hm or time(), tzinfo=UTC), "file_name"
            if rule.get("fallback") != "landed_at":
                raise _RowReject("(vintage)", "object name does not match the vintage pattern", prov.object_key)
        elif rule["from"] == "column":
            text = str(self._cell(row, rule["column"]) or "").strip()
            try:
                return datetime.combine(_parse_date(text, rule.get("format", "%Y-%m-%d")), time(), UTC), "column"
            except ValueError:
                raise _RowReject(rule["column"], "unparsable vintage date", text) from None
        landed = prov.landed_at if prov.landed_at.tzinfo else prov.landed_at.replace(tzinfo=UTC)
        return landed.astimezone(UTC), "landed_at"

    def _one_row(self, row: dict[str, Any], raw: RawRecord, prov: Provenance, result: Result) -> None:
        place = self._place(row)
        vintage, basis = self.vintage_of(row, prov)
        start, end = self._dates(row, vintage)
        dims = {name: self._dimension(row, name) for name in self.schema.dimensions}
        parent = self.registry.parent(place)
        point = self._point(row)
        for column, metric_name in self._metric_cells(row):
            if self.absent_skip and column not in row:
                result.skips.append(Skip(raw.index, column, "absent key: not reported by the publisher"))
                continue
            try:
                number = self._number(column, self._cell(row, column))
            except _RowReject as exc:
                result.rejects.append(self._reject(raw.index, raw.line, prov, exc.column, exc.reason, exc.value))
                continue
            if isinstance(number, str):
                result.skips.append(Skip(raw.index, column, number))
                continue
            if number < 0 and metric_name in self.non_negative:
                reason = f"negative value for {metric_name} ({self.metrics[metric_name].kind})"
                result.rejects.append(self._reject(raw.index, raw.line, prov, column, reason, _fmt(number)))
                continue
            if metric_name in self.maximum and number > self.maximum[metric_name]:
                reason = f"{metric_name} above {_fmt(self.maximum[metric_name])}"
                result.rejects.append(self._reject(raw.index, raw.line, prov, column, reason, _fmt(number)))
                continue
            metric = self.metrics[metric_name]
            record = {
                "record_id": "",
                "schema_version": self.schema.version,
                "source_id": self.spec.id,
                "location_key": place.key,
                "location_level": place.level,
                "location_name": place.name,
                "location_parent_key": parent.key if parent else None,
                "location_parent_name": parent.name if parent else None,
                "location_point": point,
                "date": end,
                "period": self.period,
                "period_start": start,
                "metric": metric_name,
                "metric_kind": metric.kind,
                "unit": metric.unit,
                "value": number,
                **dims,
                "vintage": vintage,
                "vintage_basis": basis,
                "source_object_key": prov.object_key,
                "source_object_version": prov.object_version,
                "source_row": raw.index,
                "ingested_at": prov.ingested_at,
            }
            record["record_id"] = record_id(record, self.schema)
            result.records.append(record)


def _fmt(number: float) -> str:
    return str(int(number)) if number == int(number) else str(number)
