"""API validation and error handling without Elasticsearch: names are checked before any query, and an
Elasticsearch failure is a short 502/503, never a stack trace."""

from __future__ import annotations

import csv
import json
from typing import Any

import pytest
from elastic_transport import ApiResponseMeta, HttpHeaders, NodeConfig
from elasticsearch import ApiError
from elasticsearch import ConnectionError as EsConnectionError
from fastapi.testclient import TestClient

from covidflow import PROJECT_ROOT
from covidflow.show import api

META = ApiResponseMeta(500, "1.1", HttpHeaders(), 0.01, NodeConfig("http", "localhost", 9200))


class Boom:
    """A client whose every search fails the way ``exc`` says (a test double for the unit level only)."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc
        self.calls = 0

    def search(self, **_: Any) -> Any:
        self.calls += 1
        raise self.exc


def client_for(es: Any) -> TestClient:
    return TestClient(
        api.create_app(alias="covid-observations", client_factory=lambda: es), raise_server_exceptions=False
    )


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("/api/map?metric=not_a_metric", "unknown metric 'not_a_metric'"),
        ("/api/map?metric=cases_daily&source=nope", "unknown source 'nope'"),
        ("/api/series?metric=cases_daily&place=Atlantis", "unknown place 'Atlantis'"),
        ("/api/series?metric=cases_daily&place=FR&start=2020-05-01&end=2020-04-01", "is after end"),
        ("/api/growth?metric=bogus", "unknown metric 'bogus'"),
        ("/api/variants?country=Narnia", "unknown place 'Narnia'"),
        ("/api/freshness?alias=secrets", "alias must be"),
    ],
)
def test_unknown_names_are_400_before_any_query(url: str, fragment: str) -> None:
    es = Boom(AssertionError("must not be called"))
    resp = client_for(es).get(url)
    assert resp.status_code == 400, resp.text
    assert fragment in resp.json()["detail"]
    assert es.calls == 0


@pytest.mark.parametrize(
    "url",
    [
        "/api/map?metric=cases_daily&date=2020-13-01",
        "/api/map?metric=cases_daily&level=commune",
        "/api/growth?metric=cases_daily&limit=0",
    ],
)
def test_malformed_parameters_are_422(url: str) -> None:
    assert client_for(Boom(AssertionError())).get(url).status_code == 422


def test_too_many_places() -> None:
    url = "/api/series?metric=cases_daily&" + "&".join(f"place=FR-D{n:02d}" for n in range(1, 12))
    resp = client_for(Boom(AssertionError())).get(url)
    assert resp.status_code == 400 and "1 to 10 places" in resp.json()["detail"]


def test_es_unreachable_is_503_without_trace() -> None:
    resp = client_for(Boom(EsConnectionError("connection refused"))).get("/api/freshness")
    assert resp.status_code == 503
    assert resp.json() == {"detail": "Elasticsearch is not reachable; try again in a moment"}


def test_es_error_is_502_without_trace() -> None:
    resp = client_for(Boom(ApiError("search_phase_execution_exception", META, {}))).get("/api/freshness")
    assert resp.status_code == 502
    assert resp.json() == {"detail": "Elasticsearch could not answer this query (status 500)"}
    assert "Traceback" not in resp.text


def test_client_factory_failure_is_503() -> None:
    def broken() -> Any:
        raise RuntimeError("no route to host 10.0.0.1")

    app = api.create_app(alias="covid-observations", client_factory=broken)
    resp = TestClient(app).get("/api/freshness")
    assert resp.status_code == 503 and "10.0.0.1" not in resp.text


def test_names_resolve_to_registry_keys() -> None:
    assert api.check_place("FR-D75") == "FR-D75"
    assert api.check_place("Paris") == "FR-D75"
    assert api.check_place("France") == "FR"


def test_test_alias_only_under_the_configured_alias() -> None:
    assert api.resolve_alias(None, "covid-observations") == "covid-observations"
    assert (
        api.resolve_alias("covid-observations-test-dashboard", "covid-observations")
        == "covid-observations-test-dashboard"
    )
    for bad in ("covid-observations-000001", "other", "covid-observations-test-../x"):
        with pytest.raises(api.HTTPException):
            api.resolve_alias(bad, "covid-observations")


def test_openapi_documents_the_endpoints() -> None:
    paths = client_for(Boom(AssertionError())).get("/openapi.json").json()["paths"]
    assert {"/api/meta", "/api/map", "/api/series", "/api/variants", "/api/growth", "/api/freshness"} <= set(paths)


def test_population_file_covers_departments_and_regions() -> None:
    pops = api.populations()
    with (PROJECT_ROOT / "include/locations/fr_departments.csv").open(encoding="utf-8") as fh:
        departments = {r["key"] for r in csv.DictReader(fh)}
    assert departments <= set(pops)
    assert pops["FR-D976"] == pops["FR-R06"] == 256518  # Mayotte: INSEE's 2017 census (see the file's header)
    assert pops["FR-D75"] == 2187526 and pops["FR-R11"] == 12174880
    assert pops["FR-R11"] == sum(pops[f"FR-D{c}"] for c in ("75", "77", "78", "91", "92", "93", "94", "95"))


def test_geo_has_one_shape_per_department() -> None:
    geo = json.loads((PROJECT_ROOT / "include/geo/fr_departments.json").read_text(encoding="utf-8"))
    keys = [d["key"] for d in geo["departments"]]
    assert len(keys) == len(set(keys)) == 101
    assert all(d["path"].startswith(("m", "M")) and d["region_key"].startswith("FR-R") for d in geo["departments"])
    assert (PROJECT_ROOT / "include/geo/fr_departments.json").stat().st_size < 500_000


class ByIndex:
    """Answers per index (canned aggregation responses); an index without an answer is missing (404)."""

    def __init__(self, answers: dict[str, dict]) -> None:
        self.answers = answers

    def search(self, *, index: str, body: dict) -> dict:
        if index not in self.answers:
            from elasticsearch import NotFoundError

            raise NotFoundError("index_not_found_exception", META, {"error": "no such index"})
        return self.answers[index]


OBSERVATIONS = {"aggregations": {"source": {"buckets": [
    {"key": "spf_vacsi", "doc_count": 12, "vintage": {"value_as_string": "2022-11-20T00:00:00.000Z"},
     "ingested": {"value_as_string": "2022-11-21T08:00:00.000Z"}, "date": {"value_as_string": "2022-11-19"}},
]}}}  # fmt: skip


def _hit(status: str, message: str) -> dict:
    source = {"status": status, "message": message, "@timestamp": "2022-12-01T06:00:05Z", "run_id": "r1"}
    return {"last": {"hits": {"hits": [{"_source": source}]}}}


CHECKS = {"aggregations": {"source": {"buckets": [
    {"key": "spf_vacsi", "freshness": _hit("late", "LATE spf_vacsi: ..."), "quality": {"last": {"hits": {"hits": []}}}},
    {"key": "who_covid19_global_weekly", "freshness": _hit("late", "LATE who: never seen"),
     "quality": _hit("warning", "0 blocking, 2 warning(s) over 5 records")},
]}}}  # fmt: skip


def test_freshness_panel_shows_the_last_ops_checks_per_source() -> None:
    es = ByIndex({"covid-observations": OBSERVATIONS, "covidflow-quality": CHECKS})
    body = client_for(es).get("/api/freshness").json()
    assert body["report_index"] == "covidflow-quality"
    vacsi, who = body["sources"]
    assert (vacsi["documents"], vacsi["freshness"]["status"], vacsi["quality"]) == (12, "late", None)
    # judged late but never indexed: still listed, so a silent source shows up on the panel
    assert (who["source_id"], who["documents"], who["last_vintage"]) == ("who_covid19_global_weekly", 0, None)
    assert who["quality"] == {"status": "warning", "message": "0 blocking, 2 warning(s) over 5 records",
                              "checked_at": "2022-12-01T06:00:05Z", "run_id": "r1"}  # fmt: skip


def test_freshness_panel_without_any_ops_run_yet() -> None:
    body = client_for(ByIndex({"covid-observations": OBSERVATIONS})).get("/api/freshness").json()
    assert [(s["source_id"], s["freshness"], s["quality"]) for s in body["sources"]] == [("spf_vacsi", None, None)]


def test_freshness_panel_on_a_fresh_stack_lists_the_judged_catalog_sources_only() -> None:
    none = {"last": {"hits": {"hits": []}}}
    checks = {"aggregations": {"source": {"buckets": [
        {"key": "spf_vacsi", "freshness": _hit("late", "LATE spf_vacsi: never seen"), "quality": none},
        {"key": "a_removed_source", "freshness": _hit("late", "LATE"), "quality": none},
    ]}}}  # fmt: skip
    body = client_for(ByIndex({"covidflow-quality": checks})).get("/api/freshness")  # no observations alias yet
    assert body.status_code == 200
    assert [(s["source_id"], s["documents"], s["freshness"]["status"]) for s in body.json()["sources"]] == [
        ("spf_vacsi", 0, "late")
    ]
