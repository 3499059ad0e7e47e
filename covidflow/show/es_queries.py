"""Elasticsearch request bodies for the dashboard, and the pure functions that read their answers.

Latest-vintage semantics: a value is the one of the newest vintage for its point (place, day, metric,
dimensions). Every query groups by point and keeps one ``top_hits`` ordered by ``vintage`` then
``ingested_at``, both descending, so a re-published figure replaces the old one.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

LATEST = {"sort": [{"vintage": "desc"}, {"ingested_at": "desc"}], "size": 1, "_source": ["value", "source_id"]}
ALL_DIMS = ({"term": {"sex": "all"}}, {"term": {"age_group": "all"}})
MAX_PLACES = 500
MAX_DAYS = 1100


def _filters(
    metric: str,
    *,
    places: Sequence[str] | None = None,
    level: str | None = None,
    start: dt.date | None = None,
    end: dt.date | None = None,
    source: str | None = None,
    variant: str | None = "all",
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"term": {"metric": metric}}, *ALL_DIMS]
    if variant is not None:
        out.append({"term": {"variant": variant}})
    if places:
        out.append({"terms": {"location_key": list(places)}})
    if level:
        out.append({"term": {"location_level": level}})
    if start or end:
        rng = {k: v.isoformat() for k, v in (("gte", start), ("lte", end)) if v}
        out.append({"range": {"date": rng}})
    if source:
        out.append({"term": {"source_id": source}})
    return out


def daily_values_query(
    metric: str,
    *,
    start: dt.date,
    end: dt.date,
    places: Sequence[str] | None = None,
    level: str | None = None,
    source: str | None = None,
) -> dict[str, Any]:
    """Place x day -> the latest-vintage value; the one request behind the map, series and growth."""
    days = (end - start).days + 1
    return {
        "size": 0,
        "track_total_hits": False,
        "query": {
            "bool": {"filter": _filters(metric, places=places, level=level, start=start, end=end, source=source)}
        },
        "aggs": {
            "place": {
                "terms": {"field": "location_key", "size": len(places) if places else MAX_PLACES},
                "aggs": {
                    "day": {
                        "terms": {"field": "date", "size": max(days, 1), "order": {"_key": "asc"}},
                        "aggs": {"latest": {"top_hits": LATEST}},
                    }
                },
            }
        },
    }


def parse_daily_values(resp: Mapping[str, Any]) -> dict[str, dict[dt.date, float]]:
    """place -> {day: value} from a :func:`daily_values_query` answer."""
    out: dict[str, dict[dt.date, float]] = {}
    for place in resp["aggregations"]["place"]["buckets"]:
        series = out.setdefault(place["key"], {})
        for day in place["day"]["buckets"]:
            date = dt.date.fromisoformat(day["key_as_string"][:10])
            series[date] = float(day["latest"]["hits"]["hits"][0]["_source"]["value"])
    return out


def variant_share_query(country: str, *, start: dt.date | None, end: dt.date | None, source: str | None) -> dict:
    """Variant x week -> the latest-vintage share, for one country."""
    filters = _filters("variant_share", places=[country], start=start, end=end, source=source, variant=None)
    return {
        "size": 0,
        "track_total_hits": False,
        "query": {"bool": {"filter": filters, "must_not": [{"term": {"variant": "all"}}]}},
        "aggs": {
            "source": {
                "terms": {"field": "source_id", "size": 10},
                "aggs": {
                    "variant": {
                        "terms": {"field": "variant", "size": 200},
                        "aggs": {
                            "day": {
                                "terms": {"field": "date", "size": 400, "order": {"_key": "asc"}},
                                "aggs": {"latest": {"top_hits": LATEST}},
                            }
                        },
                    }
                },
            }
        },
    }


def parse_variant_shares(resp: Mapping[str, Any]) -> dict[str, dict[str, dict[dt.date, float]]]:
    """source -> variant -> {date: share %}."""
    out: dict[str, dict[str, dict[dt.date, float]]] = {}
    for src in resp["aggregations"]["source"]["buckets"]:
        for var in src["variant"]["buckets"]:
            series = out.setdefault(src["key"], {}).setdefault(var["key"], {})
            for day in var["day"]["buckets"]:
                series[dt.date.fromisoformat(day["key_as_string"][:10])] = float(
                    day["latest"]["hits"]["hits"][0]["_source"]["value"]
                )
    return out


def freshness_query() -> dict[str, Any]:
    """Per source: last vintage, last ingestion, newest data date, document count."""
    return {
        "size": 0,
        "track_total_hits": False,
        "aggs": {
            "source": {
                "terms": {"field": "source_id", "size": 200, "order": {"_key": "asc"}},
                "aggs": {
                    "vintage": {"max": {"field": "vintage"}},
                    "ingested": {"max": {"field": "ingested_at"}},
                    "date": {"max": {"field": "date"}},
                },
            }
        },
    }


def parse_freshness(resp: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "source_id": b["key"],
            "documents": b["doc_count"],
            "last_vintage": b["vintage"].get("value_as_string"),
            "last_ingested_at": b["ingested"].get("value_as_string"),
            "last_date": (b["date"].get("value_as_string") or "")[:10] or None,
        }
        for b in resp["aggregations"]["source"]["buckets"]
    ]


_CHECK = {"sort": [{"@timestamp": "desc"}], "size": 1, "_source": ["status", "message", "@timestamp", "run_id"]}


def checks_query() -> dict[str, Any]:
    """Per source: the newest freshness verdict and quality summary that the ops DAGs wrote (covidflow.ops.report)."""
    quality = {"bool": {"filter": [{"term": {"kind": "quality"}}, {"term": {"check": "summary"}}]}}
    return {
        "size": 0,
        "track_total_hits": False,
        "aggs": {
            "source": {
                "terms": {"field": "source_id", "size": 200},
                "aggs": {
                    "freshness": {"filter": {"term": {"kind": "freshness"}}, "aggs": {"last": {"top_hits": _CHECK}}},
                    "quality": {"filter": quality, "aggs": {"last": {"top_hits": _CHECK}}},
                },
            }
        },
    }


def parse_checks(resp: Mapping[str, Any]) -> dict[str, dict[str, dict[str, Any] | None]]:
    """source -> {"freshness": {status, message, checked_at, run_id} or None, "quality": ...}."""
    out: dict[str, dict[str, dict[str, Any] | None]] = {}
    for b in resp["aggregations"]["source"]["buckets"]:
        out[b["key"]] = {}
        for kind in ("freshness", "quality"):
            hits = b[kind]["last"]["hits"]["hits"]
            doc = hits[0]["_source"] if hits else None
            out[b["key"]][kind] = (
                {"status": doc.get("status"), "message": doc.get("message"), "checked_at": doc.get("@timestamp"),
                 "run_id": doc.get("run_id")}
                if doc else None
            )  # fmt: skip
    return out


def coverage_query(metric: str | None = None) -> dict[str, Any]:
    """Which metrics exist, at which levels, from which sources, over which dates (to fill the filters)."""
    query = {"bool": {"filter": [{"term": {"metric": metric}}]}} if metric else {"match_all": {}}
    return {
        "size": 0,
        "track_total_hits": False,
        "query": query,
        "aggs": {
            "metric": {
                "terms": {"field": "metric", "size": 200},
                "aggs": {
                    "level": {"terms": {"field": "location_level", "size": 10}},
                    "source": {"terms": {"field": "source_id", "size": 50}},
                    "first": {"min": {"field": "date"}},
                    "last": {"max": {"field": "date"}},
                },
            }
        },
    }


def parse_coverage(resp: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        b["key"]: {
            "levels": sorted(x["key"] for x in b["level"]["buckets"]),
            "sources": sorted(x["key"] for x in b["source"]["buckets"]),
            "first_date": b["first"]["value_as_string"][:10],
            "last_date": b["last"]["value_as_string"][:10],
        }
        for b in resp["aggregations"]["metric"]["buckets"]
    }


# ---------------------------------------------------------------------------------------------------------------
# Pure arithmetic over daily values
# ---------------------------------------------------------------------------------------------------------------


def smooth(series: Mapping[dt.date, float], window: int = 7) -> dict[dt.date, float | None]:
    """Trailing mean over ``window`` calendar days; None until the window is full of days with data."""
    out: dict[dt.date, float | None] = {}
    for day in sorted(series):
        values = [series.get(day - dt.timedelta(days=k)) for k in range(window)]
        out[day] = None if any(v is None for v in values) else round(sum(values) / window, 6)  # type: ignore[arg-type]
    return out


def week_end(day: dt.date) -> dt.date:
    """The Sunday closing the ISO week of ``day`` (weekly values are dated on their last day)."""
    return day + dt.timedelta(days=6 - day.weekday())


def weekly(series: Mapping[dt.date, float], kind: str) -> dict[dt.date, float]:
    """Aggregate daily values by ISO week: flows add up, stocks/cumulatives keep the week's last value,
    rates and shares average. Weekly inputs (one value per week) come out unchanged."""
    groups: dict[dt.date, list[tuple[dt.date, float]]] = defaultdict(list)
    for day, value in sorted(series.items()):
        groups[week_end(day)].append((day, value))
    out = {}
    for end, items in groups.items():
        values = [v for _, v in items]
        if kind in ("daily_flow", "weekly_flow"):
            out[end] = sum(values)
        elif kind in ("stock", "cumulative"):
            out[end] = items[-1][1]
        else:
            out[end] = sum(values) / len(values)
    return dict(sorted(out.items()))


def week_total(series: Mapping[dt.date, float], end: dt.date, kind: str) -> float | None:
    """The week ending ``end``: a flow's sum (7 days, or the weekly value), a cumulative's increase, or a
    stock's level on ``end``. None when a needed day is missing."""
    days = [end - dt.timedelta(days=k) for k in range(7)]
    if kind == "weekly_flow":
        return series.get(end)
    if kind == "daily_flow":
        values = [series.get(d) for d in days]
        return None if any(v is None for v in values) else sum(values)  # type: ignore[arg-type]
    if kind == "cumulative":
        now, before = series.get(end), series.get(end - dt.timedelta(days=7))
        return None if now is None or before is None else now - before
    return series.get(end)


def growth(
    values: Mapping[str, Mapping[dt.date, float]], end: dt.date, kind: str
) -> list[tuple[str, float, float, float | None]]:
    """(place, this week, previous week, change %) ranked by change, fastest growth first.

    Places without both weeks are left out; a change from 0 has no percentage (None) and ranks last.
    """
    rows = []
    for place, series in values.items():
        this = week_total(series, end, kind)
        prev = week_total(series, end - dt.timedelta(days=7), kind)
        if this is None or prev is None:
            continue
        change = round((this - prev) / prev * 100, 2) if prev else None
        rows.append((place, this, prev, change))
    rows.sort(key=lambda r: (r[3] is None, -(r[3] or 0), r[0]))
    return rows


def per_100k(value: float | None, population: int | None) -> float | None:
    return None if value is None or not population else round(value / population * 100_000, 3)


def sum_by_parent(values: Mapping[str, float], parent_of: Mapping[str, str | None]) -> dict[str, float]:
    """Department values added up per region (only for additive metrics)."""
    out: dict[str, float] = defaultdict(float)
    for key, value in values.items():
        parent = parent_of.get(key)
        if parent:
            out[parent] += value
    return dict(out)


def variant_family(variant: str, highlight: Iterable[str] = ("BF.7",)) -> bool:
    """BF.7 and its siblings: BF.7 itself, its sub-lineages, and BA.5.2.1.7 (its full name)."""
    return any(variant == h or variant.startswith(h + ".") for h in highlight) or variant.startswith("BA.5.2.1.7")
