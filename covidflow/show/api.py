"""The dashboard's JSON API (FastAPI), mounted by the Airflow plugin in plugins/covidflow_dashboard.

Names are checked against the vocabularies (metrics.yaml, the location registry, the source specs) before
anything reaches Elasticsearch, so a typo gets a 400 that says what is known. Elasticsearch failures
become a 502/503 with one short sentence: never a stack trace.
"""

from __future__ import annotations

import csv
import datetime as dt
import logging
import os
import re
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse

from covidflow import PROJECT_ROOT, settings
from covidflow.catalog.locations import LocationRegistry, load_registry
from covidflow.catalog.metrics import Metric, load_metrics
from covidflow.catalog.specs import spec_paths
from covidflow.ops.config import freshness_config
from covidflow.show import es_queries as q

log = logging.getLogger(__name__)
POPULATION_CSV = PROJECT_ROOT / "include" / "locations" / "population.csv"
GEO_JSON = PROJECT_ROOT / "include" / "geo" / "fr_departments.json"
DEFAULT_ALIAS = "covid-observations"
ADDITIVE = ("stock", "daily_flow", "weekly_flow", "cumulative")
MAX_SERIES_PLACES = 10
_ALIAS_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,120}$")


class DashboardError(Exception):
    """An upstream (Elasticsearch) failure, already phrased for the user."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class NoData(DashboardError):
    """The index or alias does not exist yet (a fresh stack): some panels can still say something."""


# ---------------------------------------------------------------------------------------------------------------
# Reference data and validation (pure, cached)
# ---------------------------------------------------------------------------------------------------------------


@cache
def populations(path: Path = POPULATION_CSV) -> dict[str, int]:
    """location key -> INSEE legal population (comment lines carry the source)."""
    with path.open(encoding="utf-8", newline="") as fh:
        rows = csv.DictReader(line for line in fh if not line.startswith("#"))
        return {r["key"]: int(r["population"]) for r in rows if r["population"]}


@cache
def source_ids() -> tuple[str, ...]:
    return tuple(sorted(p.stem for p in spec_paths()))


def check_metric(name: str) -> Metric:
    metrics = load_metrics()
    if name not in metrics:
        raise HTTPException(400, f"unknown metric {name!r}; known metrics: {', '.join(sorted(metrics))}")
    return metrics[name]


def check_place(value: str, registry: LocationRegistry | None = None) -> str:
    """A registry key (FR-D75, FR, ...) or a name the registry resolves (Paris, France) -> the key."""
    registry = registry or load_registry()
    if value in registry.places:
        return value
    place = registry.resolve(value, "name")
    if place is None:
        raise HTTPException(400, f"unknown place {value!r}: use a registry key such as FR-D75, FR-R11 or FR")
    return place.key


def check_source(value: str | None) -> str | None:
    if value is not None and value not in source_ids():
        raise HTTPException(400, f"unknown source {value!r}; known sources: {', '.join(source_ids())}")
    return value


def check_range(start: dt.date, end: dt.date) -> None:
    if start > end:
        raise HTTPException(400, f"start {start} is after end {end}")
    if (end - start).days >= q.MAX_DAYS:
        raise HTTPException(400, f"date range longer than {q.MAX_DAYS} days")


def resolve_alias(requested: str | None, configured: str) -> str:
    """The configured alias, or a test alias under it (``<alias>-test-...``): nothing else can be read."""
    if requested is None or requested == configured:
        return configured
    if not _ALIAS_RE.match(requested) or not requested.startswith(f"{configured}-test-"):
        raise HTTPException(400, f"alias must be {configured!r} or start with '{configured}-test-'")
    return requested


# ---------------------------------------------------------------------------------------------------------------
# Elasticsearch access
# ---------------------------------------------------------------------------------------------------------------


def client_from_connection(conn_id: str = settings.CONN_ELASTICSEARCH) -> Any:
    """The dashboard's client (covidflow.clients): the Airflow connection, else ``settings.ELASTICSEARCH_URL``.

    Short timeout: a page waits on it. Never ping(): the minimal server answers 405 on /.
    """
    from covidflow import clients

    return clients.elasticsearch(conn_id=conn_id, request_timeout=10)


def search(es: Any, index: str, body: dict[str, Any]) -> dict[str, Any]:
    """Run one search; failures become DashboardError (logged here with details, shown short)."""
    from elasticsearch import ApiError, NotFoundError, TransportError

    try:
        return dict(es.search(index=index, body=body))
    except NotFoundError as exc:
        log.warning("search on %s: %s", index, exc)
        raise NoData(503, f"no data yet: index or alias {index!r} does not exist") from None
    except ApiError as exc:
        log.warning("search on %s failed: %s", index, exc)
        raise DashboardError(502, f"Elasticsearch could not answer this query (status {exc.meta.status})") from None
    except TransportError as exc:
        log.warning("search on %s failed: %s", index, exc)
        raise DashboardError(503, "Elasticsearch is not reachable; try again in a moment") from None


class Backend:
    """What a request needs: a client (created on first use) and the alias to read."""

    def __init__(self, alias: str, client_factory: Callable[[], Any]) -> None:
        self.alias = alias
        self._factory = client_factory
        self._es: Any = None

    def es(self) -> Any:
        if self._es is None:
            try:
                self._es = self._factory()
            except Exception as exc:
                log.warning("no Elasticsearch client: %s", exc)
                raise DashboardError(503, "Elasticsearch connection is not configured or not reachable") from None
        return self._es

    def search(self, index: str, body: dict[str, Any]) -> dict[str, Any]:
        return search(self.es(), index, body)


def backend(request: Request) -> Backend:
    return request.app.state.backend


def alias_param(
    request: Request,
    alias: Annotated[
        str | None, Query(description="Read another alias: only '<alias>-test-*' (tests, previews)")
    ] = None,
) -> str:
    return resolve_alias(alias, request.app.state.backend.alias)


BackendDep = Annotated[Backend, Depends(backend)]
AliasDep = Annotated[str, Depends(alias_param)]
SourceQ = Annotated[str | None, Query(description="Source id (include/sources/<id>.yaml); default: all sources")]


def _last_date(be: Backend, index: str, metric: str) -> dt.date:
    cov = q.parse_coverage(be.search(index, q.coverage_query(metric)))
    if metric not in cov:
        raise HTTPException(404, f"no data for metric {metric!r} yet")
    return dt.date.fromisoformat(cov[metric]["last_date"])


# ---------------------------------------------------------------------------------------------------------------
# Routes
# ---------------------------------------------------------------------------------------------------------------

router = APIRouter(prefix="/api", tags=["dashboard"])


@router.get("/meta", summary="Metrics, sources, places and populations the filters offer")
def meta(be: BackendDep, index: AliasDep) -> dict[str, Any]:
    registry = load_registry()
    coverage = q.parse_coverage(be.search(index, q.coverage_query()))
    metrics = [
        {"name": m.name, "unit": m.unit, "kind": m.kind, "description": m.description, **coverage[m.name]}
        for m in load_metrics().values()
        if m.name in coverage
    ]
    places = [
        {"key": p.key, "name": p.name, "level": p.level, "parent_key": p.parent_key}
        for p in registry.places.values()
        if p.level in ("department", "region", "country")
    ]
    return {"metrics": metrics, "sources": list(source_ids()), "places": places, "populations": populations()}


@router.get("/geo", summary="Simplified department outlines (SVG paths) with their region")
def geo() -> FileResponse:
    return FileResponse(GEO_JSON, media_type="application/json")


@router.get("/map", summary="One figure per department or region for a metric on a date (latest vintage)")
def map_values(
    be: BackendDep,
    index: AliasDep,
    metric: str,
    date: Annotated[
        dt.date | None, Query(description="Day (weekly metrics: any day of the week); default: last")
    ] = None,
    level: Literal["department", "region"] = "department",
    source: SourceQ = None,
) -> dict[str, Any]:
    m = check_metric(metric)
    check_source(source)
    day = date or _last_date(be, index, metric)
    start = day - dt.timedelta(days=6)
    resp = be.search(index, q.daily_values_query(metric, start=start, end=day, level=level, source=source))
    values = {}
    for key, series in q.parse_daily_values(resp).items():
        v = series.get(day)
        if v is None and m.kind == "weekly_flow" and series:
            v = series[max(series)]
        if v is not None:
            values[key] = v
    derived = False
    if level == "region" and not values and m.kind in ADDITIVE:
        dep = be.search(index, q.daily_values_query(metric, start=day, end=day, level="department", source=source))
        registry = load_registry()
        dvals = {k: s[day] for k, s in q.parse_daily_values(dep).items() if day in s}
        values = q.sum_by_parent(dvals, {k: registry.places[k].parent_key for k in dvals if k in registry.places})
        derived = bool(values)
    registry, pops = load_registry(), populations()
    rate_ok = m.kind in ADDITIVE
    places = [
        {
            "key": key,
            "name": registry.places[key].name if key in registry.places else key,
            "value": value,
            "population": pops.get(key),
            "per_100k": q.per_100k(value, pops.get(key)) if rate_ok else None,
        }
        for key, value in sorted(values.items())
    ]
    return {
        "metric": metric,
        "unit": m.unit,
        "kind": m.kind,
        "date": day.isoformat(),
        "level": level,
        "source": source,
        "derived_from_departments": derived,
        "places": places,
    }


@router.get("/series", summary="Daily or weekly series of a metric for 1-10 places, with 7-day smoothing")
def series(
    be: BackendDep,
    index: AliasDep,
    metric: str,
    place: Annotated[list[str], Query(description="Registry key or name; repeat for several places")],
    start: dt.date | None = None,
    end: dt.date | None = None,
    interval: Literal["day", "week"] = "day",
    source: SourceQ = None,
) -> dict[str, Any]:
    m = check_metric(metric)
    check_source(source)
    if not 1 <= len(place) <= MAX_SERIES_PLACES:
        raise HTTPException(400, f"give 1 to {MAX_SERIES_PLACES} places")
    keys = list(dict.fromkeys(check_place(p) for p in place))
    end = end or _last_date(be, index, metric)
    start = start or end - dt.timedelta(days=90)
    check_range(start, end)
    values = q.parse_daily_values(
        be.search(index, q.daily_values_query(metric, start=start, end=end, places=keys, source=source))
    )
    registry, pops = load_registry(), populations()
    out = []
    for key in keys:
        raw = values.get(key, {})
        if interval == "week":
            points = [{"date": d.isoformat(), "value": v} for d, v in q.weekly(raw, m.kind).items()]
        else:
            sm = q.smooth(raw) if m.kind != "weekly_flow" else {}
            points = [{"date": d.isoformat(), "value": v, "smoothed": sm.get(d)} for d, v in sorted(raw.items())]
        out.append({"key": key, "name": registry.places[key].name, "population": pops.get(key), "points": points})
    return {
        "metric": metric,
        "unit": m.unit,
        "kind": m.kind,
        "interval": interval,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "series": out,
    }


@router.get("/variants", summary="Share of each variant over time in one country (BF.7 and siblings flagged)")
def variants(
    be: BackendDep,
    index: AliasDep,
    country: str = "FR",
    start: dt.date | None = None,
    end: dt.date | None = None,
    source: SourceQ = None,
) -> dict[str, Any]:
    key = check_place(country)
    check_source(source)
    if start and end:
        check_range(start, end)
    shares = q.parse_variant_shares(be.search(index, q.variant_share_query(key, start=start, end=end, source=source)))
    sources = []

    # Sources naming the BF.7 family first (the question asked of this panel), then the longest.
    def rank(item: tuple[str, dict]) -> tuple[bool, int]:
        return (not any(map(q.variant_family, item[1])), -sum(len(s) for s in item[1].values()))

    for src, by_variant in sorted(shares.items(), key=rank):
        dates = sorted({d for s in by_variant.values() for d in s})
        sources.append(
            {
                "source_id": src,
                "dates": [d.isoformat() for d in dates],
                "variants": [
                    {"variant": v, "bf7_family": q.variant_family(v), "share": [s.get(d) for d in dates]}
                    for v, s in sorted(by_variant.items(), key=lambda kv: -max(kv[1].values()))
                ],
            }
        )
    return {"country": key, "unit": "percent", "sources": sources}


@router.get("/growth", summary="Places ranked by week-over-week change of a metric")
def fastest_growing(
    be: BackendDep,
    index: AliasDep,
    metric: str,
    date: Annotated[dt.date | None, Query(description="Last day of the week compared; default: last date")] = None,
    level: Literal["department", "region", "country"] = "department",
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
    source: SourceQ = None,
) -> dict[str, Any]:
    m = check_metric(metric)
    check_source(source)
    day = date or _last_date(be, index, metric)
    start = day - dt.timedelta(days=14)
    values = q.parse_daily_values(
        be.search(index, q.daily_values_query(metric, start=start, end=day, level=level, source=source))
    )
    registry = load_registry()
    rows = [
        {
            "key": k,
            "name": registry.places[k].name if k in registry.places else k,
            "this_week": a,
            "previous_week": b,
            "change_pct": c,
        }
        for k, a, b, c in q.growth(values, day, m.kind)[:limit]
    ]
    return {"metric": metric, "kind": m.kind, "week_end": day.isoformat(), "level": level, "places": rows}


@router.get(
    "/freshness",
    summary="Per source: last vintage, last ingestion, newest date, document count, and the last ops checks",
)
def freshness(request: Request, be: BackendDep, index: AliasDep) -> dict[str, Any]:
    try:
        sources = {s["source_id"]: s for s in q.parse_freshness(be.search(index, q.freshness_query()))}
    except NoData:  # nothing indexed yet: the ops verdicts below may still say which sources are late
        sources = {}
    report_index = request.app.state.report_index
    try:
        checks = q.parse_checks(be.search(report_index, q.checks_query()))
    except DashboardError as exc:  # no ops run yet (index missing), or the report index unreadable
        log.info("no ops checks from %s: %s", report_index, exc.message)
        checks = {}
    # A catalog source judged (late, say) with nothing indexed is listed too, so a silent source shows on the
    # panel. A test alias (``<alias>-test-*``) lists only the sources it holds.
    judged_only = (checks.keys() & set(source_ids())) - sources.keys() if index == be.alias else set()
    for source_id in judged_only:
        sources[source_id] = {"source_id": source_id, "documents": 0, "last_vintage": None,
                              "last_ingested_at": None, "last_date": None}  # fmt: skip
    empty = {"freshness": None, "quality": None}
    return {
        "report_index": report_index,
        "sources": [{**sources[k], **checks.get(k, empty)} for k in sorted(sources)],
    }


# ---------------------------------------------------------------------------------------------------------------
# App
# ---------------------------------------------------------------------------------------------------------------


def create_app(
    *,
    alias: str | None = None,
    client_factory: Callable[[], Any] | None = None,
    static_dir: Path | None = None,
    report_index: str | None = None,
    login_required: bool = False,
) -> FastAPI:
    """The dashboard app: the API, plus the page and its assets when ``static_dir`` is given (the plugin).

    ``report_index`` is where the freshness and quality DAGs write (include/config/freshness.yaml by default).
    ``login_required`` puts Airflow's login in front of the API and the page (covidflow.show.auth); the plugin
    always sets it. Without it (tests that call the app in-process, outside an api-server) nothing is checked.
    """
    app = FastAPI(
        title="covidflow dashboard API",
        version="1",
        description="Aggregations over the covidflow observations index (latest vintage of each point).",
    )
    app.state.report_index = report_index or freshness_config()["elasticsearch"]["index"]
    app.state.backend = Backend(
        alias or os.environ.get("COVIDFLOW_DASHBOARD_ALIAS", DEFAULT_ALIAS), client_factory or client_from_connection
    )

    @app.exception_handler(DashboardError)
    def _upstream(_: Request, exc: DashboardError) -> JSONResponse:
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.exception_handler(Exception)
    def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("dashboard error")
        return JSONResponse({"detail": "internal error; see the api-server log"}, status_code=500)

    dependencies: list[Any] = []
    page_dependencies: list[Any] = []
    if login_required:
        from covidflow.show import auth

        dependencies = auth.api_dependencies()
        page_dependencies = [Depends(auth.page_user)]

        @app.exception_handler(auth.LoginRequired)
        def _login(_: Request, exc: auth.LoginRequired) -> RedirectResponse:
            return RedirectResponse(exc.login_url, status_code=307)

    app.include_router(router, dependencies=dependencies)
    if static_dir is not None:
        from fastapi.staticfiles import StaticFiles

        app.mount("/static", StaticFiles(directory=static_dir), name="static")

        # The assets (app.js, style.css, vendored libraries) are the repository's public code and stay
        # anonymous; the page and every figure need the login.
        @app.get("/", include_in_schema=False, dependencies=page_dependencies)
        def page() -> FileResponse:
            return FileResponse(static_dir / "index.html", headers={"Cache-Control": "no-cache"})

    return app
