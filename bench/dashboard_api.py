"""Dashboard API answer times (median, p95) through the running Airflow plugin, next to the raw
Elasticsearch time of the same aggregation, in the same run. Goal: every endpoint < 300 ms.

    .venv/bin/python bench/dashboard_api.py [--runs 30] [--alias covid-observations]

Reads the alias the stack serves (the bundled samples after `make demo`); prints one table and exits 1
when a p95 is over the goal.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time
import urllib.request

from covidflow import clients, settings
from covidflow.show import es_queries as q
from covidflow.stack.airflow_api import AirflowClient
from covidflow.stack.connections import use_stack_connections

GOAL_MS = 300.0
D = dt.date


def cases(alias: str) -> list[tuple[str, str, dict]]:
    """(name, API path, the equivalent raw ES body)."""
    return [
        (
            "map",
            "map?metric=hospital_occupancy&date=2020-04-10&source=spf_donnees_hospitalieres",
            q.daily_values_query(
                "hospital_occupancy",
                start=D(2020, 4, 4),
                end=D(2020, 4, 10),
                level="department",
                source="spf_donnees_hospitalieres",
            ),
        ),
        (
            "series",
            "series?metric=hospital_occupancy&place=FR-D75&place=FR-D13&place=FR-D69&start=2020-03-01&end=2020-04-30",
            q.daily_values_query(
                "hospital_occupancy", start=D(2020, 3, 1), end=D(2020, 4, 30), places=["FR-D75", "FR-D13", "FR-D69"]
            ),
        ),
        ("variants", "variants?country=FR", q.variant_share_query("FR", start=None, end=None, source=None)),
        (
            "growth",
            "growth?metric=hospital_occupancy&date=2020-04-14",
            q.daily_values_query("hospital_occupancy", start=D(2020, 3, 31), end=D(2020, 4, 14), level="department"),
        ),
        ("freshness", "freshness", q.freshness_query()),
    ]


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1000


def main() -> int:
    use_stack_connections()  # the local stack's logins, unless the environment has its own connections
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--alias", default="covid-observations")
    ap.add_argument("--base", default=f"{settings.AIRFLOW_URL}/covidflow/api/")
    args = ap.parse_args()
    es = clients.elasticsearch(cached=False, request_timeout=30)
    # The plugin needs Airflow's login: a token from POST /auth/token, as the stack's admin.
    auth = {"Authorization": f"Bearer {AirflowClient().token}"}
    print(f"{'endpoint':<10} {'API median':>11} {'API p95':>9} {'ES median':>10} {'ES p95':>8} {'ES took':>8}")
    worst = 0.0
    for name, path, body in cases(args.alias):
        url = urllib.request.Request(
            args.base + path + ("&" if "?" in path else "?") + f"alias={args.alias}", headers=auth
        )
        api_ms, es_ms, took = [], [], []
        for _ in range(2):  # warm both paths
            urllib.request.urlopen(url).read()
            es.search(index=args.alias, body=body)
        for _ in range(args.runs):
            api_ms.append(timed(lambda url=url: urllib.request.urlopen(url).read()))
            t = time.perf_counter()
            took.append(es.search(index=args.alias, body=body)["took"])
            es_ms.append((time.perf_counter() - t) * 1000)
        p95 = lambda xs: statistics.quantiles(xs, n=20)[-1]  # noqa: E731
        worst = max(worst, p95(api_ms))
        print(
            f"{name:<10} {statistics.median(api_ms):>9.1f}ms {p95(api_ms):>7.1f}ms {statistics.median(es_ms):>8.1f}ms "
            f"{p95(es_ms):>6.1f}ms {statistics.median(took):>6.0f}ms"
        )
    print(f"worst API p95 {worst:.1f} ms (goal < {GOAL_MS:.0f} ms): {'OK' if worst < GOAL_MS else 'OVER'}")
    return 0 if worst < GOAL_MS else 1


if __name__ == "__main__":
    sys.exit(main())
