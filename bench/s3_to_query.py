"""Seconds from an S3 upload to query-visible in both stores, through the scheduler and the live stream.

Each round lands the WHO sample (996 canonical records) under a new name, triggers its ingest DAG through
Airflow's REST API, and times two marks from the upload: the ingest run finished (the baseline: S3 -> Kafka
alone), and every record readable in Cassandra and Elasticsearch. Needs `covidflow stack up` and the
stream running (the script triggers covidflow_stream, which starts it unless it runs).

    .venv/bin/python bench/s3_to_query.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from covidflow import settings
from covidflow.catalog.specs import find_spec
from covidflow.demo import published_vintage, stored_counts
from covidflow.stack.airflow_api import AirflowClient
from covidflow.stack.services.s3 import s3_client

SOURCE, RECORDS = "who_covid19_global_weekly", 996


def one_round(client: AirflowClient, s3, body: bytes, prefix: str) -> tuple[float, float]:
    key = f"{prefix}WHO-COVID-19-global-data-bench-{uuid.uuid4().hex[:8]}.csv"
    start = time.monotonic()
    etag = s3.put_object(Bucket=settings.LANDING_BUCKET, Key=key, Body=body)["ETag"].strip('"')
    state, tasks = client.wait(f"ingest_{SOURCE}", client.trigger(f"ingest_{SOURCE}"), timeout=600)
    ingested = time.monotonic() - start
    if state != "success":
        raise SystemExit(f"ingest_{SOURCE} {state}: {tasks}")
    published = {SOURCE: (key, etag, published_vintage(SOURCE, key, etag))}
    while stored_counts(published)[SOURCE] != (RECORDS, RECORDS):
        if time.monotonic() - start > 600:
            raise SystemExit(f"{key}: not visible in both stores after 600 s")
        time.sleep(0.5)
    return ingested, time.monotonic() - start


def p95(values: list[float]) -> float:
    return sorted(values)[max(0, round(0.95 * len(values)) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    spec = find_spec(SOURCE)
    client, s3 = AirflowClient(), s3_client()
    client.trigger("covidflow_stream")
    body = spec.sample_path.read_bytes()
    ingest, visible = [], []
    for n in range(1, args.rounds + 1):
        dag_s, total_s = one_round(client, s3, body, spec["landing"]["prefix"])
        ingest.append(dag_s)
        visible.append(total_s)
        print(f"round {n}: ingest DAG done {dag_s:6.1f} s   visible in both stores {total_s:6.1f} s", flush=True)
    print(f"{'mark (from the upload)':<40} {'median':>8} {'p95':>8}")
    print(f"{'ingest DAG finished (S3 -> Kafka)':<40} {statistics.median(ingest):>7.1f}s {p95(ingest):>7.1f}s")
    print(f"{'query-visible in Cassandra + ES':<40} {statistics.median(visible):>7.1f}s {p95(visible):>7.1f}s")
    extra = statistics.median(visible) - statistics.median(ingest)
    print(f"the stream adds {extra:.1f} s (median) after the ingest run")


if __name__ == "__main__":
    main()
