"""``covidflow query``: one place, one metric, a date range; latest values or as of a vintage.

Reads Cassandra (the system of record) by default, Elasticsearch on request; both give the same rows.
The selection logic (newest vintage per key, as-of cut-off) is in pure functions the unit tests run.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import click

COLUMNS = ("date", "source_id", "period", "sex", "age_group", "variant", "upstream", "value", "unit", "vintage")
KEY = ("source_id", "date", "period", "sex", "age_group", "variant", "upstream")
MAX_VINTAGES_TRIED = 100


def parse_as_of(text: str) -> datetime:
    """A date means 'everything published up to the end of that day (UTC)'; a datetime is taken as is."""
    if len(text) == 10:
        return datetime.combine(date.fromisoformat(text), time(), UTC) + timedelta(days=1) - timedelta(microseconds=1)
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def newest_per_key(rows: Iterable[dict[str, Any]], as_of: datetime | None = None) -> list[dict[str, Any]]:
    """Keep, per (source, date, period, dimensions), the row with the newest vintage <= as_of; sorted (pure)."""
    best: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:
        vintage = _utc(row["vintage"])
        if as_of is not None and vintage > as_of:
            continue
        key = tuple(row[k] for k in KEY)
        if key not in best or vintage > _utc(best[key]["vintage"]):
            best[key] = row
    return [best[k] for k in sorted(best, key=lambda k: tuple(str(p) for p in k))]


def _cell(value: Any) -> Any:
    if isinstance(value, datetime):
        return _utc(value).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if hasattr(value, "date") and callable(value.date) and type(value).__name__ == "Date":  # cassandra.util.Date
        return value.date().isoformat()
    return value


def render(rows: list[dict[str, Any]], fmt: str) -> str:
    """table | csv | json text of the rows (pure)."""
    data = [{c: _cell(r.get(c)) for c in COLUMNS} for r in rows]
    if fmt == "json":
        return json.dumps(data, ensure_ascii=False, indent=1)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(data)
        return buf.getvalue().rstrip("\n")
    table = [COLUMNS, *[tuple("" if d[c] is None else str(d[c]) for c in COLUMNS) for d in data]]
    widths = [max(len(r[i]) for r in table) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in table)


def _as_date(value: Any) -> date:
    if isinstance(value, date):
        return value
    if type(value).__name__ == "Date":
        return value.date()
    return date.fromisoformat(str(value)[:10])


def query_cassandra(
    location: str, metric: str, start: date | None, end: date | None, as_of: datetime | None
) -> list[dict[str, Any]]:
    """Latest: observations_latest (newest vintage wins by write time). As of: per source, the newest
    vintage <= as_of (vintages_by_source) whose observations_by_vintage partition has this series."""
    from covidflow.catalog.schema import load_schema
    from covidflow.clients import cassandra_session as session

    ks = load_schema().cassandra["keyspace"]
    sess = session()  # shared by the process: its row factory is left alone (rows are named tuples)

    def dicts(rows: Any) -> list[dict[str, Any]]:
        return [row._asdict() for row in rows]

    where, params = "location_key = %s AND metric = %s", [location, metric]
    if start:
        where, params = where + " AND date >= %s", [*params, start]
    if end:
        where, params = where + " AND date <= %s", [*params, end]
    latest = dicts(sess.execute(f"SELECT * FROM {ks}.observations_latest WHERE {where}", params))
    if as_of is None:
        return newest_per_key(latest)
    out: list[dict[str, Any]] = []
    for source in sorted({r["source_id"] for r in latest}):
        vintages = sess.execute(
            f"SELECT vintage FROM {ks}.vintages_by_source WHERE source_id = %s AND vintage <= %s LIMIT %s",
            [source, as_of, MAX_VINTAGES_TRIED],
        )
        for v in dict.fromkeys(r.vintage for r in vintages):
            rows = dicts(sess.execute(
                f"SELECT * FROM {ks}.observations_by_vintage WHERE source_id = %s AND vintage = %s AND {where}",
                [source, v, *params],
            ))  # fmt: skip
            if rows:
                out.extend(rows)
                break
    return newest_per_key(out)


def query_elasticsearch(
    location: str, metric: str, start: date | None, end: date | None, as_of: datetime | None
) -> list[dict[str, Any]]:
    """Every vintage is its own document; the newest per key (<= as_of) is chosen here."""
    from elasticsearch import helpers

    from covidflow.clients import elasticsearch as client
    from covidflow.index.es_writer import write_alias

    flt: list[dict[str, Any]] = [{"term": {"location_key": location}}, {"term": {"metric": metric}}]
    if start or end:
        flt.append({"range": {"date": {k: v.isoformat() for k, v in (("gte", start), ("lte", end)) if v}}})
    if as_of:
        flt.append({"range": {"vintage": {"lte": as_of.isoformat()}}})
    alias = write_alias()
    rows = []
    for hit in helpers.scan(client(), index=alias, query={"query": {"bool": {"filter": flt}}}):
        doc = hit["_source"]
        doc["vintage"] = datetime.fromisoformat(doc["vintage"])
        doc["date"] = date.fromisoformat(doc["date"])
        rows.append(doc)
    return newest_per_key(rows, as_of)


@click.command()
@click.option("--location", required=True, help="Location key, e.g. FR-D75 (see docs/locations.md).")
@click.option("--metric", required=True, help="Metric name from include/metrics.yaml.")
@click.option("--from", "start", type=click.DateTime(["%Y-%m-%d"]), help="First date (inclusive).")
@click.option("--to", "end", type=click.DateTime(["%Y-%m-%d"]), help="Last date (inclusive).")
@click.option("--as-of", "as_of", help="Vintage cut-off: a date (end of that day, UTC) or an ISO datetime.")
@click.option("--store", type=click.Choice(["cassandra", "elasticsearch"]), default="cassandra", show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
def query(
    location: str,
    metric: str,
    start: datetime | None,
    end: datetime | None,
    as_of: str | None,
    store: str,
    fmt: str,
) -> None:
    """Values of one metric for one place: the latest vintage, or as published at --as-of."""
    import logging

    logging.getLogger("elastic_transport").setLevel(logging.WARNING)
    cut = parse_as_of(as_of) if as_of else None
    run = query_cassandra if store == "cassandra" else query_elasticsearch
    rows = run(location, metric, start.date() if start else None, end.date() if end else None, cut)
    for row in rows:
        row["date"] = _as_date(row["date"])
    click.echo(render(rows, fmt))
