"""SparkSubmitOperator for the long-running stream, with the guards the stock operator lacks.

* Never two copies: right before submitting, it asks the Spark master (and the job's heartbeat) whether
  covidflow-normalise is alive, and skips if so; the DAG also limits the task to one running instance.
* A hung driver (master says RUNNING, heartbeat stale) or a stuck batch (one batch running longer than the
  limit) is killed through the master before resubmitting (the DAG's stream_health task does it first).
* on_kill: the stock hook SIGKILLs the ``spark-submit`` JVM only (client mode), which can orphan the
  Python driver; here the driver is first asked to stop (SIGTERM -> query.stop()), then the app is
  killed on the master, then the stock on_kill runs.
* The bundle (covidflow/ + include/) is rebuilt at every submission, so the job runs exactly this code.
* No secret on the command line: the driver reads the store connections from the environment it inherits, and
  ``configure`` refuses a conf, argument or environment value that holds one of their secrets (the hook puts conf
  and, on YARN or Kubernetes, env_vars on the spark-submit command line, and logs it). The secrets are registered
  with Airflow's masker, so the driver's output, which the hook copies into the task log, never shows them.
See docs/decisions/0010-stream-supervision.md and 0019-client-factories-and-secrets-to-spark.md.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

from covidflow.normalise.stream_names import APP_NAME

#: Secrets at least this long are searched for in what the command line carries (see ``configure``).
MIN_SEARCHED_SECRET = 8


def kill_app(app_id: str, master_ui: str) -> None:
    """Ask the standalone master to kill an application (its UI kill endpoint)."""
    data = urllib.parse.urlencode({"id": app_id, "terminate": "true"}).encode()
    urllib.request.urlopen(f"{master_ui}/app/kill/", data=data, timeout=10).close()


def stream_secrets(conn_ids: Iterable[str] | None = None) -> list[str]:
    """Every secret of the connections the stream uses: passwords, secret-named extra values (``sasl.password``)
    and the JAAS line Spark's Kafka source gets. Read through ``covidflow.clients``, as the job reads them."""
    from covidflow import clients

    secrets: list[str] = []
    for conn_id in conn_ids or clients.STREAM_CONNECTIONS:
        conn = clients.airflow_connection(conn_id)
        if conn is None:
            continue
        secrets.append(conn.password or "")
        secrets += [str(v) for k, v in (conn.extra_dejson or {}).items() if clients.SECRET_KEY_PATTERN.search(str(k))]
    jaas = clients.kafka_spark_options().get("kafka.sasl.jaas.config")
    return sorted({s for s in [*secrets, jaas or ""] if s})


def mask_stream_secrets(conn_ids: Iterable[str] | None = None) -> int:
    """Register the stream's secrets with Airflow's secrets masker (task log and supervisor); returns how many."""
    from airflow.sdk.log import mask_secret

    secrets = stream_secrets(conn_ids)
    for secret in secrets:
        mask_secret(secret)
    return len(secrets)


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
        mask_stream_secrets()
        home = StackHome.from_env()
        self.configure(submit_conf(build_bundle()), kafka_connector_jars(home), spark_env(home))
        super().execute(context)

    def configure(self, conf: dict[str, str], jars: Iterable[Path], env: dict[str, str]) -> None:
        """Conf, jars and environment of this submission; raises if any of them, or the application arguments,
        holds a secret of the stream's connections (the hook would put it on the command line and in the log)."""
        venv_bin = str(Path(sys.executable).parent)
        self.conf = {**(self.conf or {}), **conf}
        self.jars = ",".join(str(j) for j in jars)
        self.env_vars = {**env, **(self.env_vars or {}),
                         "PATH": f"{venv_bin}:{os.environ.get('PATH', '/usr/bin:/bin')}"}  # fmt: skip
        exposed = [*self.conf.items(), *self.env_vars.items(), *enumerate(self.application_args or [])]
        # Shorter secrets would match ordinary words ("spark" in spark.driver.memory): not searched, never refused.
        secrets = [s for s in stream_secrets() if len(s) >= MIN_SEARCHED_SECRET]
        leaks = sorted({str(key) for key, value in exposed if any(s in str(value) for s in secrets)})
        if leaks:
            raise ValueError(f"refusing to submit: {', '.join(leaks)} would put a connection secret on the "
                             "spark-submit command line; the driver reads connections from its env")  # fmt: skip
        self._hook = None  # built from the conf above

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
