"""Fixtures shared by the integration tests: the project's Kafka topics, the real local S3, scratch buckets, a
private Airflow database."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from covidflow import PROJECT_ROOT, settings
from covidflow.clients import kafka_config
from covidflow.stack.connections import airflow_conn_env, use_stack_connections
from covidflow.stack.home import StackHome


@pytest.fixture(scope="session", autouse=True)
def stack_connections() -> Iterator[None]:
    """The local stack's connections (``AIRFLOW_CONN_*``, with their credentials) in this process's environment, as
    ``covidflow`` commands and Airflow's processes have them: clients built by ``covidflow.clients`` in the tests,
    and the spark-submit and Airflow processes the tests start, log in to Kafka and Cassandra."""
    before = dict(os.environ)
    use_stack_connections()
    yield
    for name in set(os.environ) - set(before):
        del os.environ[name]


@pytest.fixture(scope="session", autouse=True)
def project_kafka_topics(stack_connections: None) -> dict[str, str]:
    """Create or converge include/config/topics.yaml's topics before any test, through the code path of the
    ``covidflow_kafka_topics`` DAG (``ensure_project_topics``, the covidflow_kafka connection), so the tests
    stand alone on an empty stack (after ``stack reset``) without ``make demo`` first.

    When Kafka does not answer, nothing is created: the tests that need it fail naming the command to start it,
    the others (stack start-up and failure tests) still run.
    """
    from confluent_kafka.admin import AdminClient

    from covidflow.publish.topics import ensure_project_topics

    try:
        AdminClient(kafka_config({"log_level": 0})).list_topics(timeout=5)
    except Exception as exc:
        print(f"\nKafka is not reachable at {settings.KAFKA_BOOTSTRAP} ({exc}): topics not created")
        return {}
    return ensure_project_topics()


@pytest.fixture(scope="module")
def s3() -> Any:
    """A boto3 client of the stack's S3; fails (never skips) when S3 is down."""
    from covidflow.stack.services.s3 import s3_client

    client = s3_client(retries=1, timeout=5)
    try:
        client.list_buckets()
    except Exception as exc:
        pytest.fail(f"S3 is not reachable at {settings.S3_ENDPOINT} ({exc}); run `covidflow stack up s3`")
    return client


@pytest.fixture()
def bucket(s3: Any) -> Iterator[str]:
    """A scratch landing bucket, emptied and removed afterwards, so tests never see each other's objects."""
    name = f"it-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    yield name
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
        for item in page.get("Contents", []):
            s3.delete_object(Bucket=name, Key=item["Key"])
    s3.delete_bucket(Bucket=name)


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A private Airflow (SQLite) reading the repository's dags/, with the stack's connections, for dag.test()."""
    home = tmp_path_factory.mktemp("airflow-home")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "COVIDFLOW_INGEST_CONFIG"))},
        **airflow_conn_env(StackHome.from_env()),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
    }
    airflow = Path(sys.executable).parent / "airflow"
    done = subprocess.run([str(airflow), "db", "migrate"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return env
