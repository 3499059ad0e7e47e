"""Endpoints, names and connection ids shared by the stack, the DAGs, the Spark job and the tests.

Every value can be overridden from the environment, so the same code runs against the local stack,
docker-compose or a real cluster. Secrets are never here: see ``covidflow.stack.credentials``.
"""

from __future__ import annotations

import os


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


HOST = _env("COVIDFLOW_HOST", "127.0.0.1")

# Ports of the local stack (docker-compose publishes the same ones).
S3_PORT = 9000
KAFKA_PORT = 9092
KAFKA_CONTROLLER_PORT = 9093
CASSANDRA_PORT = 9042
ELASTICSEARCH_PORT = 9200
SPARK_MASTER_PORT = 7077
SPARK_MASTER_UI_PORT = 8081
SPARK_WORKER_UI_PORT = 8082
AIRFLOW_PORT = 8080

S3_ENDPOINT = _env("COVIDFLOW_S3_ENDPOINT", f"http://{HOST}:{S3_PORT}")
S3_REGION = _env("COVIDFLOW_S3_REGION", "us-east-1")
LANDING_BUCKET = _env("COVIDFLOW_LANDING_BUCKET", "covidflow-landing")
KAFKA_BOOTSTRAP = _env("COVIDFLOW_KAFKA_BOOTSTRAP", f"{HOST}:{KAFKA_PORT}")
CASSANDRA_HOST = _env("COVIDFLOW_CASSANDRA_HOST", HOST)
ELASTICSEARCH_URL = _env("COVIDFLOW_ELASTICSEARCH_URL", f"http://{HOST}:{ELASTICSEARCH_PORT}")
SPARK_MASTER = _env("COVIDFLOW_SPARK_MASTER", f"spark://{HOST}:{SPARK_MASTER_PORT}")
AIRFLOW_URL = _env("COVIDFLOW_AIRFLOW_URL", f"http://{HOST}:{AIRFLOW_PORT}")

# Airflow connection ids, one per service (defined as AIRFLOW_CONN_* environment, never in the UI).
CONN_S3 = "covidflow_s3"
CONN_KAFKA = "covidflow_kafka"
CONN_CASSANDRA = "covidflow_cassandra"
CONN_ELASTICSEARCH = "covidflow_elasticsearch"
CONN_SPARK = "covidflow_spark"
