"""Seconds from an S3 upload to query-visible in both stores: the scheduled path (no human) next to the baseline,
the same ingest DAG triggered by hand over the REST API, in the same run.

Each round lands the WHO sample (996 canonical records) under a new name and times, from the upload: the manifest
marker written (S3 -> Kafka done) and every record readable in Cassandra and Elasticsearch.
- scheduled: the file goes to the landing bucket and nothing else is done; the ingest DAG's waiting run
  (``@continuous`` + NewObjectsTrigger in the triggerer, ADR 0015) finds it.
- by hand: the file goes to a scratch bucket that no scheduled run watches, then ``ingest_<source>`` is triggered
  with ``{"bucket": <scratch>}`` (the run queues behind the waiting scheduled one, which gives way).
Rounds alternate. Needs `covidflow stack up` and the ingest DAG active; the script triggers covidflow_stream when no
run of it is going, and starts timing once the stream is alive with no Kafka lag.

    .venv/bin/python bench/s3_to_query.py [--rounds 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from covidflow import settings
from covidflow.catalog.specs import find_spec
from covidflow.demo import stored_counts
from covidflow.land.manifest import marker_key
from covidflow.land.objects import LandedObject
from covidflow.publish.config import ingest_config
from covidflow.stack.airflow_api import AirflowClient
from covidflow.stack.connections import use_stack_connections
from covidflow.stack.services.s3 import s3_client

SOURCE, RECORDS = "who_covid19_global_weekly", 996
DAG_ID = f"ingest_{SOURCE}"
TIMEOUT = 600.0


def wait_marker(s3, bucket: str, key: str, etag: str, start: float) -> datetime:
    """Poll the manifest marker of (key, etag); returns the vintage the ingest gave it."""
    obj = LandedObject(bucket=bucket, key=key, etag=etag, size=0, last_modified="")
    marker = marker_key(ingest_config()["manifest"]["prefix"], SOURCE, obj)
    while True:
        try:
            body = s3.get_object(Bucket=bucket, Key=marker)["Body"].read()
            return datetime.fromisoformat(json.loads(body)["summary"]["vintage"])
        except s3.exceptions.NoSuchKey:
            pass
        if time.monotonic() - start > TIMEOUT:
            raise SystemExit(f"s3://{bucket}/{key}: not published after {TIMEOUT:.0f} s")
        time.sleep(0.25)


def one_round(client: AirflowClient, s3, body: bytes, prefix: str, bucket: str, by_hand: bool) -> tuple[float, float]:
    key = f"{prefix}WHO-COVID-19-global-data-bench-{uuid.uuid4().hex[:8]}.csv"
    start = time.monotonic()
    etag = s3.put_object(Bucket=bucket, Key=key, Body=body)["ETag"].strip('"')
    if by_hand:
        client.trigger(DAG_ID, {"bucket": bucket})
    vintage = wait_marker(s3, bucket, key, etag, start)
    published = time.monotonic() - start
    while stored_counts({SOURCE: (key, etag, vintage)})[SOURCE] != (RECORDS, RECORDS):
        if time.monotonic() - start > TIMEOUT:
            raise SystemExit(f"{key}: not visible in both stores after {TIMEOUT:.0f} s")
        time.sleep(0.25)
    return published, time.monotonic() - start


def wait_stream_ready() -> None:
    """Rounds time a running stack: wait until the stream's own app is alive and has no Kafka lag (a job starting
    takes a minute; that is the stream's start-up, not an upload's latency)."""
    from covidflow.normalise.supervise import stream_health

    start = time.monotonic()
    while True:
        health = stream_health()
        if health["alive"] and health["app_id"] in health["running_apps"] and health.get("lag_messages") == 0:
            print(f"stream ready ({health['app_id']}, no lag) after {time.monotonic() - start:.0f} s", flush=True)
            return
        if time.monotonic() - start > TIMEOUT:
            raise SystemExit(f"the stream is not ready after {TIMEOUT:.0f} s: {health}")
        time.sleep(2)


def p95(values: list[float]) -> float:
    return sorted(values)[max(0, round(0.95 * len(values)) - 1)]


def main() -> None:
    use_stack_connections()  # the local stack's logins, unless the environment has its own connections
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10, help="rounds per path")
    args = parser.parse_args()
    spec = find_spec(SOURCE)
    client, s3 = AirflowClient(), s3_client()
    if client.call("GET", f"/api/v2/dags/{DAG_ID}")["is_paused"]:
        raise SystemExit(f"{DAG_ID} is paused: the scheduled path needs it active")
    if not client.call("GET", "/api/v2/dags/covidflow_stream/dagRuns?state=running&limit=1")["dag_runs"]:
        client.trigger("covidflow_stream")  # starts the job from its checkpoint
    wait_stream_ready()
    scratch = f"bench-s3q-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=scratch)
    body = spec.sample_path.read_bytes()
    marks: dict[str, tuple[list[float], list[float]]] = {"scheduled": ([], []), "by hand": ([], [])}
    try:
        for n in range(1, args.rounds + 1):
            for path in ("scheduled", "by hand"):
                bucket = scratch if path == "by hand" else settings.LANDING_BUCKET
                pub, vis = one_round(client, s3, body, spec["landing"]["prefix"], bucket, path == "by hand")
                marks[path][0].append(pub)
                marks[path][1].append(vis)
                print(f"round {n:>2} {path:<9}: published {pub:6.1f} s, in both stores {vis:6.1f} s", flush=True)
    finally:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=scratch):
            for item in page.get("Contents", []):
                s3.delete_object(Bucket=scratch, Key=item["Key"])
        s3.delete_bucket(Bucket=scratch)
    print(f"\n{'path (from the upload)':<34} {'published p50':>14} {'p95':>7} {'visible p50':>12} {'p95':>7}")
    for path, (pub, vis) in marks.items():
        print(
            f"{path:<34} {statistics.median(pub):>13.1f}s {p95(pub):>6.1f}s "
            f"{statistics.median(vis):>11.1f}s {p95(vis):>6.1f}s"
        )
    vis = marks["scheduled"][1]
    verdict = "met" if statistics.median(vis) <= 15 and p95(vis) <= 45 else "NOT met"
    print(f"target for the scheduled path (visible p50 <= 15 s, p95 <= 45 s): {verdict}")


if __name__ == "__main__":
    main()
