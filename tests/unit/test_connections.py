"""The AIRFLOW_CONN_* values built from settings and local secrets, and that each provider hook accepts them.

No service is contacted: hooks are only asked how they would connect.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from covidflow import settings
from covidflow.stack.connections import airflow_conn_env, connections, env_var
from covidflow.stack.credentials import local_secret
from covidflow.stack.home import StackHome

# Airflow creates $AIRFLOW_HOME on import; keep it out of the user's ~/airflow.
os.environ.setdefault("AIRFLOW_HOME", os.path.join(tempfile.gettempdir(), "covidflow-test-airflow-home"))


@pytest.fixture
def home(tmp_path: Path) -> StackHome:
    return StackHome(tmp_path)


@pytest.fixture
def conn_env(home: StackHome, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = airflow_conn_env(home)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def test_one_variable_per_service(home: StackHome) -> None:
    assert sorted(airflow_conn_env(home)) == [
        "AIRFLOW_CONN_COVIDFLOW_CASSANDRA",
        "AIRFLOW_CONN_COVIDFLOW_ELASTICSEARCH",
        "AIRFLOW_CONN_COVIDFLOW_KAFKA",
        "AIRFLOW_CONN_COVIDFLOW_S3",
        "AIRFLOW_CONN_COVIDFLOW_SPARK",
    ]
    assert env_var(settings.CONN_S3) == "AIRFLOW_CONN_COVIDFLOW_S3"


def test_s3_uses_the_local_secrets_and_endpoint(home: StackHome) -> None:
    conn = connections(home)[settings.CONN_S3]
    assert conn == {
        "conn_type": "aws",
        "login": local_secret(home, "s3_access_key"),
        "password": local_secret(home, "s3_secret_key"),
        "extra": {
            "endpoint_url": settings.S3_ENDPOINT,
            "region_name": settings.S3_REGION,
            "config_kwargs": {"s3": {"addressing_style": "path"}},
        },
    }
    assert len(conn["login"]) >= 20 and conn["login"] != conn["password"]


def test_secrets_are_stable_across_calls(home: StackHome) -> None:
    assert airflow_conn_env(home) == airflow_conn_env(home)
    assert airflow_conn_env(home) != airflow_conn_env(StackHome(home.root / "other"))


def test_other_services_follow_settings(home: StackHome) -> None:
    conns = connections(home)
    assert conns[settings.CONN_KAFKA] == {
        "conn_type": "kafka",
        "extra": {
            "bootstrap.servers": settings.KAFKA_BOOTSTRAP,
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "PLAIN",
            "sasl.username": "covidflow",
            "sasl.password": local_secret(home, "kafka_client_password"),
        },
    }
    assert conns[settings.CONN_CASSANDRA] == {
        "conn_type": "cassandra",
        "host": settings.CASSANDRA_HOST,
        "port": settings.CASSANDRA_PORT,
        "login": "covidflow",
        "password": local_secret(home, "cassandra_password"),
    }
    assert conns[settings.CONN_ELASTICSEARCH]["conn_type"] == "elasticsearch"
    assert conns[settings.CONN_SPARK]["conn_type"] == "spark"


def test_urls_are_split_into_host_port_schema(home: StackHome, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "ELASTICSEARCH_URL", "https://es.example.org:9243")
    monkeypatch.setattr(settings, "SPARK_MASTER", "spark://spark-master:7177")
    conns = connections(home)
    assert conns[settings.CONN_ELASTICSEARCH] == {
        "conn_type": "elasticsearch",
        "host": "es.example.org",
        "port": 9243,
        "schema": "https",
        "login": "covidflow",
        "password": local_secret(home, "elasticsearch_password"),
    }
    assert conns[settings.CONN_SPARK] == {
        "conn_type": "spark",
        "host": "spark://spark-master",
        "port": 7177,
        "extra": {"deploy-mode": "client"},
    }


def test_values_are_json_airflow_parses(home: StackHome, conn_env: dict[str, str]) -> None:
    from airflow.models.connection import Connection

    for conn_id, expected in connections(home).items():
        conn = Connection.from_json(conn_env[env_var(conn_id)], conn_id=conn_id)
        assert conn.conn_type == expected["conn_type"]
        assert (conn.host, conn.port, conn.schema) == (
            expected.get("host"),
            expected.get("port"),
            expected.get("schema"),
        )
        assert (conn.login, conn.password) == (expected.get("login"), expected.get("password"))
        assert conn.extra_dejson == expected.get("extra", {})


def test_spark_hook_resolves_the_master(conn_env: dict[str, str]) -> None:
    from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook

    resolved = SparkSubmitHook(conn_id=settings.CONN_SPARK)._resolve_connection()
    assert resolved["master"] == settings.SPARK_MASTER
    assert resolved["deploy_mode"] == "client"
    assert resolved["spark_binary"] == "spark-submit"


def test_s3_hook_builds_a_client_for_the_local_endpoint(home: StackHome, conn_env: dict[str, str]) -> None:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    client = S3Hook(aws_conn_id=settings.CONN_S3).get_conn()
    assert client.meta.endpoint_url == settings.S3_ENDPOINT
    assert client.meta.region_name == settings.S3_REGION
    assert client.meta.config.s3 == {"addressing_style": "path"}
    assert client._request_signer._credentials.access_key == local_secret(home, "s3_access_key")


def test_elasticsearch_sql_hook_client_url(conn_env: dict[str, str]) -> None:
    from airflow.providers.elasticsearch.hooks.elasticsearch import ElasticsearchSQLHook

    assert ElasticsearchSQLHook(elasticsearch_conn_id=settings.CONN_ELASTICSEARCH).get_conn().url == (
        settings.ELASTICSEARCH_URL.rstrip("/") + "/"
    )


def test_kafka_and_cassandra_hooks_read_their_connection(conn_env: dict[str, str]) -> None:
    from airflow.providers.apache.cassandra.hooks.cassandra import CassandraHook
    from airflow.providers.apache.kafka.hooks.client import KafkaAdminClientHook

    from covidflow import clients

    kafka = KafkaAdminClientHook(kafka_config_id=settings.CONN_KAFKA)
    extra = kafka.get_connection(settings.CONN_KAFKA).extra_dejson
    # The provider's hooks read the extra only; covidflow's factory builds the same login from it.
    assert {k: extra[k] for k in ("security.protocol", "sasl.mechanism", "sasl.username")} == {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "PLAIN",
        "sasl.username": "covidflow",
    }
    assert dict(clients.kafka_config()) == extra
    cluster = CassandraHook(cassandra_conn_id=settings.CONN_CASSANDRA).cluster  # built, not connected
    assert (cluster.contact_points, cluster.port) == ([settings.CASSANDRA_HOST], settings.CASSANDRA_PORT)
    assert cluster.auth_provider.username == "covidflow"
    ours = clients.cassandra_cluster(clients.cassandra_endpoint())
    assert (ours.auth_provider.username, ours.auth_provider.password) == (
        cluster.auth_provider.username,
        cluster.auth_provider.password,
    )


def test_use_stack_connections_fills_only_what_the_environment_lacks(
    home: StackHome, monkeypatch: pytest.MonkeyPatch
) -> None:
    from covidflow.stack.connections import use_stack_connections

    for name in airflow_conn_env(home):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AIRFLOW_CONN_COVIDFLOW_KAFKA", '{"conn_type": "kafka", "extra": {"bootstrap.servers": "k:1"}}')
    use_stack_connections(home)
    assert os.environ["AIRFLOW_CONN_COVIDFLOW_KAFKA"] == '{"conn_type": "kafka", "extra": {"bootstrap.servers": "k:1"}}'
    assert os.environ["AIRFLOW_CONN_COVIDFLOW_CASSANDRA"] == airflow_conn_env(home)["AIRFLOW_CONN_COVIDFLOW_CASSANDRA"]
