"""Supervision of the long-running stream: is it alive, how healthy, and how to (re)submit exactly one copy.

Used by the ``covidflow_stream`` DAG, the tests and the benchmark. Liveness comes from the Spark master
(an active application named covidflow-normalise) and the job's heartbeat file; lag from the checkpoint's
last committed Kafka offsets against the topic's high watermarks.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import zipfile
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from covidflow import PROJECT_ROOT
from covidflow.normalise.stream_names import master_ui_url
from covidflow.normalise.stream_runtime import APP_NAME, StreamConfig, state_dir

log = logging.getLogger(__name__)
JOB_PATH = PROJECT_ROOT / "spark_jobs" / "normalise_stream.py"
BUNDLE_NAME = "covidflow_bundle"
LIVE_STATES = {"RUNNING", "WAITING", "SUBMITTED"}
#: Supervision limits as data (read at every DAG run); the values below apply when a key is missing.
CONFIG_PATH = PROJECT_ROOT / "include" / "config" / "stream.yaml"
#: A heartbeat older than this while the master says RUNNING means a hung driver.
STALE_AFTER_SECONDS = 180
#: One micro-batch running longer than this means a stuck batch (a blocked sink, a hung executor).
STUCK_AFTER_SECONDS = 900
#: Small, explicit memory: the machine is shared by the whole stack.
SPARK_CONF: dict[str, str] = {
    "spark.driver.memory": "768m",
    "spark.executor.memory": "768m",
    "spark.executor.cores": "1",
    "spark.cores.max": "1",
    "spark.sql.shuffle.partitions": "2",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.streaming.metricsEnabled": "true",
}


def supervision_limits(overrides: Mapping[str, Any] | None = None, path: Path | None = None) -> dict[str, float]:
    """``stale_heartbeat_seconds`` and ``stuck_batch_seconds`` from include/config/stream.yaml, with per-run
    overrides (the DAG's params; a None value keeps the configured one)."""
    import yaml

    try:
        cfg = yaml.safe_load(Path(path or CONFIG_PATH).read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        cfg = {}
    limits = {"stale_heartbeat_seconds": STALE_AFTER_SECONDS, "stuck_batch_seconds": STUCK_AFTER_SECONDS}
    limits.update({k: v for k, v in (cfg.get("supervision") or {}).items() if k in limits})
    limits.update({k: v for k, v in (overrides or {}).items() if k in limits and v is not None})
    for key, value in limits.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ValueError(f"stream supervision limit {key} must be a positive number of seconds, not {value!r}")
    return {k: float(v) for k, v in limits.items()}


def live_apps(master_status: dict[str, Any] | None, name: str = APP_NAME) -> list[dict[str, Any]]:
    """Active applications called ``name`` in the master's /json/ document (pure)."""
    if not master_status:
        return []
    return [a for a in master_status.get("activeapps", []) if a.get("name") == name and a.get("state") in LIVE_STATES]


def fetch_master_status(url: str | None = None, timeout: float = 5.0) -> dict[str, Any] | None:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url or master_ui_url()}/json/", timeout=timeout) as resp:
            return json.load(resp)
    except (OSError, ValueError):
        return None


def read_heartbeat(path: str | Path | None = None) -> dict[str, Any] | None:
    path = Path(path or StreamConfig().heartbeat)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def committed_offsets(checkpoint: str | Path) -> dict[str, dict[str, int]]:
    """{topic: {partition: next offset}} of the last committed batch in a Structured Streaming checkpoint."""
    checkpoint = Path(checkpoint)
    commits = [int(p.name) for p in (checkpoint / "commits").glob("[0-9]*") if p.name.isdigit()]
    if not commits:
        return {}
    offsets_file = checkpoint / "offsets" / str(max(commits))
    try:
        lines = offsets_file.read_text(encoding="utf-8").splitlines()
    except OSError:
        return {}
    for line in reversed(lines):  # v1, metadata json, then one line per source
        if line.startswith("{") and "batchWatermarkMs" not in line:
            return {t: {p: int(o) for p, o in parts.items()} for t, parts in json.loads(line).items()}
    return {}


def kafka_lag(committed: dict[str, dict[str, int]], high: dict[str, dict[str, int]]) -> int | None:
    """Messages on the topics not yet committed by the stream (pure); None if nothing to compare."""
    if not high:
        return None
    lag = 0
    for topic, parts in high.items():
        for part, end in parts.items():
            lag += max(0, end - committed.get(topic, {}).get(part, 0))
    return lag


def high_watermarks(topic: str, bootstrap: str | None = None, timeout: float = 10.0) -> dict[str, dict[str, int]]:
    from confluent_kafka import Consumer, TopicPartition

    from covidflow.clients import kafka_config

    consumer = Consumer(kafka_config({"group.id": "covidflow-health"}, bootstrap=bootstrap))
    try:
        meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if meta is None or meta.error is not None:
            return {}
        out = {}
        for part in meta.partitions:
            _, hi = consumer.get_watermark_offsets(TopicPartition(topic, part), timeout=timeout)
            out[str(part)] = hi
        return {topic: out}
    finally:
        consumer.close()


def _age_seconds(iso: str | None, now: datetime) -> float | None:
    if not iso:
        return None
    return round((now - datetime.fromisoformat(iso)).total_seconds(), 1)


def assess(
    master_status: dict[str, Any] | None,
    heartbeat: dict[str, Any] | None,
    lag: int | None,
    *,
    now: datetime | None = None,
    stale_after: float = STALE_AFTER_SECONDS,
    stuck_after: float = STUCK_AFTER_SECONDS,
) -> dict[str, Any]:
    """One health verdict (pure): alive, hung, stuck or dead, with last batch time, input rate and lag.

    *Hung*: the master runs the heartbeat's app, but the heartbeat is older than ``stale_after`` (the driver
    stopped). *Stuck*: the driver is fine, but the batch it reports in progress has run longer than
    ``stuck_after`` (a blocked sink or executor). Neither counts as alive: both are killed and restarted.
    """
    now = now or datetime.now(UTC)
    apps = live_apps(master_status)
    hb = heartbeat or {}
    beat_age = _age_seconds(hb.get("updated_at"), now)
    own = bool(apps) and any(a.get("id") == hb.get("app_id") for a in apps)
    hung = own and beat_age is not None and beat_age > stale_after
    batch_age = _age_seconds(hb.get("batch_started_at"), now) if hb.get("batch_in_progress") is not None else None
    stuck = own and batch_age is not None and batch_age > stuck_after
    return {
        "master_reachable": master_status is not None,
        "running_apps": [a.get("id") for a in apps],
        "alive": bool(apps) and not hung and not stuck,
        "hung": hung,
        "stuck": stuck,
        "app_id": hb.get("app_id"),
        "heartbeat_age_seconds": beat_age,
        "stale_after_seconds": stale_after,
        "batch_in_progress": hb.get("batch_in_progress"),
        "batch_started_at": hb.get("batch_started_at"),
        "batch_running_seconds": batch_age,
        "stuck_after_seconds": stuck_after,
        "last_batch_id": hb.get("last_batch_id"),
        "last_batch_at": hb.get("last_batch_at"),
        "last_batch_age_seconds": _age_seconds(hb.get("last_batch_at"), now),
        "input_rows_per_second": hb.get("input_rows_per_second"),
        "processed_rows_per_second": hb.get("processed_rows_per_second"),
        "offsets_behind_latest": hb.get("offsets_behind_latest"),
        "lag_messages": lag,
        "totals": hb.get("totals", {}),
    }


def stream_health(cfg: StreamConfig | None = None, limits: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Gather master status, heartbeat and Kafka lag, and assess them (I/O); ``limits`` overrides stream.yaml."""
    cfg = cfg or StreamConfig.from_env()
    lim = supervision_limits(limits)
    try:
        lag = kafka_lag(committed_offsets(cfg.checkpoint), high_watermarks(cfg.raw_topic, cfg.bootstrap))
    except Exception:  # health must still report the rest when Kafka is down
        lag = None
    return assess(fetch_master_status(), read_heartbeat(cfg.heartbeat), lag,
                  stale_after=lim["stale_heartbeat_seconds"], stuck_after=lim["stuck_batch_seconds"])  # fmt: skip


def unhealthy_reason(health: Mapping[str, Any]) -> str | None:
    """Why the running app must be killed, in one line for the log (pure); None when it must not."""
    reasons = []
    if health.get("stuck"):
        reasons.append(
            f"batch {health['batch_in_progress']} has been running for {health['batch_running_seconds']:.0f}s "
            f"(since {health['batch_started_at']}; limit {health['stuck_after_seconds']:.0f}s): stuck"
        )
    if health.get("hung"):
        reasons.append(
            f"heartbeat stale for {health['heartbeat_age_seconds']:.0f}s "
            f"(limit {health['stale_after_seconds']:.0f}s): driver hung"
        )
    return "; ".join(reasons) or None


def kill_unhealthy(
    health: Mapping[str, Any],
    kill: Callable[[str], None],
    *,
    logger: logging.Logger | None = None,
    wait_seconds: float = 60.0,
) -> list[str]:
    """Kill the running app(s) of a hung or stuck stream through ``kill`` (the master's kill endpoint), and wait
    until the master no longer lists them. The driver then exits with an error, the task holding it fails, and
    its retry (or the next run's submit) restarts the job from its checkpoint, which replays the batch."""
    reason = unhealthy_reason(health)
    if not reason:
        return []
    logger = logger or log
    killed = list(health.get("running_apps") or [])
    for app_id in killed:
        logger.warning("stream app %s: %s; action: killing it on the master, the restart resumes from the "
                       "checkpoint and replays the batch", app_id, reason)  # fmt: skip
        kill(app_id)
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        still = [a.get("id") for a in live_apps(fetch_master_status()) if a.get("id") in killed]
        if not still:
            logger.warning("stream app(s) %s killed; the submit task restarts the stream from its checkpoint", killed)
            break
        time.sleep(2)
    else:
        logger.error("stream app(s) %s still listed by the master %ss after the kill", killed, wait_seconds)
    return killed


def build_bundle(dest: Path | None = None) -> Path:
    """Zip covidflow/ and include/ (specs, schemas, locations, metrics) for ``--archives ...#covidflow_bundle``."""
    dest = dest or state_dir() / f"{BUNDLE_NAME}.zip"
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for top in ("covidflow", "include"):
            for path in sorted((PROJECT_ROOT / top).rglob("*")):
                if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                    if top == "include" and path.parts[len(PROJECT_ROOT.parts) + 1] == "samples":
                        continue  # samples are test data, not code
                    zf.write(path, path.relative_to(PROJECT_ROOT).as_posix())
    tmp.replace(dest)
    return dest


def submit_conf(bundle: Path, executor_env: Path | None = None, *, master: str | None = None) -> dict[str, str]:
    """Spark conf for the job: small memory, the code bundle and the executors' Python environment as archives.

    Executors run ``./covidflow_env/bin/python`` from the packed environment (``covidflow.stack.executor_env``;
    built on first use when ``executor_env`` is not given), so a worker needs nothing installed but Python 3.11.
    The driver keeps this venv's Python. A ``local`` master has no separate executors: they run this Python."""
    conf = {**SPARK_CONF, "spark.pyspark.driver.python": sys.executable}
    if master is not None and master.startswith("local"):
        return {**conf, "spark.archives": f"{bundle}#{BUNDLE_NAME}", "spark.pyspark.python": sys.executable}
    from covidflow.stack.executor_env import ENV_NAME, ensure_executor_env

    env = executor_env or ensure_executor_env()
    return {
        **conf,
        "spark.archives": f"{bundle}#{BUNDLE_NAME},{env}#{ENV_NAME}",
        "spark.pyspark.python": f"./{ENV_NAME}/bin/python",
    }


def spark_submit_command(
    master: str, job_args: list[str], *, bundle: Path, jars: list[Path], executor_env: Path | None = None
) -> list[str]:
    """The plain ``spark-submit`` command the DAG's operator amounts to (used by tests and the benchmark)."""
    cmd = [str(Path(sys.executable).parent / "spark-submit"), "--master", master, "--name", APP_NAME]
    cmd += ["--jars", ",".join(str(j) for j in jars)]
    for key, value in submit_conf(bundle, executor_env, master=master).items():
        cmd += ["--conf", f"{key}={value}"]
    return [*cmd, str(JOB_PATH), *job_args]
