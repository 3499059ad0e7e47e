"""A micro-batch stuck on a blocked sink: the supervisor kills the app, the stream resumes from its checkpoint.

The sink is really blocked: the Elasticsearch server process is paused with SIGSTOP (connections are accepted by
the kernel and never answered, as with a hung node), and always resumed with SIGCONT. While it is paused the
stream's driver keeps refreshing its heartbeat, so only the batch's own age shows it is stuck. The
covidflow_stream_watch DAG is triggered with a short ``stuck_batch_seconds``; it must kill the app on the master,
and covidflow_stream's restart path (the submit task's retry) must start a new app that replays the batch from
the checkpoint: the stores then hold exactly the published records.

Needs the whole local stack with Airflow. Disrupts Elasticsearch for everyone for about a minute and a half.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import psutil
import pytest
from test_e2e import _producer, cassandra_by_vintage, es_by_vintage, expected_records
from test_stream_recovery import active_stages, idle_stream, running_stream_app, wait_for

from covidflow.catalog.specs import find_spec
from covidflow.normalise.replay import publish_file
from covidflow.normalise.supervise import fetch_master_status, live_apps, read_heartbeat, stream_health
from covidflow.stack.airflow_api import AirflowClient
from covidflow.stack.home import StackHome
from covidflow.stack.runner import read_pid

pytestmark = [pytest.mark.integration, pytest.mark.e2e]
#: Short for the test; the configured default (include/config/stream.yaml) is 15 minutes.
STUCK_LIMIT_SECONDS = 30


def elasticsearch_server_pids() -> list[int]:
    """The Elasticsearch server JVM(s) under the stack's launcher process (the launcher itself does no I/O)."""
    root = read_pid(StackHome.from_env(), "elasticsearch")
    assert root, "no Elasticsearch pid in the stack home"
    procs = [psutil.Process(root), *psutil.Process(root).children(recursive=True)]
    servers = [p.pid for p in procs if "org.elasticsearch.bootstrap.Elasticsearch" in " ".join(p.cmdline())]
    return servers or [p.pid for p in procs]


@contextlib.contextmanager
def paused(pids: list[int]) -> Iterator[None]:
    """SIGSTOP the processes; SIGCONT them whatever happens."""
    stopped: list[int] = []
    try:
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
            stopped.append(pid)
        yield
    finally:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def test_a_batch_stuck_on_a_blocked_sink_is_killed_and_resumed_from_the_checkpoint() -> None:
    app = idle_stream()

    vintage = datetime.now(UTC).replace(microsecond=0)
    files = [(sid, find_spec(sid).sample_path) for sid in ("who_covid19_global_weekly", "spf_donnees_hospitalieres")]
    expected = expected_records(files, vintage)
    client = AirflowClient()
    client.wait_for_dags(["covidflow_stream_watch"])
    es_pids = elasticsearch_server_pids()
    with paused(es_pids):
        producer = _producer()
        for sid, path in files:
            publish_file(producer, find_spec(sid), path, vintage=vintage)
        wait_for("a batch to be running", lambda: active_stages(app) > 0, 120, every=1)
        time.sleep(STUCK_LIMIT_SECONDS + 5)
        assert running_stream_app() == app, "the app ended on its own: nothing was tested"
        health = stream_health()
        assert health["heartbeat_age_seconds"] < 30, "the heartbeat went stale: that is the other check"
        print(
            f"before the watch: batch {health.get('batch_in_progress')} running {health.get('batch_running_seconds')}s"
        )
        run_id = client.trigger("covidflow_stream_watch", {"stuck_batch_seconds": STUCK_LIMIT_SECONDS})
        wait_for("the supervisor to kill the stuck app", lambda: running_stream_app() != app, 180, every=2)
    # Elasticsearch answers again (resumed at once); the watch run says what it did and why.
    state, _ = client.wait("covidflow_stream_watch", run_id, timeout=180)
    assert state == "success"
    acted = client.call(
        "GET", f"/api/v2/dags/covidflow_stream_watch/dagRuns/{run_id}/taskInstances/watch/xcomEntries/return_value"
    )["value"]
    assert (acted["killed"], acted["killed_because"]) == ([app], "stuck"), acted
    # The restart path (the submit task's retry) starts a new app from the checkpoint, which replays the batch.
    new_app = wait_for("the restarted stream", lambda: (a := running_stream_app()) and a != app and a, 400)
    assert len(live_apps(fetch_master_status())) == 1, "two copies of the stream"
    wait_for("the restarted stream to catch up", lambda: stream_health()["lag_messages"] == 0, 900, every=10)
    assert (read_heartbeat() or {}).get("app_id") == new_app

    want = {rid: r["value"] for rid, r in expected.items()}
    assert cassandra_by_vintage(expected) == want
    assert es_by_vintage(expected) == want  # keyed by _id: a second copy of a record would be an extra id
