"""Dashboard API on the real local Elasticsearch, with the bundled samples indexed into a test alias.

Records go through the same normalisation as the stream (preview.run_file), indexed with _id = record_id,
so API figures can be checked against the source files, read here independently with the csv module.

The figures are checked in-process (create_app without login); the last tests go through the running
api-server, where the plugin needs Airflow's login (a token from POST /auth/token, or the UI's cookie).
"""

from __future__ import annotations

import copy
import csv
import datetime as dt
import os
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from covidflow import PROJECT_ROOT, clients, settings
from covidflow.catalog.specs import find_spec
from covidflow.index.es_template import generate_template
from covidflow.normalise.preview import run_file
from covidflow.show.api import create_app
from covidflow.stack.airflow_api import AirflowClient

pytestmark = pytest.mark.integration

ES_URL = os.environ.get("COVIDFLOW_ELASTICSEARCH_URL", "http://127.0.0.1:9200")
ALIAS = "covid-observations-test-dashboard"
INDEX = f"{ALIAS}-000001"
SOURCES = (
    "spf_donnees_hospitalieres",
    "ecdc_erviss_variants",
    "gerstung_variant_share",
    "opencovid19fr_chiffres_cles_csv",
)
SPF_CSV = (
    PROJECT_ROOT / "include/samples/spf_donnees_hospitalieres/donnees-hospitalieres-covid19_2020-04-01_2020-04-14.csv"
)
OLD_VINTAGE_VALUE = -1.0  # an older vintage of Paris 2020-04-01 that the API must NOT show


def es_client() -> Any:

    return clients.elasticsearch(cached=False, request_timeout=120)


def sample_documents(sources: tuple[str, ...]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The sources' sample records, plus an older vintage of Paris 2020-04-01 (value -1) that no panel may show;
    also returns the Paris record itself."""
    docs = []
    for source in sources:
        spec = find_spec(source)
        records, _ = run_file(spec, spec.sample_path)
        docs.extend(records)
    paris = next(
        d
        for d in docs
        if d["source_id"] == "spf_donnees_hospitalieres"
        and d["location_key"] == "FR-D75"
        and d["date"] == dt.date(2020, 4, 1)
        and d["metric"] == "hospital_occupancy"
        and d["sex"] == "all"
    )
    old = copy.deepcopy(paris)
    old.update(record_id="old-vintage-paris", value=OLD_VINTAGE_VALUE, vintage=dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
    return [*docs, old], paris


def index_samples(es: Any) -> int:
    """(Re)create the test index from the generated template and fill it with the samples' records."""
    from elasticsearch import helpers

    es.options(ignore_status=404).indices.delete(index=INDEX)
    tpl = generate_template()["template"]
    es.indices.create(index=INDEX, settings=tpl["settings"], mappings=tpl["mappings"], aliases={ALIAS: {}})
    docs, _ = sample_documents(SOURCES)
    actions = ({"_index": INDEX, "_id": d["record_id"], "_source": d} for d in docs)
    ok, errors = helpers.bulk(es, actions, chunk_size=2000, raise_on_error=False, refresh="wait_for")
    assert not errors, errors[:3]
    return ok


@pytest.fixture(scope="module")
def dashboard_index() -> Iterator[str]:
    es = es_client()
    index_samples(es)
    yield ALIAS
    es.options(ignore_status=404).indices.delete(index=INDEX)


@pytest.fixture(scope="module")
def client(dashboard_index: str) -> TestClient:
    return TestClient(create_app(alias=dashboard_index, client_factory=es_client))


def spf_rows() -> list[dict[str, str]]:
    with SPF_CSV.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh, delimiter=";"))


def spf(dep: str, day: str, col: str) -> float:
    """The figure in the SPF file for a department (all sexes), read without covidflow code."""
    return next(float(r[col]) for r in spf_rows() if r["dep"] == dep and r["sexe"] == "0" and r["jour"] == day)


def test_map_equals_source_file(client: TestClient) -> None:
    resp = client.get(
        "/api/map", params={"metric": "hospital_occupancy", "date": "2020-04-01", "source": "spf_donnees_hospitalieres"}
    )
    assert resp.status_code == 200, resp.text
    by_key = {p["key"]: p for p in resp.json()["places"]}
    assert spf("75", "2020-04-01", "hosp") == 2633.0
    assert by_key["FR-D75"]["value"] == 2633.0  # the latest vintage, not the older -1
    assert by_key["FR-D75"]["per_100k"] == round(2633 / 2187526 * 100_000, 3)
    for dep, key in (("13", "FR-D13"), ("2A", "FR-D2A"), ("971", "FR-D971")):
        assert by_key[key]["value"] == spf(dep, "2020-04-01", "hosp")
    departments = {r["dep"] for r in spf_rows() if r["jour"] == "2020-04-01"}
    assert len(by_key) == len(departments)


def test_region_is_sum_of_its_departments(client: TestClient) -> None:
    resp = client.get(
        "/api/map",
        params={
            "metric": "icu_occupancy",
            "date": "2020-04-05",
            "level": "region",
            "source": "spf_donnees_hospitalieres",
        },
    )
    body = resp.json()
    assert body["derived_from_departments"] is True
    idf = next(p for p in body["places"] if p["key"] == "FR-R11")
    assert idf["value"] == sum(spf(d, "2020-04-05", "rea") for d in ("75", "77", "78", "91", "92", "93", "94", "95"))


def test_series_smoothing_and_weeks_equal_source(client: TestClient) -> None:
    params = {
        "metric": "hospital_occupancy",
        "place": ["FR-D75", "Bouches-du-Rhône"],
        "start": "2020-04-01",
        "end": "2020-04-14",
        "source": "spf_donnees_hospitalieres",
    }
    body = client.get("/api/series", params=params).json()
    assert [s["key"] for s in body["series"]] == ["FR-D75", "FR-D13"]
    paris = {p["date"]: p for p in body["series"][0]["points"]}
    days = [(dt.date(2020, 4, 1) + dt.timedelta(days=i)).isoformat() for i in range(14)]
    assert [paris[d]["value"] for d in days] == [spf("75", d, "hosp") for d in days]
    assert paris["2020-04-06"]["smoothed"] is None
    assert paris["2020-04-07"]["smoothed"] == round(sum(spf("75", d, "hosp") for d in days[:7]) / 7, 6)
    weekly = client.get("/api/series", params={**params, "interval": "week"}).json()["series"][0]["points"]
    assert weekly[0] == {"date": "2020-04-05", "value": spf("75", "2020-04-05", "hosp")}  # a stock: last day


def test_growth_ranks_week_over_week(client: TestClient) -> None:
    body = client.get(
        "/api/growth",
        params={
            "metric": "hospital_occupancy",
            "date": "2020-04-14",
            "limit": 100,
            "source": "spf_donnees_hospitalieres",
        },
    ).json()
    rows = {r["key"]: r for r in body["places"]}
    this, prev = spf("75", "2020-04-14", "hosp"), spf("75", "2020-04-07", "hosp")
    assert rows["FR-D75"]["this_week"] == this and rows["FR-D75"]["previous_week"] == prev
    assert rows["FR-D75"]["change_pct"] == round((this - prev) / prev * 100, 2)
    changes = [r["change_pct"] for r in body["places"] if r["change_pct"] is not None]
    assert changes == sorted(changes, reverse=True)


def test_variants_include_bf7(client: TestClient) -> None:
    body = client.get("/api/variants", params={"country": "FR"}).json()
    assert [s["source_id"] for s in body["sources"]] == ["gerstung_variant_share", "ecdc_erviss_variants"]
    src = body["sources"][0]  # the source that names BF.7 comes first
    bf7 = next(v for v in src["variants"] if v["variant"] == "BF.7")
    assert bf7["bf7_family"] is True
    assert any(s is not None and s > 0 for s in bf7["share"])


def test_freshness_lists_indexed_sources(client: TestClient) -> None:
    rows = {r["source_id"]: r for r in client.get("/api/freshness").json()["sources"]}
    assert set(rows) == set(SOURCES)
    assert rows["spf_donnees_hospitalieres"]["last_date"] == "2020-04-14"


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"metric": "no_such_metric"}, 400),
        ({"metric": "hospital_occupancy", "source": "no_such_source"}, 400),
        ({"metric": "hospital_occupancy", "date": "yesterday"}, 422),
        ({"metric": "hospital_occupancy", "level": "planet"}, 422),
    ],
)
def test_bad_parameters_are_4xx(client: TestClient, params: dict[str, str], status: int) -> None:
    resp = client.get("/api/map", params=params)
    assert resp.status_code == status
    assert "Traceback" not in resp.text


def test_missing_alias_is_a_short_503_except_on_the_freshness_panel() -> None:
    app = create_app(alias="covid-observations-test-dashboard-missing", client_factory=es_client)
    resp = TestClient(app).get("/api/map", params={"metric": "hospital_occupancy", "date": "2020-04-01"})
    assert resp.status_code == 503
    assert resp.json()["detail"].startswith("no data yet")
    # A fresh stack: nothing indexed, yet the panel answers (and would list the sources the ops DAGs judged).
    resp = TestClient(app).get("/api/freshness")
    assert resp.status_code == 200 and resp.json()["sources"] == []


# --- Through the running api-server: the plugin needs Airflow's login (issue 14, item 8) ----------------------


def airflow_url() -> str:
    return os.environ.get("COVIDFLOW_AIRFLOW_URL", settings.AIRFLOW_URL)


@pytest.fixture(scope="module")
def airflow_token() -> str:
    """A JWT from Airflow's own ``POST /auth/token``, as the stack's admin (covidflow.stack.airflow_api)."""
    return AirflowClient().token


def get(path: str, **kwargs: Any) -> httpx.Response:
    """One GET to the api-server, redirects not followed."""
    return httpx.get(f"{airflow_url()}{path}", timeout=30, follow_redirects=False, **kwargs)


META = f"/covidflow/api/meta?alias={ALIAS}"


def test_dashboard_api_refuses_an_anonymous_caller_like_airflow_api() -> None:
    assert get("/api/v2/dags").status_code == 401  # Airflow's own API
    for path in (META, "/covidflow/api/geo", f"/covidflow/api/freshness?alias={ALIAS}"):
        resp = get(path)
        assert resp.status_code == 401, f"{path}: {resp.status_code} {resp.text[:200]}"
        assert resp.json() == {"detail": "Not authenticated"}
    resp = get(META, headers={"Authorization": "Bearer not-a-token"})
    assert resp.status_code == 403 and resp.json() == {"detail": "Invalid JWT token"}


def test_dashboard_api_answers_with_the_airflow_token_or_ui_cookie(dashboard_index: str, airflow_token: str) -> None:
    by_bearer = get(META, headers={"Authorization": f"Bearer {airflow_token}"})
    assert by_bearer.status_code == 200, by_bearer.text
    assert "hospital_occupancy" in {m["name"] for m in by_bearer.json()["metrics"]}
    by_cookie = get(META, cookies={"_token": airflow_token})  # what the Airflow UI sets at login
    assert by_cookie.status_code == 200, by_cookie.text
    assert by_cookie.json() == by_bearer.json()


def test_dashboard_page_sends_an_anonymous_browser_to_airflow_login(airflow_token: str) -> None:
    page = f"/covidflow/?alias={ALIAS}"
    resp = get(page)
    assert resp.status_code == 307, resp.text
    login = urlsplit(resp.headers["location"])
    assert login.path == "/api/v2/auth/login"
    assert parse_qs(login.query)["next"] == [f"{airflow_url()}{page}"]
    # Airflow's entry point accepts the return address and sends on to the auth manager's login page.
    onward = get(resp.headers["location"])
    assert onward.status_code == 307, onward.text
    assert urlsplit(onward.headers["location"]).path == "/auth/login"
    assert parse_qs(urlsplit(onward.headers["location"]).query)["next"] == [f"{airflow_url()}{page}"]
    logged_in = get(page, cookies={"_token": airflow_token})
    assert logged_in.status_code == 200 and "text/html" in logged_in.headers["content-type"]
