"""The running Spark standalone cluster (``covidflow stack up spark``): jobs submitted to it run on its worker."""

from __future__ import annotations

import os
import subprocess
import textwrap
import uuid
from pathlib import Path

import pytest

from covidflow import settings
from covidflow.clients import kafka_config
from covidflow.stack.home import StackHome
from covidflow.stack.service import port_open
from covidflow.stack.services.spark import kafka_connector_jars, master_status, spark_env, spark_home

pytestmark = pytest.mark.integration

SUM_JOB = """
import sys
from pyspark.sql import SparkSession

spark = SparkSession.builder.appName(sys.argv[1]).getOrCreate()
total = spark.sparkContext.parallelize(range(1, 1001), 4).map(lambda x: x * x).sum()
print(f"RESULT master={spark.sparkContext.master} sum={total}")
spark.stop()
"""

KAFKA_PLAN_JOB = """
from pyspark.sql import SparkSession

spark = SparkSession.builder.appName("covidflow-test-kafka-plan").getOrCreate()
stream = (
    spark.readStream.format("kafka")
    .option("kafka.bootstrap.servers", "127.0.0.1:1")  # never contacted: only the plan is built
    .option("subscribe", "covidflow-test")
    .load()
)
print(f"RESULT streaming={stream.isStreaming} schema={stream.schema.simpleString()}")
spark.stop()
"""

KAFKA_READ_JOB = """
import sys
from pyspark.sql import SparkSession

from covidflow.clients import kafka_spark_options  # the SASL login, from the connection in the driver's environment

topic = sys.argv[1]
spark = SparkSession.builder.appName("covidflow-test-kafka-read").getOrCreate()
rows = (
    spark.read.format("kafka")
    .options(**kafka_spark_options())
    .option("subscribe", topic)
    .option("startingOffsets", "earliest")
    .load()
    .selectExpr("CAST(key AS STRING) AS k", "CAST(value AS STRING) AS v")
    .orderBy("k")
    .collect()
)
print("RESULT " + ",".join(f"{r.k}={r.v}" for r in rows))
spark.stop()
"""


@pytest.fixture(scope="module")
def spark_up() -> dict:
    status = master_status()
    if status is None:
        pytest.fail(
            f"Spark master UI does not answer on 127.0.0.1:{settings.SPARK_MASTER_UI_PORT}; "
            "run `covidflow stack up spark`"
        )
    return status


def submit(tmp_path: Path, source: str, *args: str, jars: list[Path] | None = None) -> str:
    """Run ``source`` with spark-submit against the cluster; returns the job's RESULT line."""
    job = tmp_path / "job.py"
    job.write_text(textwrap.dedent(source))
    cmd = [str(spark_home() / "bin" / "spark-submit"), "--master", settings.SPARK_MASTER]
    if jars:
        cmd += ["--jars", ",".join(map(str, jars))]
    env = {**os.environ, **spark_env(StackHome.from_env())}
    proc = subprocess.run([*cmd, str(job), *args], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert len(results) == 1, proc.stdout + proc.stderr[-4000:]
    return results[0].removeprefix("RESULT ")


def test_master_is_alive_with_two_workers(spark_up: dict) -> None:
    assert spark_up["url"] == settings.SPARK_MASTER
    assert spark_up["status"] == "ALIVE"
    assert spark_up["aliveworkers"] == 2
    assert spark_up["cores"] == 2
    assert spark_up["memory"] == 2048


def test_job_runs_on_the_worker(spark_up: dict, tmp_path: Path) -> None:
    app = f"covidflow-test-sum-{uuid.uuid4().hex[:8]}"
    assert submit(tmp_path, SUM_JOB, app) == f"master={settings.SPARK_MASTER} sum={sum(x * x for x in range(1, 1001))}"
    finished = [a for a in master_status()["completedapps"] if a["name"] == app]
    assert [a["state"] for a in finished] == ["FINISHED"], "the job did not run on the standalone cluster"


def test_kafka_connector_jars_are_exactly_the_connector_and_its_own_dependencies() -> None:
    names = sorted(p.name.rsplit("-", 1)[0] for p in kafka_connector_jars(StackHome.from_env()))
    assert names == [
        "commons-pool2",
        "kafka-clients",
        "spark-sql-kafka-0-10_2.13",
        "spark-token-provider-kafka-0-10_2.13",
    ]


def test_kafka_source_plan_builds_with_the_connector(spark_up: dict, tmp_path: Path) -> None:
    result = submit(tmp_path, KAFKA_PLAN_JOB, jars=kafka_connector_jars(StackHome.from_env()))
    assert result == (
        "streaming=True schema=struct<key:binary,value:binary,topic:string,partition:int,offset:bigint,"
        "timestamp:timestamp,timestampType:int>"
    )


def test_kafka_batch_read_returns_what_was_produced(spark_up: dict, tmp_path: Path) -> None:
    """Needs the Kafka service too (`covidflow stack up kafka`)."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    host, _, port = settings.KAFKA_BOOTSTRAP.partition(":")
    if not port_open(int(port), host):
        pytest.fail(f"Kafka does not answer at {settings.KAFKA_BOOTSTRAP}; run `covidflow stack up kafka`")
    admin = AdminClient(kafka_config())
    topic = f"covidflow-test-spark-{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(timeout=30)
    try:
        producer = Producer(kafka_config())
        for key, value in (("a", "1"), ("b", "2"), ("c", "3")):
            producer.produce(topic, key=key, value=value)
        assert producer.flush(30) == 0
        result = submit(tmp_path, KAFKA_READ_JOB, topic, jars=kafka_connector_jars())
        assert result == "a=1,b=2,c=3"
    finally:
        admin.delete_topics([topic])[topic].result(timeout=30)
