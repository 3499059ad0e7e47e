"""`covidflow stack up` fails loudly and usefully: it names the service, the cause, and exits non-zero.

Runs the real CLI in a second, empty $COVIDFLOW_HOME while the real stack holds the ports.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from covidflow.stack.service import port_open

pytestmark = pytest.mark.integration


def covidflow(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-c", "from covidflow.cli import main; main()", *args]
    env = {"COVIDFLOW_HOME": str(home), "PATH": "/usr/bin:/bin"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize(("service", "port"), [("kafka", 9092), ("elasticsearch", 9200)])
def test_a_port_taken_by_another_process_fails_naming_service_and_port(tmp_path: Path, service: str, port: int) -> None:
    assert port_open(port), f"the running stack should hold port {port}; run `covidflow stack up {service}`"
    result = covidflow(tmp_path, "stack", "up", service)
    assert result.returncode == 1
    assert f"stack up failed: {service}: port" in result.stderr
    assert f"{port}" in result.stderr and "already in use by a process the stack did not start" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run" / f"{service}.pid").exists()


def test_status_of_an_empty_home_says_down_and_exits_non_zero(tmp_path: Path) -> None:
    result = covidflow(tmp_path, "stack", "status")
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert [line.split()[:2] for line in lines[:6]] == [
        [name, "down"] for name in ("s3", "kafka", "cassandra", "elasticsearch", "spark", "airflow")
    ]


def test_an_unknown_service_is_a_usage_error(tmp_path: Path) -> None:
    result = covidflow(tmp_path, "stack", "logs", "mongodb")
    assert result.returncode == 2
    assert (
        "unknown service 'mongodb'; the stack has: s3, kafka, cassandra, elasticsearch, spark, airflow" in result.stderr
    )
