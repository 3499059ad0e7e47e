"""Airflow's login in front of the dashboard: the same user, token and permission check as the Airflow UI.

Airflow mounts a plugin's FastAPI app with ``app.mount()``, and a mount inherits none of the core API's
router-level dependencies: a plugin app is anonymous unless it authenticates its routes itself. These
dependencies are Airflow's own (``airflow.api_fastapi.core_api.security``), so nothing here parses or signs a
token:

- the caller is the user of the JWT in the ``Authorization: Bearer`` header (``POST /auth/token``, as for
  ``/api/v2``) or in the ``_token`` cookie the Airflow UI sets at login; no token is a 401, a bad one a 403,
  an expired one a 401 (``get_user``);
- the configured auth manager must then allow that user to see the Airflow website (``AccessView.WEBSITE``,
  what any page of the UI needs), else 403.

The page answers a browser that is not logged in with a redirect to Airflow's login
(``/api/v2/auth/login?next=<the page>``), which sends it back here once logged in.

Importing this module imports Airflow's API package: only ``create_app(login_required=True)`` does, lazily.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from airflow.api_fastapi.app import API_ROOT_PATH
from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
from airflow.api_fastapi.auth.managers.models.resource_details import AccessView
from airflow.api_fastapi.core_api.security import bearer_scheme, get_user, requires_access_view
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials

# The dependency of every API route: authenticated, and allowed to see the Airflow website.
require_viewer = requires_access_view(AccessView.WEBSITE)


class LoginRequired(Exception):
    """The page was asked for without a valid login: the app answers with a redirect to ``login_url``."""

    def __init__(self, login_url: str) -> None:
        super().__init__(login_url)
        self.login_url = login_url


def login_url(request: Request) -> str:
    """Airflow's login entry point (whatever the auth manager), coming back to this URL afterwards."""
    return f"{API_ROOT_PATH}api/v2/auth/login?{urlencode({'next': str(request.url)})}"


async def page_user(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> BaseUser:
    """The page's dependency: like the API's, but a missing, expired or invalid token sends the browser to
    Airflow's login instead of answering 401/403. A logged-in user without the permission gets the 403."""
    try:
        user = await get_user(request, None, bearer)
    except HTTPException as exc:
        if exc.status_code in (status.HTTP_401_UNAUTHORIZED, status.HTTP_403_FORBIDDEN):
            raise LoginRequired(login_url(request)) from None
        raise
    require_viewer(request, user)
    return user


def api_dependencies() -> list[Any]:
    return [Depends(require_viewer)]
