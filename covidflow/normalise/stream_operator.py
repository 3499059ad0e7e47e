"""SparkSubmitOperator for the long-running stream, with the guards the stock operator lacks.

* Never two copies: right before submitting, it asks the Spark master (and the job's heartbeat) whether
  covidflow-normalise is alive, and skips if so; the DAG also limits the task to one running instance.
* A hung driver (master says RUNNING, heartbeat stale) or a stuck batch (one batch running longer than the
  limit) is killed through the master before resubmitting (the DAG's stream_health task does it first).
* on_kill: the stock hook SIGKILLs the ``spark-submit`` JVM only (client mode), which can orphan the
  Python driver; here the driver is first asked to stop (SIGTERM -> query.stop()), then the app is
  killed on the master, then the stock on_kill runs.
* The bundle (covidflow/ + include/) is rebuilt at every submission, so the job runs exactly this code.
See docs/decisions/0010-stream-supervision.md.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

from covidflow.normalise.stream_names import APP_NAME


def kill_app(app_id: str, master_ui: str) -> None:
    """Ask the standalone master to kill an application (its UI kill endpoint)."""
    data = urllib.parse.urlencode({"id": app_id, "terminate": "true"}).encode()
    urllib.request.urlopen(f"{master_ui}/app/kill/", data=data, timeout=10).close()


class StreamSubmitOperator(SparkSubmitOperator):
    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("name", APP_NAME)
        super().__init__(**kwargs)

    def execute(self, context: Any) -> None:
        from airflow.sdk.exceptions import AirflowSkipException

        from covidflow.normalise.supervise import (
            build_bundle,
            kill_unhealthy,
            master_ui_url,
            stream_health,
            submit_conf,
        )
        from covidflow.stack.home import StackHome
        from covidflow.stack.services.spark import kafka_connector_jars, spark_env

        limits = (context or {}).get("params") or {}
        health = stream_health(limits=limits)
        self.log.info("stream health before submit: %s", health)
        if kill_unhealthy(health, lambda app_id: kill_app(app_id, master_ui_url()), logger=self.log):
            time.sleep(5)
            health = stream_health(limits=limits)
        if health["alive"] or health["running_apps"]:
            raise AirflowSkipException(f"{APP_NAME} already running: {health['running_apps']}")
        if not health["master_reachable"]:
            raise RuntimeError(f"Spark master {master_ui_url()} does not answer: not submitting blind")
        home = StackHome.from_env()
        self.conf = {**(self.conf or {}), **submit_conf(build_bundle())}
        self.jars = ",".join(str(j) for j in kafka_connector_jars(home))
        venv_bin = str(Path(sys.executable).parent)
        self.env_vars = {**spark_env(home), **(self.env_vars or {}),
                         "PATH": f"{venv_bin}:{os.environ.get('PATH', '/usr/bin:/bin')}"}  # fmt: skip
        self._hook = None  # built from the conf above
        super().execute(context)

    def on_kill(self) -> None:
        from covidflow.normalise.supervise import master_ui_url, read_heartbeat

        beat = read_heartbeat() or {}
        pid = beat.get("driver_pid")
        if pid:
            try:
                os.kill(int(pid), signal.SIGTERM)  # graceful: the job stops its query and exits
                for _ in range(30):
                    os.kill(int(pid), 0)
                    time.sleep(1)
            except (ProcessLookupError, PermissionError, ValueError):
                pass
        if beat.get("app_id"):
            with contextlib.suppress(OSError):
                kill_app(beat["app_id"], master_ui_url())
        super().on_kill()
