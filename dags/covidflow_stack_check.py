"""Stack check: one task per service, each through the covidflow connection (provider hook or covidflow.clients)."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import dag, task

from covidflow import settings
from covidflow.ops.callbacks import dag_defaults, on_failure

DOC = """
### covidflow stack check

Proves that Airflow reaches every service of the stack **through its connection** (the
`AIRFLOW_CONN_*` variables built by `covidflow.stack.connections`), with the provider's own hook, or for the two
stores with the factory every covidflow component uses (`covidflow.clients`), so the check proves their path:

| task | client | check |
|---|---|---|
| `s3` | `S3Hook` | lists buckets; the landing bucket exists |
| `kafka` | `KafkaAdminClientHook` | lists topics |
| `cassandra` | `covidflow.clients.cassandra_session` | `SELECT release_version FROM system.local` |
| `elasticsearch` | `covidflow.clients.elasticsearch` | cluster health is not red |
| `spark` | `SparkSubmitHook` | resolves the master from the connection; the master is ALIVE with a worker |

Triggered by `make demo`; run by hand with `airflow dags test covidflow_stack_check`.
"""


@dag(
    dag_id="covidflow_stack_check",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    is_paused_upon_creation=False,  # ops and maintenance run on a fresh stack without a click
    tags=["covidflow", "stack"],
    doc_md=DOC,
    on_failure_callback=on_failure,
    default_args=dag_defaults(retries=1, retry_delay=timedelta(seconds=10)),
)
def covidflow_stack_check() -> None:
    @task
    def s3() -> list[str]:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        hook = S3Hook(aws_conn_id=settings.CONN_S3)
        buckets = sorted(b["Name"] for b in hook.get_conn().list_buckets()["Buckets"])
        if not hook.check_for_bucket(settings.LANDING_BUCKET):
            raise RuntimeError(f"landing bucket {settings.LANDING_BUCKET!r} missing; buckets: {buckets}")
        return buckets

    @task
    def kafka() -> list[str]:
        from airflow.providers.apache.kafka.hooks.client import KafkaAdminClientHook

        admin = KafkaAdminClientHook(kafka_config_id=settings.CONN_KAFKA).get_conn
        return sorted(admin.list_topics(timeout=10).topics)

    @task
    def cassandra() -> str:
        from covidflow import clients

        sess = clients.cassandra_session(conn_id=settings.CONN_CASSANDRA, cached=False)
        try:
            return sess.execute("SELECT release_version FROM system.local").one().release_version
        finally:
            sess.cluster.shutdown()

    @task
    def elasticsearch() -> dict:
        from covidflow import clients

        es = clients.elasticsearch(conn_id=settings.CONN_ELASTICSEARCH, request_timeout=30)
        health = es.cluster.health(timeout="10s").body
        if health["status"] == "red":
            raise RuntimeError(f"Elasticsearch cluster is red: {health}")
        # Not es.info(): the Maven Central (integ-test) distribution has no `GET /` endpoint.
        nodes = es.nodes.info(node_id="_local", filter_path="nodes.*.version").body["nodes"]
        return {"status": health["status"], "versions": sorted({n["version"] for n in nodes.values()})}

    @task
    def spark() -> dict:
        import json
        import urllib.request
        from urllib.parse import urlsplit

        from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook

        master = SparkSubmitHook(conn_id=settings.CONN_SPARK)._resolve_connection()["master"]
        host = urlsplit(master).hostname
        url = f"http://{host}:{settings.SPARK_MASTER_UI_PORT}/json/"
        with urllib.request.urlopen(url, timeout=10) as response:
            status = json.load(response)
        if status["url"] != master or status["status"] != "ALIVE" or status["aliveworkers"] < 1:
            raise RuntimeError(f"Spark master {master} not ready: {status}")
        return {"master": master, "alive_workers": status["aliveworkers"], "cores": status["cores"]}

    s3()
    kafka()
    cassandra()
    elasticsearch()
    spark()


covidflow_stack_check()
