"""The dashboard needs the Airflow UI's login: the app the plugin registers, called in-process with JWTs signed
by Airflow's own auth manager (SimpleAuthManager, as the local stack runs it) with a test secret.

No token: the API is 401 and the page redirects to Airflow's login. A valid bearer token (as from
``POST /auth/token``) or the UI's ``_token`` cookie: 200. A forged or expired token, or a user the auth manager
does not allow to see the website: refused. Elasticsearch is never reached by a refused request.
"""

from __future__ import annotations

import importlib.util
import secrets
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from covidflow import PROJECT_ROOT
from covidflow.show import api

PLUGIN = PROJECT_ROOT / "plugins" / "covidflow_dashboard" / "plugin.py"
PREFIX = "/covidflow"
BASE = "http://127.0.0.1:8080"


class NoEs:
    """A client that must not be used: an unauthenticated request never reaches Elasticsearch."""

    calls = 0

    def search(self, **_: Any) -> Any:
        NoEs.calls += 1
        raise AssertionError("Elasticsearch reached by an unauthenticated request")


@pytest.fixture
def auth_manager(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Airflow's SimpleAuthManager as the api-server holds it, with a test signing secret."""
    from airflow.api_fastapi import app as airflow_app
    from airflow.api_fastapi.auth.managers.base_auth_manager import BaseAuthManager
    from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager
    from airflow.models.revoked_token import RevokedToken

    monkeypatch.setenv(
        "AIRFLOW__CORE__AUTH_MANAGER",
        "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
    )
    monkeypatch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", secrets.token_urlsafe(32))
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "False")
    # The revocation list lives in Airflow's metadata database, which a unit test does not have: nothing is revoked.
    monkeypatch.setattr(RevokedToken, "is_revoked", classmethod(lambda cls, jti, **_: False))
    # Airflow caches its token signer and validator (with the secret they were built with): start and end clean.
    caches = [getattr(BaseAuthManager, name).__func__ for name in ("_get_token_signer", "_get_token_validator")]
    for cached in caches:
        cached.cache_clear()
    previous = airflow_app._AuthManagerState.instance
    airflow_app._AuthManagerState.instance = manager = SimpleAuthManager()
    try:
        yield manager
    finally:
        airflow_app._AuthManagerState.instance = previous
        for cached in caches:
            cached.cache_clear()


def token(manager: Any, username: str = "admin", role: str | None = "admin", **kwargs: Any) -> str:
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    return manager.generate_jwt(SimpleAuthManagerUser(username=username, role=role), **kwargs)


def plugin_app() -> Any:
    """The FastAPI app exactly as plugins/covidflow_dashboard registers it."""
    spec = importlib.util.spec_from_file_location("covidflow_dashboard_plugin_under_test", PLUGIN)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    (entry,) = module.CovidflowDashboardPlugin.fastapi_apps
    assert entry["url_prefix"] == PREFIX
    app = entry["app"]
    app.state.backend = api.Backend("covid-observations", NoEs)
    return app


@pytest.fixture
def client() -> TestClient:
    """The plugin app mounted under /covidflow, as Airflow's api-server does (no redirects followed)."""
    from fastapi import FastAPI

    root = FastAPI()
    root.mount(PREFIX, plugin_app())
    return TestClient(root, base_url=BASE, follow_redirects=False)


def dashboard_routes() -> list[str]:
    return sorted(r.path for r in plugin_app().routes if isinstance(r, APIRoute) and r.include_in_schema)


def test_every_api_route_is_listed() -> None:
    assert dashboard_routes() == [
        "/api/freshness",
        "/api/geo",
        "/api/growth",
        "/api/map",
        "/api/meta",
        "/api/series",
        "/api/variants",
    ]


@pytest.mark.parametrize("path", dashboard_routes())
def test_api_without_a_token_is_401(auth_manager: Any, client: TestClient, path: str) -> None:
    NoEs.calls = 0
    resp = client.get(f"{PREFIX}{path}", params={"metric": "hospital_occupancy", "place": "FR"})
    assert resp.status_code == 401, resp.text
    assert resp.json() == {"detail": "Not authenticated"}
    assert NoEs.calls == 0


def test_api_with_a_bearer_token_or_the_ui_cookie_is_200(auth_manager: Any, client: TestClient) -> None:
    jwt = token(auth_manager)
    resp = client.get(f"{PREFIX}/api/geo", headers={"Authorization": f"Bearer {jwt}"})
    assert resp.status_code == 200, resp.text
    assert resp.json()  # the department outlines
    client.cookies.set("_token", jwt)
    assert client.get(f"{PREFIX}/api/geo").status_code == 200


def test_a_viewer_may_read_the_dashboard(auth_manager: Any, client: TestClient) -> None:
    jwt = token(auth_manager, "someone", "viewer")
    assert client.get(f"{PREFIX}/api/geo", headers={"Authorization": f"Bearer {jwt}"}).status_code == 200


def test_forged_expired_or_unauthorised_tokens_are_refused(auth_manager: Any, client: TestClient) -> None:
    from airflow.api_fastapi.auth.tokens import JWTGenerator

    forged = JWTGenerator(secret_key="not-the-secret", valid_for=300, audience="apache-airflow").generate(
        {"sub": "admin", "role": "admin"}
    )
    expired = token(auth_manager, expiration_time_in_seconds=-120)
    no_role = token(auth_manager, "nobody", None)
    for jwt, status, detail in (
        (forged, 403, "Invalid JWT token"),
        ("garbage", 403, "Invalid JWT token"),
        (expired, 401, "Token Expired"),
        (no_role, 403, "Forbidden"),
    ):
        resp = client.get(f"{PREFIX}/api/geo", headers={"Authorization": f"Bearer {jwt}"})
        assert (resp.status_code, resp.json()["detail"]) == (status, detail), jwt


def test_page_without_a_login_redirects_to_airflow_login_and_back(auth_manager: Any, client: TestClient) -> None:
    for cookie in (None, "garbage", token(auth_manager, expiration_time_in_seconds=-120)):
        client.cookies.clear()
        if cookie:
            client.cookies.set("_token", cookie)
        resp = client.get(f"{PREFIX}/", params={"metric": "icu_occupancy"})
        assert resp.status_code == 307, resp.text
        target = urlsplit(resp.headers["location"])
        assert target.path == "/api/v2/auth/login"
        assert parse_qs(target.query)["next"] == [f"{BASE}{PREFIX}/?metric=icu_occupancy"]


def test_page_with_the_ui_cookie_is_served(auth_manager: Any, client: TestClient) -> None:
    client.cookies.set("_token", token(auth_manager))
    resp = client.get(f"{PREFIX}/")
    assert resp.status_code == 200
    assert "text/html" in resp.headers["content-type"]


def test_page_for_a_user_without_the_permission_is_403_not_a_login_loop(auth_manager: Any, client: TestClient) -> None:
    client.cookies.set("_token", token(auth_manager, "nobody", None))
    assert client.get(f"{PREFIX}/").status_code == 403


def test_static_assets_stay_public(client: TestClient) -> None:
    assert client.get(f"{PREFIX}/static/app.js").status_code == 200


def test_in_process_app_without_login_required_is_unchanged() -> None:
    """Tests that call create_app() directly (no api-server, no auth manager) still get their answers."""
    app = api.create_app(alias="covid-observations", client_factory=NoEs)
    assert TestClient(app).get("/api/geo").status_code == 200
