"""`make demo`: the main job on the bundled samples, against the running local stack.

Each step says what it did and with how many records, so the output doubles as a smoke test.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from datetime import datetime
from pathlib import Path

from covidflow import settings
from covidflow.catalog.specs import SourceSpec, load_all


def step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def land_samples(specs: dict[str, SourceSpec]) -> dict[str, tuple[str, str]]:
    """Upload each source's bundled sample under its landing prefix; returns source id -> (S3 key, etag)."""
    from covidflow.stack.services.s3 import s3_client

    client = s3_client()
    landed = {}
    for spec in specs.values():
        sample: Path | None = spec.sample_path
        if sample is None:
            continue
        key = spec["landing"]["prefix"] + sample.name
        etag, action = hashlib.md5(sample.read_bytes()).hexdigest(), "already there"
        try:
            client.head_object(Bucket=settings.LANDING_BUCKET, Key=key, IfMatch=etag)
        except client.exceptions.ClientError:  # missing, or another version: land this one
            with sample.open("rb") as body:
                etag = client.put_object(Bucket=settings.LANDING_BUCKET, Key=key, Body=body)["ETag"].strip('"')
            action = "uploaded"
        print(f"  s3://{settings.LANDING_BUCKET}/{key}  {sample.stat().st_size:>9,} bytes  etag {etag}  {action}")
        landed[spec.id] = (key, etag)
    return landed


def preview_samples(specs: dict[str, SourceSpec]) -> tuple[dict[str, int], int]:
    """Run each sample through its spec locally; returns the canonical records expected per source, and rejects."""
    from covidflow.normalise.preview import run_file

    print(f"  {'source':<34} {'rows read':>9} {'records':>9} {'skipped':>8} {'rejects':>8}")
    rejects, expected = 0, {}
    for spec in specs.values():
        if spec.sample_path is None:
            continue
        records, summary = run_file(spec, spec.sample_path)
        records.drain()  # counts only: no dicts, no ids hashed
        rejects += summary.reject_count + (1 if summary.error else 0)
        expected[spec.id] = summary.records_out
        print(
            f"  {spec.id:<34} {summary.rows_read:>9,} {summary.records_out:>9,} "
            f"{sum(summary.skips.values()):>8,} {summary.reject_count:>8,}"
        )
    return expected, rejects


def run_dags(client, dag_ids: list[str], timeout: float = 900) -> dict[str, str]:
    """Run the DAGs one after the other (kind to Airflow's SQLite); returns dag id -> final state."""
    states = {}
    for dag_id in dag_ids:
        state, tasks = client.wait(dag_id, client.trigger(dag_id), timeout=timeout)
        states[dag_id] = state
        failed = {t: s for t, s in tasks.items() if s not in ("success", "skipped")}
        print(f"  {dag_id:<44} {state}" + (f"  tasks not ok: {failed}" if failed else ""), flush=True)
    return states


def published_vintage(source_id: str, key: str, etag: str) -> datetime:
    """The vintage the ingest DAG gave this object version, from its manifest marker."""
    from covidflow.land.manifest import marker_key
    from covidflow.land.objects import LandedObject
    from covidflow.publish.config import ingest_config
    from covidflow.stack.services.s3 import s3_client

    obj = LandedObject(bucket=settings.LANDING_BUCKET, key=key, etag=etag, size=0, last_modified="")
    marker = marker_key(ingest_config()["manifest"]["prefix"], source_id, obj)
    body = s3_client().get_object(Bucket=settings.LANDING_BUCKET, Key=marker)["Body"].read()
    return datetime.fromisoformat(json.loads(body)["summary"]["vintage"])


def stored_counts(published: dict[str, tuple[str, str, datetime]]) -> dict[str, tuple[int, int]]:
    """source id -> (rows in Cassandra, documents in Elasticsearch) of exactly the published object version."""
    from covidflow import clients
    from covidflow.catalog.schema import load_schema

    schema = load_schema()
    keyspace, alias = schema.cassandra["keyspace"], schema.elasticsearch["write_alias"]
    sess = clients.cassandra_session()
    es = clients.elasticsearch()
    es.indices.refresh(index=alias, ignore_unavailable=True)
    counts = {}
    for source_id, (key, etag, vintage) in published.items():
        cql = (
            f"SELECT count(*) FROM {keyspace}.observations_by_vintage WHERE source_id = %s AND vintage = %s "
            "AND source_object_key = %s AND source_object_version = %s ALLOW FILTERING"
        )
        rows = sess.execute(cql, [source_id, vintage, key, etag], timeout=60).one()[0]
        terms = {"source_id": source_id, "source_object_key": key, "source_object_version": etag}
        filters = [{"term": {field: value}} for field, value in terms.items()]
        filters.append({"range": {"vintage": {"gte": vintage.isoformat(), "lte": vintage.isoformat()}}})
        docs = es.count(index=alias, query={"bool": {"filter": filters}}, ignore_unavailable=True)["count"]
        counts[source_id] = (rows, docs)
    return counts


def wait_for_stores(
    published: dict[str, tuple[str, str, datetime]], expected: dict[str, int], timeout: float = 900
) -> dict[str, tuple[int, int]]:
    """Poll until both stores hold every expected record (the stream works in micro-batches)."""
    deadline = time.monotonic() + timeout
    while True:
        counts = stored_counts(published)
        done = sum(min(c[0], c[1]) for c in counts.values())
        print(f"  {done:,} of {sum(expected.values()):,} records in both stores", flush=True)
        if all(counts[s] == (n, n) for s, n in expected.items()) or time.monotonic() > deadline:
            return counts
        time.sleep(10)


def main() -> int:
    from covidflow.stack.airflow_api import AirflowClient
    from covidflow.stack.connections import ELASTICSEARCH_USER, use_stack_connections

    use_stack_connections()  # the stores need the stack's logins (as the covidflow command takes them)

    specs = load_all()
    client = AirflowClient()
    step(f"1. land the bundled samples of {len(specs)} sources in s3://{settings.LANDING_BUCKET}")
    keys = land_samples(specs)
    step("2. read each sample through its spec locally (streaming reader + normalisation core)")
    expected, rejects = preview_samples(specs)
    step("3. Airflow: create the Kafka topics, start the supervised Spark stream, run one ingest DAG per source")
    ingest_dags = [f"ingest_{source_id}" for source_id in keys]
    client.wait_for_dags(["covidflow_stack_check", "covidflow_kafka_topics", "covidflow_stream", *ingest_dags])
    states = run_dags(client, ["covidflow_stack_check", "covidflow_kafka_topics"], timeout=300)
    stream_run = client.trigger("covidflow_stream")  # its submit task lives as long as the stream
    print(f"  covidflow_stream triggered ({stream_run}): it starts the job from its checkpoint unless one runs")
    states |= run_dags(client, ingest_dags)
    step("4. wait for the stream to write every record to Cassandra and Elasticsearch")
    published = {s: (key, etag, published_vintage(s, key, etag)) for s, (key, etag) in keys.items()}
    counts = wait_for_stores(published, expected)
    print(f"  {'source':<34} {'expected':>9} {'cassandra':>10} {'elastic':>9}")
    for source_id, n in expected.items():
        rows, docs = counts[source_id]
        mark = "" if (rows, docs) == (n, n) else "   <- MISSING"
        print(f"  {source_id:<34} {n:>9,} {rows:>10,} {docs:>9,}{mark}")
    step("5. a researcher's query: Paris, hospital occupancy, first days of April 2020 (Cassandra)")
    from click.testing import CliRunner

    from covidflow.cli import cli

    result = CliRunner().invoke(
        cli, ["query", "--location", "FR-D75", "--metric", "hospital_occupancy", "--from", "2020-04-01", "--to",
              "2020-04-03"],
    )  # fmt: skip
    print("  " + result.output.replace("\n", "\n  "))
    step("done: where to look")
    print(f"  Airflow UI:      {settings.AIRFLOW_URL}  (user admin; password: covidflow stack credentials)")
    print(f"  Dashboard:       {settings.AIRFLOW_URL}/covidflow/")
    print(f"  Spark master UI: http://{settings.HOST}:{settings.SPARK_MASTER_UI_PORT}")
    print(
        f"  Elasticsearch:   {settings.ELASTICSEARCH_URL}/covid-observations/_search  "
        f"(user {ELASTICSEARCH_USER}; password: covidflow stack credentials)"
    )
    print("  Stack status:    covidflow stack status")
    problems = [f"{dag} {state}" for dag, state in states.items() if state != "success"]
    problems += [f"{s}: {counts[s]} stored, {n} expected" for s, n in expected.items() if counts[s] != (n, n)]
    problems += [f"{rejects} rejects in the samples"] if rejects else []
    problems += [] if result.exit_code == 0 else [f"query failed: {result.output}"]
    if problems:
        print("demo finished with problems:\n  " + "\n  ".join(problems))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
