"""Quality checks over what was stored (per source and vintage), and the schema-drift guard of the ingest path.

Pure functions over plain records (dicts with the canonical fields: location_key, metric, metric_kind, date,
value, period and dimensions), so the same checks run on Cassandra rows, test data or a replay. Each check
returns ``Finding``s; the severity (blocking or warning) comes from include/config/quality.yaml, never from code.

The drift guard runs *before* anything is written: ``guard_drift`` peeks at the first records of an object,
compares their columns with the columns the spec maps, and raises ``SchemaDrift`` eagerly (at call time, before
the caller's producer starts a transaction) when a blocking column change is found.
"""

from __future__ import annotations

import itertools
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

DIMENSIONS = ("period", "sex", "age_group", "variant", "upstream")


@dataclass
class Finding:
    """One problem: XCom, log line and Elasticsearch document."""

    check: str
    severity: str  # blocking | warning
    source_id: str
    message: str
    series: str = ""
    count: int = 1
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def blocking(self) -> bool:
        return self.severity == "blocking"

    def line(self) -> str:
        where = f" [{self.series}]" if self.series else ""
        return f"{self.severity.upper()} {self.check} {self.source_id}{where}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class SchemaDrift(ValueError):
    """The latest file's columns do not match the spec; nothing of the object was written."""

    def __init__(self, name: str, findings: list[Finding]) -> None:
        self.findings = findings
        lines = "; ".join(f.message for f in findings if f.blocking)
        super().__init__(f"{name}: schema drift, nothing written: {lines}")


def _severity(config: Mapping[str, Any], check: str) -> str:
    return config.get("checks", {}).get(check, {}).get("severity", "blocking")


def _opt(config: Mapping[str, Any], check: str, key: str, default: Any) -> Any:
    return config.get("checks", {}).get(check, {}).get(key, default)


# -- schema drift ---------------------------------------------------------------------------------------------


def mapped_columns(spec: Mapping[str, Any]) -> tuple[set[str], re.Pattern[str] | None, set[str]]:
    """(columns the spec reads, regex of unpivoted value columns or None, columns known but not required)."""
    cols: set[str] = set()
    loc = spec.get("location") or {}
    cols |= {c for c in [loc.get("column"), loc.get("lat"), loc.get("lon"), loc.get("country_column")] if c}
    cols |= set(loc.get("columns") or [])
    if (spec.get("date") or {}).get("column"):
        cols.add(spec["date"]["column"])
    cols |= set(spec.get("metrics") or {})
    metric = spec.get("metric")
    if isinstance(metric, dict):
        cols.add(metric["column"])
    if (spec.get("value") or {}).get("column"):
        cols.add(spec["value"]["column"])
    for dim in (spec.get("dimensions") or {}).values():
        if isinstance(dim, dict) and dim.get("column"):
            cols.add(dim["column"])
    cols |= {f["column"] for f in spec.get("filters") or []}
    vintage = spec.get("vintage") or {}
    if vintage.get("from") == "column" and vintage.get("column"):
        cols.add(vintage["column"])
    unpivot = spec.get("unpivot") or {}
    known = set(unpivot.get("exclude") or [])
    if unpivot:
        # After unpivoting, name/value are produced by the reader-side transform, not file columns.
        cols -= {unpivot.get("name"), unpivot.get("value")}
        # Location/date columns of unpivoted rows may be the unpivot's own name column.
    rx = re.compile(unpivot["columns"]) if unpivot.get("columns") else None
    # "@object.*" (from the object's name) and "@ignored.*" (nested lists) are made by covidflow, never file columns.
    return {c for c in cols if not c.startswith("@")}, rx, known


def schema_drift(
    source_id: str, spec: Mapping[str, Any], columns: Iterable[str], config: Mapping[str, Any]
) -> list[Finding]:
    """Columns the spec maps that are missing, and unmapped columns that appeared, in one file's records."""
    present = set(columns)
    required, value_rx, known = mapped_columns(spec)
    known |= set((config.get("drift", {}).get("ignore_columns") or {}).get(source_id) or [])
    unpivot = spec.get("unpivot") or {}
    out: list[Finding] = []
    missing_sev = _severity(config, "drift_missing_column")
    optional = spec.get("absent_metric_columns") == "skip"  # JSON: an absent key means not reported
    for col in sorted(required - present):
        sev = "warning" if (optional and col in (spec.get("metrics") or {})) or spec.get("hook") else missing_sev
        out.append(Finding("drift_missing_column", sev, source_id, f"column {col!r} mapped by the spec is missing"))
    if unpivot:
        values = {c for c in present - required - known if value_rx is None or value_rx.search(c)}
        if not values:
            out.append(Finding("drift_missing_column", missing_sev, source_id, "no column to unpivot"))
        extra = present - required - known - values
    else:
        extra = present - required - known
    for col in sorted(extra):
        out.append(
            Finding("drift_new_column", _severity(config, "drift_new_column"), source_id,
                    f"column {col!r} appeared and is not mapped by the spec")
        )  # fmt: skip
    return out


def peek_columns(records: Iterable[Any], limit: int) -> tuple[set[str], Iterator[Any]]:
    """The union of field names over the first ``limit`` raw records, and an iterator that still yields them all.

    ``records`` may also be raw batches (``read_batches``): a batch counts its rows and names its columns, so the
    peek stays bounded by records, not chunks.
    """
    it = iter(records)
    head: list[Any] = []
    cols: set[str] = set()
    seen = 0
    while seen < limit:
        item = next(it, _END)
        if item is _END:
            break
        head.append(item)
        if isinstance(item, list):  # raw records that do not fit Arrow columns
            seen += len(item)
            for rec in item:
                cols |= set(rec.fields)
        elif hasattr(item, "schema") and hasattr(item, "num_rows"):  # a raw batch
            seen += item.num_rows
            cols |= set(item.schema.names) - {"__row", "__line"}  # covidflow.read.batch.ROW, LINE
        else:
            seen += 1
            cols |= set(getattr(item, "fields", None) or {})
    return cols, itertools.chain(head, it)


_END = object()


def guard_drift(
    source_id: str, spec: Mapping[str, Any], records: Iterable[Any], config: Mapping[str, Any], *, name: str
) -> tuple[Iterator[Any], list[Finding]]:
    """Raise SchemaDrift now if a blocking drift is found; else return (all records, warning findings).

    Call it on the reader's iterator before publishing. A ReaderError while peeking propagates unchanged.
    """
    columns, replay = peek_columns(records, int(config.get("drift", {}).get("peek_records", 1000)))
    if not columns:  # nothing readable in the head: the reader's own errors say why
        return replay, []
    findings = schema_drift(source_id, spec, columns, config)
    if any(f.blocking for f in findings):
        raise SchemaDrift(name, findings)
    return replay, findings


# -- checks over stored records -------------------------------------------------------------------------------


def _day(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if hasattr(value, "date") and callable(value.date):  # cassandra.util.Date
        return value.date()
    return date.fromisoformat(str(value)[:10])


def series_key(rec: Mapping[str, Any]) -> str:
    dims = "|".join(str(rec.get(d) or "") for d in DIMENSIONS)
    return f"{rec.get('location_key')}|{rec.get('metric')}|{dims}"


def group_series(records: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """Series key -> records sorted by date."""
    out: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for rec in records:
        out[series_key(rec)].append(rec)
    return {k: sorted(v, key=lambda r: _day(r["date"])) for k, v in sorted(out.items())}


def impossible_values(
    source_id: str, records: Iterable[Mapping[str, Any]], reference_day: date, config: Mapping[str, Any]
) -> list[Finding]:
    """Negative stocks/cumulatives/shares, shares above 100 %, observations dated in the future."""
    kinds = set(_opt(config, "negative_value", "kinds", ["stock", "cumulative", "share"]))
    latest = reference_day + timedelta(days=int(_opt(config, "future_date", "allowance_days", 1)))
    bad: dict[tuple[str, str], list[str]] = defaultdict(list)
    for rec in records:
        value, kind, key, day = rec.get("value"), rec.get("metric_kind"), series_key(rec), _day(rec["date"])
        if value is not None and kind in kinds and value < 0:
            bad[("negative_value", key)].append(f"{day}={value:g}")
        if value is not None and kind == "share" and value > 100:
            bad[("share_above_100", key)].append(f"{day}={value:g}")
        if day > latest:
            bad[("future_date", key)].append(f"{day} > {latest}")
    what = {"negative_value": "negative value(s) of a", "share_above_100": "share(s) above 100 % in a",
            "future_date": "date(s) in the future in a"}  # fmt: skip
    return [
        Finding(check, _severity(config, check), source_id,
                f"{len(items)} {what[check]} series: {', '.join(items[:3])}", key, len(items))
        for (check, key), items in sorted(bad.items())
    ]  # fmt: skip


def cumulative_drops(
    source_id: str, series: Mapping[str, list[Mapping[str, Any]]], config: Mapping[str, Any]
) -> list[Finding]:
    """Cumulative series whose value goes down from one date to the next."""
    tol = float(_opt(config, "cumulative_drop", "tolerance_ratio", 0.0))
    out = []
    for key, recs in series.items():
        if not recs or recs[0].get("metric_kind") != "cumulative":
            continue
        points = [(_day(r["date"]), r["value"]) for r in recs if r.get("value") is not None]
        drops = [
            f"{d0}={v0:g} -> {d1}={v1:g}"
            for (d0, v0), (d1, v1) in itertools.pairwise(points)
            if v1 < v0 and (v0 - v1) > tol * abs(v0)
        ]
        if drops:
            out.append(Finding("cumulative_drop", _severity(config, "cumulative_drop"), source_id,
                               f"cumulative series goes down {len(drops)} time(s): {', '.join(drops[:3])}",
                               key, len(drops)))  # fmt: skip
    return out


def jumps(source_id: str, series: Mapping[str, list[Mapping[str, Any]]], config: Mapping[str, Any]) -> list[Finding]:
    """A value more than ``factor`` times the previous one (previous at least ``min_base``)."""
    factor = float(_opt(config, "jump", "factor", 10))
    base = float(_opt(config, "jump", "min_base", 10))
    kinds = set(_opt(config, "jump", "kinds", ["stock", "daily_flow", "weekly_flow", "cumulative"]))
    out = []
    for key, recs in series.items():
        if not recs or recs[0].get("metric_kind") not in kinds:
            continue
        points = [(_day(r["date"]), r["value"]) for r in recs if r.get("value") is not None]
        found = [
            f"{d0}={v0:g} -> {d1}={v1:g} (x{v1 / v0:.1f})"
            for (d0, v0), (d1, v1) in itertools.pairwise(points)
            if v0 >= base and v1 > factor * v0
        ]
        if found:
            message = f"{len(found)} jump(s) above x{factor:g}: {', '.join(found[:3])}"
            out.append(Finding("jump", _severity(config, "jump"), source_id, message, key, len(found)))
    return out


def empty_series(
    source_id: str, series: Mapping[str, list[Mapping[str, Any]]], config: Mapping[str, Any]
) -> list[Finding]:
    """Series whose every value is 0, or missing (null)."""
    out = []
    for key, recs in series.items():
        values = [r.get("value") for r in recs]
        if values and all(v is None for v in values) and len(values) >= int(_opt(config, "all_null", "min_points", 1)):
            out.append(Finding("all_null", _severity(config, "all_null"), source_id,
                               f"all {len(values)} values are null", key, len(values)))  # fmt: skip
        elif values and all(v == 0 for v in values) and len(values) >= int(_opt(config, "all_zero", "min_points", 3)):
            out.append(Finding("all_zero", _severity(config, "all_zero"), source_id,
                               f"all {len(values)} values are 0", key, len(values)))  # fmt: skip
    return out


def check_records(
    source_id: str, records: Iterable[Mapping[str, Any]], reference_day: date, config: Mapping[str, Any]
) -> list[Finding]:
    """Every stored-data check over one source's records (one vintage)."""
    records = list(records)
    series = group_series(records)
    return [
        *impossible_values(source_id, records, reference_day, config),
        *cumulative_drops(source_id, series, config),
        *jumps(source_id, series, config),
        *empty_series(source_id, series, config),
    ]


def summarise(source_id: str, findings: list[Finding], records: int) -> dict[str, Any]:
    """The per-source report (XCom): counts by severity and check, and the lines."""
    by_check: dict[str, int] = defaultdict(int)
    for f in findings:
        by_check[f.check] += 1
    return {
        "source_id": source_id,
        "records": records,
        "blocking": sum(f.blocking for f in findings),
        "warnings": sum(not f.blocking for f in findings),
        "by_check": dict(sorted(by_check.items())),
        "lines": [f.line() for f in findings],
    }
