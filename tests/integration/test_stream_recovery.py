"""Exactly-once effect across a driver crash: kill -9 the stream's driver mid-batch, let the covidflow_stream DAG
restart it from its checkpoint, and the stores hold exactly the valid records (no duplicate, no gap).

Needs the whole local stack with Airflow, and the covidflow_stream DAG unpaused (the test unpauses it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fault_matrix import assert_clean
from test_e2e import _producer, _require_services, cassandra_by_vintage, es_by_vintage, expected_records

from covidflow.catalog.specs import find_spec, load_all
from covidflow.normalise.replay import publish_file
from covidflow.normalise.supervise import fetch_master_status, live_apps, read_heartbeat, stream_health
from covidflow.stack.home import StackHome
from covidflow.stack.services.airflow import airflow_env

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def airflow(*args: str) -> str:
    env = {**os.environ, **airflow_env(StackHome.from_env())}
    exe = Path(sys.executable).parent / "airflow"
    proc = subprocess.run([str(exe), *args], env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def wait_for(what: str, check, timeout: float, every: float = 5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; health: {stream_health()}")


def running_stream_app() -> str | None:
    apps = live_apps(fetch_master_status())
    beat = read_heartbeat() or {}
    return beat.get("app_id") if any(a["id"] == beat.get("app_id") for a in apps) else None


def active_stages(app_id: str) -> int:
    """Active stages of the driver (its UI is on the first free port from 4040)."""
    for port in range(4040, 4046):
        try:
            url = f"http://127.0.0.1:{port}/api/v1/applications/{app_id}/stages?status=active"
            with urllib.request.urlopen(url, timeout=3) as resp:
                return len(json.load(resp))
        except OSError:
            continue
    return 0


def idle_stream() -> str:
    """The stream's app id, once it runs (started by the DAG if needed) and has drained its backlog."""
    _require_services()
    airflow("dags", "unpause", "covidflow_stream")
    if not running_stream_app():
        airflow("dags", "trigger", "covidflow_stream")
    app = wait_for("the stream to run", running_stream_app, 400)
    wait_for("the backlog to drain", lambda: stream_health()["lag_messages"] == 0, 900, every=10)
    return app


def test_driver_killed_mid_batch_is_restarted_by_the_dag_without_duplicates_or_gaps() -> None:
    app = idle_stream()

    vintage = datetime.now(UTC).replace(microsecond=0)
    files = [(s.id, s.sample_path) for s in load_all().values() if s.sample_path and s.sample_path.exists()]
    expected = expected_records(files, vintage)
    producer = _producer()
    for sid, path in files:
        publish_file(producer, find_spec(sid), path, vintage=vintage)

    wait_for("a batch to be running", lambda: active_stages(app) > 0, 120, every=1)
    time.sleep(5)  # well inside the batch (a full-sample batch takes about a minute)
    assert stream_health()["lag_messages"] > 0, "the batch finished before the kill: nothing was tested"
    pid = read_heartbeat()["driver_pid"]
    os.kill(pid, signal.SIGKILL)

    new_app = wait_for("the DAG to restart the stream", lambda: (a := running_stream_app()) and a != app and a, 600)
    assert new_app != app
    assert len(live_apps(fetch_master_status())) == 1, "two copies of the stream"
    wait_for("the restarted stream to catch up", lambda: stream_health()["lag_messages"] == 0, 900, every=10)

    want = {rid: r["value"] for rid, r in expected.items()}
    assert cassandra_by_vintage(expected) == want
    assert es_by_vintage(expected) == want
    assert_clean("Spark driver killed mid-batch", expected)
