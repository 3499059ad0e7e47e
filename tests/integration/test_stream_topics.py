"""Issue 14, item 4, on the real stack: the stream never creates Kafka topics. Started against topics that do not
exist, the job stops at once, names them and says what to run, and the topics still do not exist afterwards
(an auto-created topic would get the broker's defaults, not topics.yaml's partitions and configs)."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest
from test_e2e import _require_services

from covidflow import settings
from covidflow.clients import kafka_config
from covidflow.normalise.supervise import build_bundle, fetch_master_status, spark_submit_command
from covidflow.stack.home import StackHome
from covidflow.stack.services.spark import kafka_connector_jars, spark_env

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def test_the_stream_refuses_to_start_on_missing_topics_and_creates_none(tmp_path: Path) -> None:
    from confluent_kafka.admin import AdminClient

    _require_services()
    token = uuid.uuid4().hex[:8]
    raw, dead = f"covid.raw.missing.{token}", f"covid.deadletter.missing.{token}"
    env = {
        **os.environ,
        **spark_env(StackHome.from_env()),
        "COVIDFLOW_STREAM_STATE_DIR": str(tmp_path),
        "COVIDFLOW_STREAM_RAW_TOPIC": raw,
        "COVIDFLOW_STREAM_DEADLETTER_TOPIC": dead,
    }
    master = settings.SPARK_MASTER if fetch_master_status() else "local[2]"
    cmd = spark_submit_command(master, ["--app-name", f"covidflow-normalise-topics-{token}"],
                               bundle=build_bundle(tmp_path / "b.zip"), jars=kafka_connector_jars())  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-3000:]
    assert f"Kafka topic(s) {raw}, {dead} do not exist on {settings.KAFKA_BOOTSTRAP}" in output, output[-3000:]
    assert "Run the covidflow_kafka_topics DAG" in output
    topics = AdminClient(kafka_config()).list_topics(timeout=30).topics
    assert raw not in topics and dead not in topics, "the job created a topic"
    assert not (tmp_path / "heartbeat.json").exists(), "the job started a query before checking its topics"
