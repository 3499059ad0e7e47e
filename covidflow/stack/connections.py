"""Airflow connections as code: one ``AIRFLOW_CONN_*`` variable per service, built from settings and local secrets.

Airflow 3 creates no default connections, and connections kept in its database drift from the stack's
configuration. Building them here, at every start, keeps endpoints in ``covidflow.settings`` and
secrets in ``covidflow.stack.credentials`` the single source of truth.
"""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import urlsplit

from covidflow import settings
from covidflow.stack.credentials import local_secret
from covidflow.stack.home import StackHome

#: The local stack's Kafka listener: SASL over plain TCP on loopback (no TLS certificates to manage locally).
KAFKA_SECURITY_PROTOCOL = "SASL_PLAINTEXT"
KAFKA_SASL_MECHANISM = "PLAIN"
#: The Kafka user every covidflow client logs in as (the broker has its own, for itself).
KAFKA_CLIENT_USER = "covidflow"
#: The Cassandra role every covidflow client logs in as; the default superuser ``cassandra`` is disabled.
CASSANDRA_ROLE = "covidflow"
#: The Elasticsearch user (file realm) every covidflow client logs in as, with HTTP basic authentication.
ELASTICSEARCH_USER = "covidflow"


def _host_port(url: str, default_port: int) -> tuple[str, str, int]:
    """(scheme, host, port) of ``scheme://host:port``."""
    parts = urlsplit(url)
    return parts.scheme, parts.hostname or settings.HOST, parts.port or default_port


def connections(home: StackHome) -> dict[str, dict[str, Any]]:
    """conn_id -> Airflow's JSON connection form, for every service of the stack."""
    es_scheme, es_host, es_port = _host_port(settings.ELASTICSEARCH_URL, settings.ELASTICSEARCH_PORT)
    spark_scheme, spark_host, spark_port = _host_port(settings.SPARK_MASTER, settings.SPARK_MASTER_PORT)
    return {
        settings.CONN_S3: {
            "conn_type": "aws",
            "login": local_secret(home, "s3_access_key"),
            "password": local_secret(home, "s3_secret_key"),
            "extra": {
                "endpoint_url": settings.S3_ENDPOINT,
                "region_name": settings.S3_REGION,
                # A local endpoint is an IP address: bucket names cannot go in the host name.
                "config_kwargs": {"s3": {"addressing_style": "path"}},
            },
        },
        settings.CONN_KAFKA: {
            "conn_type": "kafka",
            # The apache-kafka provider's hooks read the extra only, as a confluent config: the SASL login goes
            # there too, so they and covidflow.clients.kafka_config authenticate the same way.
            "extra": {
                "bootstrap.servers": settings.KAFKA_BOOTSTRAP,
                "security.protocol": KAFKA_SECURITY_PROTOCOL,
                "sasl.mechanism": KAFKA_SASL_MECHANISM,
                "sasl.username": KAFKA_CLIENT_USER,
                "sasl.password": local_secret(home, "kafka_client_password"),
            },
        },
        settings.CONN_CASSANDRA: {
            "conn_type": "cassandra",
            "host": settings.CASSANDRA_HOST,
            "port": settings.CASSANDRA_PORT,
            "login": CASSANDRA_ROLE,
            "password": local_secret(home, "cassandra_password"),
        },
        settings.CONN_ELASTICSEARCH: {
            "conn_type": "elasticsearch",
            "host": es_host,
            "port": es_port,
            "schema": es_scheme or "http",
            "login": ELASTICSEARCH_USER,
            "password": local_secret(home, "elasticsearch_password"),
        },
        settings.CONN_SPARK: {
            # SparkSubmitHook rebuilds the master URL as host:port, so the scheme stays in host.
            "conn_type": "spark",
            "host": f"{spark_scheme}://{spark_host}",
            "port": spark_port,
            "extra": {"deploy-mode": "client"},
        },
    }


def env_var(conn_id: str) -> str:
    """The environment variable Airflow reads connection ``conn_id`` from."""
    return f"AIRFLOW_CONN_{conn_id.upper()}"


def airflow_conn_env(home: StackHome) -> dict[str, str]:
    """``AIRFLOW_CONN_*`` -> JSON value, for the environment of every Airflow process."""
    return {env_var(conn_id): json.dumps(conn, sort_keys=True) for conn_id, conn in connections(home).items()}


def use_stack_connections(home: StackHome | None = None) -> None:
    """Give this process the local stack's connections, where its environment defines none.

    Airflow's processes get them at start; the ``covidflow`` command, the benchmarks and the integration tests
    call this, so that ``covidflow.clients`` logs in to the authenticated local services the same way. A
    connection already in the environment (a real deployment's) is never replaced.
    """
    for name, value in airflow_conn_env(home or StackHome.from_env()).items():
        os.environ.setdefault(name, value)
