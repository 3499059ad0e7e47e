"""The local stack listens on loopback only (every socket of every stack process, children included), and none of its
secrets shows in a process list or a log.

Reads the pids the stack wrote under <COVIDFLOW_HOME>/run/*.pid and asks the kernel (psutil) for their listening
sockets. A stopped service or a missing pid file fails the test: it cannot vouch for what it did not see.
Needs: ``covidflow stack up`` (all services).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import psutil
import pytest

from covidflow.stack.home import StackHome

pytestmark = pytest.mark.integration

EXPECTED_PID_FILES = {
    "s3", "kafka", "cassandra", "elasticsearch", "spark-master", "spark-worker", "spark-worker-2",
    "airflow-api-server", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
}  # fmt: skip


def _run_dir() -> Path:
    return StackHome.from_env().root / "run"


def _processes() -> dict[str, list[psutil.Process]]:
    run = _run_dir()
    found = {p.stem: p for p in run.glob("*.pid")}
    missing = EXPECTED_PID_FILES - set(found)
    assert not missing, f"no pid file for {sorted(missing)} in {run}: run `covidflow stack up`"
    out: dict[str, list[psutil.Process]] = {}
    for name, path in sorted(found.items()):
        pid = int(path.read_text().split()[0])
        try:
            proc = psutil.Process(pid)
            out[name] = [proc, *proc.children(recursive=True)]
        except psutil.NoSuchProcess:
            pytest.fail(f"{name}: pid {pid} from {path} is not running: run `covidflow stack up`")
    return out


def _is_loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%")[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def test_every_listening_socket_of_the_stack_is_on_loopback() -> None:
    listening: list[str] = []
    exposed: list[str] = []
    for name, procs in _processes().items():
        for proc in procs:
            try:
                conns = proc.net_connections(kind="inet")
            except psutil.NoSuchProcess:
                continue  # a short-lived child (e.g. a gunicorn worker restart)
            for conn in conns:
                is_udp_bound = conn.type == 2 and not conn.raddr  # SOCK_DGRAM without a peer: it receives
                if conn.status != psutil.CONN_LISTEN and not is_udp_bound:
                    continue
                where = f"{name} (pid {proc.pid} {proc.name()}) {conn.laddr.ip}:{conn.laddr.port}"
                listening.append(where)
                if not _is_loopback(conn.laddr.ip):
                    exposed.append(where)
    # One listener per service at least: S3, Kafka (2), Cassandra, ES, Spark (4), Airflow api-server.
    assert len(listening) >= 10, listening
    assert exposed == [], "listening beyond loopback:\n" + "\n".join(exposed)


def _stack_secrets() -> dict[str, str]:
    import json

    path = StackHome.from_env().conf / "secrets.json"
    assert path.exists(), f"{path} is missing: run `covidflow stack up`"
    return json.loads(path.read_text())


def _log_files(home: StackHome) -> list[Path]:
    """Every log the stack and its jobs write: service logs, Airflow's task logs, Spark executors' stdout/stderr."""
    files = [p for p in home.logs.rglob("*") if p.is_file()]
    files += [p for p in (home.data / "airflow" / "logs").rglob("*") if p.is_file()]
    spark = home.data / "spark"
    files += [p for p in spark.glob("work*/app-*/*/*") if p.name in ("stdout", "stderr")]
    return files


def test_no_secret_of_the_stack_in_a_process_list_or_a_log() -> None:
    """Runs after the e2e and stream tests (file order), so the logs hold the runs that used every login."""
    secrets = _stack_secrets()
    assert {"kafka_client_password", "cassandra_password", "elasticsearch_password"} <= set(secrets)
    _processes()  # the whole stack is up: its processes are among those read below
    shown = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        line = " ".join(proc.info["cmdline"] or [])
        shown += [f"{name} in the command line of pid {proc.info['pid']}" for name, v in secrets.items() if v in line]
    home = StackHome.from_env()
    files = _log_files(home)
    assert len(files) > 10, f"only {len(files)} log files under {home.root}: nothing to vouch for"
    for path in files:
        text = path.read_bytes()
        shown += [f"{name} in {path}" for name, v in secrets.items() if v.encode() in text]
    assert shown == []
