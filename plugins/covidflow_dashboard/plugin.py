"""Airflow 3 plugin: the covidflow dashboard (FastAPI app at /covidflow, linked from the Airflow menu).

Only registration lives here; the API is covidflow.show.api (unit-tested outside Airflow). Importing this
file builds the app but opens no connection: Elasticsearch is reached on the first request.

Airflow does not authenticate a plugin's FastAPI app (a mount inherits none of the core API's dependencies),
so the app is built with ``login_required=True``: the page and the API need the Airflow UI's login
(covidflow.show.auth). tests/unit/test_dashboard_auth.py checks this very app.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from airflow.plugins_manager import AirflowPlugin

from covidflow.show.api import create_app

URL_PREFIX = "/covidflow"


class CovidflowDashboardPlugin(AirflowPlugin):
    name = "covidflow_dashboard"
    fastapi_apps: ClassVar[list[dict[str, Any]]] = [
        {
            "app": create_app(static_dir=Path(__file__).parent / "static", login_required=True),
            "url_prefix": URL_PREFIX,
            "name": "covidflow dashboard",
        }
    ]
    external_views: ClassVar[list[dict[str, Any]]] = [
        {
            "name": "COVID dashboard",
            "href": "covidflow/",
            "destination": "nav",
            "url_route": "covid-dashboard",
            "nav_top_level": True,
        }
    ]
