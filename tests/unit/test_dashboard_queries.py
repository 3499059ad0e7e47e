"""Query building and the arithmetic behind the dashboard panels (pure functions, no services)."""

from __future__ import annotations

import datetime as dt

from covidflow.show import es_queries as q

D = dt.date


def test_daily_values_query_filters_latest_vintage_and_all_dimensions() -> None:
    body = q.daily_values_query(
        "hospital_occupancy",
        start=D(2020, 4, 1),
        end=D(2020, 4, 7),
        level="department",
        source="spf_donnees_hospitalieres",
    )
    filters = body["query"]["bool"]["filter"]
    assert {"term": {"metric": "hospital_occupancy"}} in filters
    assert {"term": {"sex": "all"}} in filters and {"term": {"age_group": "all"}} in filters
    assert {"term": {"variant": "all"}} in filters
    assert {"term": {"location_level": "department"}} in filters
    assert {"term": {"source_id": "spf_donnees_hospitalieres"}} in filters
    assert {"range": {"date": {"gte": "2020-04-01", "lte": "2020-04-07"}}} in filters
    day = body["aggs"]["place"]["aggs"]["day"]
    assert day["terms"]["size"] == 7
    assert day["aggs"]["latest"]["top_hits"]["sort"] == [{"vintage": "desc"}, {"ingested_at": "desc"}]
    assert day["aggs"]["latest"]["top_hits"]["size"] == 1


def test_places_bound_the_terms_size() -> None:
    body = q.daily_values_query("cases_daily", start=D(2020, 1, 1), end=D(2020, 1, 1), places=["FR-D75", "FR"])
    assert body["aggs"]["place"]["terms"]["size"] == 2
    assert {"terms": {"location_key": ["FR-D75", "FR"]}} in body["query"]["bool"]["filter"]


def _bucket(key: str, days: dict[str, float]) -> dict:
    return {
        "key": key,
        "day": {
            "buckets": [
                {"key_as_string": f"{d}T00:00:00.000Z", "latest": {"hits": {"hits": [{"_source": {"value": v}}]}}}
                for d, v in days.items()
            ]
        },
    }


def test_parse_daily_values() -> None:
    resp = {"aggregations": {"place": {"buckets": [_bucket("FR-D75", {"2020-04-01": 2633, "2020-04-02": 2838})]}}}
    assert q.parse_daily_values(resp) == {"FR-D75": {D(2020, 4, 1): 2633.0, D(2020, 4, 2): 2838.0}}


def test_variant_query_excludes_all_and_keeps_country() -> None:
    body = q.variant_share_query("FR", start=None, end=None, source=None)
    assert {"term": {"variant": "all"}} in body["query"]["bool"]["must_not"]
    assert {"terms": {"location_key": ["FR"]}} in body["query"]["bool"]["filter"]
    assert not any("variant" in f.get("term", {}) for f in body["query"]["bool"]["filter"])


def test_smooth_needs_a_full_window() -> None:
    series = {D(2020, 4, 1) + dt.timedelta(days=i): float(i) for i in range(8)}
    out = q.smooth(series)
    assert out[D(2020, 4, 6)] is None
    assert out[D(2020, 4, 7)] == 3.0  # mean of 0..6
    assert out[D(2020, 4, 8)] == 4.0
    del series[D(2020, 4, 3)]
    assert q.smooth(series)[D(2020, 4, 8)] is None


def test_weekly_by_kind() -> None:
    days = {D(2020, 3, 30) + dt.timedelta(days=i): float(i + 1) for i in range(9)}  # Mon 30 Mar .. Tue 7 Apr
    assert q.weekly(days, "daily_flow") == {D(2020, 4, 5): 28.0, D(2020, 4, 12): 17.0}
    assert q.weekly(days, "stock") == {D(2020, 4, 5): 7.0, D(2020, 4, 12): 9.0}
    assert q.weekly(days, "share") == {D(2020, 4, 5): 4.0, D(2020, 4, 12): 8.5}


def test_week_total_and_growth_ranking() -> None:
    end = D(2020, 4, 14)
    flat = {end - dt.timedelta(days=k): 10.0 for k in range(14)}
    rising = {end - dt.timedelta(days=k): (20.0 if k < 7 else 10.0) for k in range(14)}
    from_zero = {end - dt.timedelta(days=k): (5.0 if k < 7 else 0.0) for k in range(14)}
    short = {end: 1.0}
    assert q.week_total(rising, end, "daily_flow") == 140.0
    rows = q.growth({"A": flat, "B": rising, "C": from_zero, "D": short}, end, "daily_flow")
    assert rows == [("B", 140.0, 70.0, 100.0), ("A", 70.0, 70.0, 0.0), ("C", 35.0, 0.0, None)]
    cumulative = {end: 150.0, end - dt.timedelta(days=7): 100.0, end - dt.timedelta(days=14): 80.0}
    assert q.growth({"X": cumulative}, end, "cumulative") == [("X", 50.0, 20.0, 150.0)]


def test_per_100k_and_region_sums() -> None:
    assert q.per_100k(2633, 2187526) == 120.364
    assert q.per_100k(5, None) is None
    assert q.sum_by_parent(
        {"FR-D75": 2.0, "FR-D92": 3.0, "FR-D13": 1.0, "X": 9.0},
        {"FR-D75": "FR-R11", "FR-D92": "FR-R11", "FR-D13": "FR-R93"},
    ) == {"FR-R11": 5.0, "FR-R93": 1.0}


def test_bf7_family() -> None:
    assert q.variant_family("BF.7") and q.variant_family("BF.7.4.1") and q.variant_family("BA.5.2.1.7")
    assert not q.variant_family("BF.70") and not q.variant_family("BA.5")


def test_freshness_parse() -> None:
    resp = {
        "aggregations": {
            "source": {
                "buckets": [
                    {
                        "key": "s",
                        "doc_count": 3,
                        "vintage": {"value": 1, "value_as_string": "2020-04-14T19:00:00.000Z"},
                        "ingested": {"value": 1, "value_as_string": "2026-01-01T00:00:00.000Z"},
                        "date": {"value": 1, "value_as_string": "2020-04-14T00:00:00.000Z"},
                    }
                ]
            }
        }
    }
    assert q.parse_freshness(resp) == [
        {
            "source_id": "s",
            "documents": 3,
            "last_vintage": "2020-04-14T19:00:00.000Z",
            "last_ingested_at": "2026-01-01T00:00:00.000Z",
            "last_date": "2020-04-14",
        }
    ]
