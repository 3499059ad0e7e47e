"""Publish throughput: a 1M-row CSV to Kafka through our publish path, next to a bare confluent-kafka loop.

Phases (same broker, same producer settings from include/config/ingest.yaml, a private bench topic that is
deleted at the end, so covid.raw.v1 is not polluted):
  bare_loop     csv.reader -> json.dumps(row) -> Producer.produce, then flush (no envelope, no transaction)
  publish_file  our path on the local file: read_records (streaming reader) -> RawEnvelope -> one transaction
  publish_s3    our path as the DAG runs it: the object streamed from S3 (boto3 StreamingBody) -> same as above

Needs `covidflow stack up s3 kafka`. Run: .venv/bin/python bench/publish_throughput.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import tempfile
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from covidflow import settings
from covidflow.catalog.specs import find_spec
from covidflow.land.objects import LandedObject
from covidflow.publish.config import ingest_config
from covidflow.publish.kafka import open_stream, publish_records, transactional_id
from covidflow.read import read_records
from covidflow.stack.services.s3 import s3_client

SOURCE = "spf_vacsi"


def make_csv(path: Path, rows: int) -> None:
    """An SPF vacsi-shaped file: dep;jour;n_dose1;n_cum_dose1."""
    rng = random.Random(1)
    deps = [f"{i:02d}" for i in range(1, 96) if i != 20] + ["2A", "2B", "971", "972", "973", "974", "976"]
    start = date(2021, 1, 1)
    with path.open("w", encoding="utf-8", newline="") as f:
        f.write("dep;jour;n_dose1;n_cum_dose1\n")
        for i in range(rows):
            day = start + timedelta(days=i // len(deps))
            f.write(f"{deps[i % len(deps)]};{day.isoformat()};{rng.randint(0, 5000)};{rng.randint(0, 10**6)}\n")


def producer(txn_id: str | None = None) -> Producer:
    config = {"bootstrap.servers": settings.KAFKA_BOOTSTRAP, **ingest_config()["producer"]}
    if txn_id:
        config["transactional.id"] = txn_id
    return Producer(config)


def bare_loop(path: Path, topic: str) -> int:
    p = producer()
    failed = 0

    def report(err, msg):
        nonlocal failed
        failed += err is not None

    n = 0
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter=";")
        header = next(reader)
        for row in reader:
            value = json.dumps(dict(zip(header, row, strict=True))).encode()
            while True:
                try:
                    p.produce(topic, value=value, key=f"{SOURCE}|{row[0]}|{row[1]}".encode(), on_delivery=report)
                    break
                except BufferError:
                    p.poll(0.1)
            n += 1
            if n % 10000 == 0:
                p.poll(0)
    assert p.flush(120) == 0 and failed == 0
    return n


def ours(stream, obj: LandedObject, topic: str) -> int:
    spec = find_spec(SOURCE)
    p = producer(transactional_id(SOURCE, f"bench-{uuid.uuid4().hex}"))
    p.init_transactions(30)
    records = read_records(stream, spec["format"], spec.get("reader") or {}, name=obj.key)
    summary = publish_records(
        records,
        source_id=SOURCE,
        spec=spec.data,
        obj=obj,
        schema_ver="bench",
        producer=p,
        raw_topic=topic,
        deadletter_topic=topic,
        commit_timeout=300,
        flush_timeout=300,
    )
    return summary.records_out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    admin = AdminClient({"bootstrap.servers": settings.KAFKA_BOOTSTRAP})
    topic = f"bench.publish.{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(topic, num_partitions=6, replication_factor=1)])[topic].result(30)
    s3, bucket = s3_client(timeout=60), f"bench-publish-{uuid.uuid4().hex[:8]}"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "vacsi-dep-bench.csv"
            make_csv(path, args.rows)
            size = path.stat().st_size
            s3.create_bucket(Bucket=bucket)
            key = f"spf/vacsi/{path.name}"
            s3.upload_file(str(path), bucket, key)
            head = s3.head_object(Bucket=bucket, Key=key)
            obj = LandedObject(bucket, key, head["ETag"].strip('"'), size, datetime.now(UTC).isoformat())
            print(f"{args.rows} rows, {size / 1e6:.1f} MB, topic {topic}")
            rates = {}
            for name in ("bare_loop", "publish_file", "publish_s3"):
                started = time.perf_counter()
                if name == "bare_loop":
                    n = bare_loop(path, topic)
                elif name == "publish_file":
                    with path.open("rb") as f:
                        n = ours(f, obj, topic)
                else:
                    body = open_stream(s3, obj)
                    n = ours(body, obj, topic)
                    body.close()
                elapsed = time.perf_counter() - started
                assert n == args.rows, (name, n)
                rates[name] = n / elapsed
                print(f"{name:>13}: {n} records in {elapsed:6.2f} s = {rates[name]:9.0f} records/s")
            for name in ("publish_file", "publish_s3"):
                print(f"{name} / bare_loop: {rates[name] / rates['bare_loop']:.2f}")
    finally:
        admin.delete_topics([topic])[topic].result(30)
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                s3.delete_object(Bucket=bucket, Key=item["Key"])
        s3.delete_bucket(Bucket=bucket)


if __name__ == "__main__":
    main()
