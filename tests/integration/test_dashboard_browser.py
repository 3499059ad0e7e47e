"""The dashboard page in headless Chromium, served by the running Airflow api-server (the real plugin),
reading the test alias filled with the bundled samples (see test_dashboard_api.index_samples).

Chromium is driven through its DevTools protocol with websocket-client: no driver binary, no download.
Missing Chromium is a failure that says how to install it, never a skip.

The browser logs in first, as a person would: the dashboard sends it to Airflow's login page, it signs in as the
stack's admin, and lands back on the dashboard (issue 14, item 8).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from base64 import b64decode
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from test_dashboard_api import ALIAS, dashboard_index, spf  # noqa: F401  (dashboard_index is a fixture)
from test_kibana_queries import gerstung_france

from covidflow import PROJECT_ROOT, settings

pytestmark = pytest.mark.integration

ARTIFACTS = PROJECT_ROOT / "tests" / "artifacts"
INSTALL = "bash scripts/install-browser.sh"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
    "--window-size=1400,1750",
    "--hide-scrollbars",
]


class Page:
    """One Chromium tab over CDP: evaluate JS, collect console errors, take screenshots."""

    def __init__(self, ws_url: str) -> None:
        import websocket

        self.ws = websocket.create_connection(ws_url, timeout=30, suppress_origin=True)
        self.ids = itertools.count(1)
        self.errors: list[str] = []
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")

    def _event(self, msg: dict[str, Any]) -> None:
        method, p = msg.get("method"), msg.get("params", {})
        if method == "Runtime.consoleAPICalled" and p["type"] in ("error", "assert"):
            self.errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in p["args"]))
        elif method == "Runtime.exceptionThrown":
            self.errors.append(p["exceptionDetails"].get("exception", {}).get("description", str(p)))
        elif method == "Log.entryAdded" and p["entry"]["level"] == "error":
            self.errors.append(f"{p['entry'].get('url', '')}: {p['entry']['text']}")

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        msg_id = next(self.ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self._event(msg)

    def js(self, expr: str) -> Any:
        res = self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in res:
            raise RuntimeError(res["exceptionDetails"])
        return res["result"].get("value")

    def wait(self, expr: str, timeout: float = 20.0) -> None:
        """Poll ``expr`` until true. While the page navigates (the login redirects) an evaluation can fail with
        "context destroyed" or a missing element: that counts as not yet, and the last such error is reported."""
        deadline = time.monotonic() + timeout
        failure: Exception | None = None
        while True:
            try:
                if self.js(expr):
                    return
            except RuntimeError as exc:
                failure = exc
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {expr}; last error: {failure}; console: {self.errors}")
            time.sleep(0.1)

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(
            b64decode(self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"])
        )


@pytest.fixture(scope="module")
def page(dashboard_index: str) -> Iterator[Page]:  # noqa: F811
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        pytest.fail(f"Chromium is not installed: run `{INSTALL}` (apt chromium + pinned websocket-client)")
    try:
        import websocket  # noqa: F401
    except ImportError:
        pytest.fail(f"websocket-client is not installed: run `{INSTALL}`")
    profile = tempfile.mkdtemp(prefix="covidflow-chromium-")
    proc = subprocess.Popen(
        [chromium, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file = Path(profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not port_file.exists() or not port_file.read_text().strip():
            assert time.monotonic() < deadline, "Chromium did not start"
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list"))
        tab = next(t for t in targets if t["type"] == "page")
        page = Page(tab["webSocketDebuggerUrl"])
        log_in(page)
        yield page
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(profile, ignore_errors=True)


def dashboard_url(**state: str) -> str:
    base = os.environ.get("COVIDFLOW_AIRFLOW_URL", settings.AIRFLOW_URL)
    return f"{base}/covidflow/?{urlencode({'alias': ALIAS, **state})}"


def api_status(page: Page) -> int:
    """What the dashboard API answers this browser (its cookies go along), from any page of the server."""
    return page.js("fetch('/covidflow/api/geo').then(r => r.status)")


def log_in(page: Page) -> None:
    """A new visitor opens the dashboard: Airflow's login page comes first; signing in as the stack's admin comes
    back to the dashboard, and the UI's ``_token`` cookie then goes with every API call."""
    from covidflow.stack.services.airflow import ADMIN_USER, admin_password

    page.call("Page.navigate", url=dashboard_url())
    page.wait("location.pathname === '/auth/login' && !!document.querySelector('input[name=password]')", 60)
    assert "next=" in page.js("location.search") and "covidflow" in page.js("decodeURIComponent(location.search)")
    assert api_status(page) == 401
    for name, value in (("username", ADMIN_USER), ("password", admin_password())):
        page.js(f"document.querySelector('input[name={name}]').focus()")
        page.call("Input.insertText", text=value)
    page.wait("!document.querySelector('button[type=submit]').disabled", 60)
    page.js("document.querySelector('button[type=submit]').click()")
    page.wait("location.pathname === '/covidflow/' && document.body.dataset.ready === '1'", 60)
    assert page.js("new URLSearchParams(location.search).get('alias')") == ALIAS
    assert api_status(page) == 200


def open_dashboard(page: Page, **state: str) -> None:
    page.errors.clear()
    page.call("Page.navigate", url=dashboard_url(**state))
    page.wait("document.readyState === 'complete' && document.body && document.body.dataset.ready === '1'")


def map_value(page: Page, key: str) -> float:
    return float(page.js(f"document.getElementById('dep-{key}').dataset.value"))


def change(page: Page, element_id: str, value: str) -> None:
    page.js(
        f"(() => {{ const el = document.getElementById({element_id!r}); el.value = {value!r};"
        " el.dispatchEvent(new Event('change', {bubbles: true})); })()"
    )
    page.wait("document.body.dataset.loading === '0'")


def test_page_loads_without_console_errors_and_draws_every_department(page: Page) -> None:
    open_dashboard(
        page,
        metric="hospital_occupancy",
        source="spf_donnees_hospitalieres",
        date="2020-04-01",
        places="FR-D75,FR-D13,FR-D69",
        start="2020-04-01",
        end="2020-04-14",
    )
    assert page.js("document.querySelectorAll('#map path').length") == 101
    assert page.js("new Set([...document.querySelectorAll('#map path')].map(p => p.dataset.key)).size") == 101
    assert page.js("document.getElementById('status').textContent") == ""
    assert page.js("document.querySelectorAll('#series canvas').length") >= 1
    # Gerstung (names BF.7) comes first; it published one week, drawn as ranked bars with the file's shares.
    assert page.js("document.getElementById('vsource').value") == "gerstung_variant_share"
    bars = page.js("[...document.querySelectorAll('#variants tr')].map(r => [r.dataset.variant, r.cells[1].innerText])")
    france = gerstung_france()
    assert {variant: share for variant, share in bars} == {v: f"{s:g} %" for v, s in france.items()}
    assert page.js("[...document.querySelectorAll('#variants tr.bf7')].map(r => r.dataset.variant)") == ["BF.7"]
    # the samples start on 04-01: no week-over-week yet on that day
    assert "no place has two full weeks" in page.js("document.getElementById('growth').textContent")
    assert page.js("document.querySelectorAll('#freshness tr').length") == 5  # header + 4 sources
    assert map_value(page, "FR-D75") == spf("75", "2020-04-01", "hosp") == 2633.0
    page.screenshot(ARTIFACTS / "dashboard_initial.png")
    if os.environ.get("COVIDFLOW_README_SCREENSHOT"):
        page.screenshot(PROJECT_ROOT / "docs" / "img" / "dashboard.png")
    assert page.errors == []


def test_changing_date_and_metric_updates_the_figures(page: Page) -> None:
    open_dashboard(page, metric="hospital_occupancy", source="spf_donnees_hospitalieres", date="2020-04-01")
    change(page, "date", "2020-04-10")
    assert page.js("document.getElementById('map').dataset.date") == "2020-04-10"
    assert map_value(page, "FR-D75") == spf("75", "2020-04-10", "hosp")
    assert "date=2020-04-10" in page.js("location.search")
    growth = page.js("[...document.querySelectorAll('#growth tr')].slice(1).map(r => r.cells[0].textContent)")
    assert len(growth) == 10
    change(page, "metric", "icu_occupancy")
    assert page.js("document.getElementById('map').dataset.metric") == "icu_occupancy"
    assert map_value(page, "FR-D75") == spf("75", "2020-04-10", "rea")
    assert map_value(page, "FR-D13") == spf("13", "2020-04-10", "rea")
    assert "metric=icu_occupancy" in page.js("location.search")
    page.screenshot(ARTIFACTS / "dashboard_icu_2020-04-10.png")
    change(page, "level", "region")
    idf = sum(spf(d, "2020-04-10", "rea") for d in ("75", "77", "78", "91", "92", "93", "94", "95"))
    assert map_value(page, "FR-D75") == idf  # each department shows its region's figure
    page.screenshot(ARTIFACTS / "dashboard_regions.png")
    assert page.errors == []


def test_the_variant_source_can_be_switched_and_is_kept_in_the_url(page: Page) -> None:
    open_dashboard(page, metric="hospital_occupancy", source="spf_donnees_hospitalieres", date="2020-04-01")
    change(page, "vsource", "ecdc_erviss_variants")
    assert "vsource=ecdc_erviss_variants" in page.js("location.search")
    assert page.js("document.querySelectorAll('#variants canvas').length") >= 1  # 17 weeks: a chart
    assert "ecdc_erviss_variants" in page.js("document.getElementById('variants-title').textContent")
    open_dashboard(page, metric="hospital_occupancy", vsource="ecdc_erviss_variants")
    assert page.js("document.getElementById('vsource').value") == "ecdc_erviss_variants"
    assert page.errors == []


def test_bad_url_state_shows_a_message_not_a_crash(page: Page) -> None:
    open_dashboard(
        page, metric="hospital_occupancy", source="spf_donnees_hospitalieres", date="2020-04-01", places="Atlantis"
    )
    assert "unknown place 'Atlantis'" in page.js("document.getElementById('status').textContent")
    assert page.js("document.querySelectorAll('#map path').length") == 101
