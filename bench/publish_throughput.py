"""Publish throughput: an SPF-shaped CSV to Kafka through our publish path, next to a bare confluent-kafka loop.

Phases, in this order and in the same run (same broker, same producer settings from include/config/ingest.yaml,
a private bench topic deleted at the end, so covid.raw.v1 is not polluted); each runs in its own subprocess,
so its peak RSS is its own:
  bare_loop        csv.reader -> json.dumps(row) -> Producer.produce, then flush (no envelope, no transaction)
  publish_file     our path on the local file: read_batches -> envelopes column-wise -> one transaction
  publish_s3       our path as the DAG runs it: the object streamed from S3 (boto3 StreamingBody) -> same
  publish_records  (with --records) the per-record path: read_records -> one envelope per record

Prints records/s, peak RSS and the ratio to bare_loop (import time is not counted: a fixed start-up cost).
On a shared machine the rates swing between runs: ``--repeat N`` runs the phases N times, interleaved, and
reports each phase's median (and range).
Needs `covidflow stack up s3 kafka`.
Run: .venv/bin/python bench/publish_throughput.py [--rows 1000000] [--repeat 3] [--records] [--profile publish_file]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from covidflow.catalog.specs import find_spec
from covidflow.clients import kafka_config
from covidflow.land.objects import LandedObject
from covidflow.publish.config import ingest_config
from covidflow.publish.kafka import open_stream, publish_records, transactional_id
from covidflow.read import read_records
from covidflow.read.batch import read_batches
from covidflow.stack.connections import use_stack_connections
from covidflow.stack.services.s3 import s3_client

SOURCE = "spf_vacsi"
PHASES = ("bare_loop", "publish_file", "publish_s3")


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
    config = kafka_config(ingest_config()["producer"])
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


def ours(stream, obj: LandedObject, topic: str, per_record: bool = False) -> int:
    spec = find_spec(SOURCE)
    p = producer(transactional_id(SOURCE, f"bench-{uuid.uuid4().hex}"))
    p.init_transactions(30)
    read = read_records if per_record else read_batches
    items = read(stream, spec["format"], spec.get("reader") or {}, name=obj.key)
    summary = publish_records(
        items,
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


def run_phase(name: str, path: Path, obj: LandedObject, topic: str) -> int:
    if name == "bare_loop":
        return bare_loop(path, topic)
    if name in ("publish_file", "publish_records"):
        with path.open("rb") as f:
            return ours(f, obj, topic, per_record=name == "publish_records")
    body = open_stream(s3_client(timeout=60), obj)
    try:
        return ours(body, obj, topic)
    finally:
        body.close()


def child(args: argparse.Namespace) -> None:
    """One phase in this process: prints one JSON line (records, seconds, peak RSS)."""
    obj = LandedObject(**json.loads(args.object))
    path = Path(args.file)
    if args.phase != "bare_loop":  # module imports are a fixed start-up cost, not throughput: do them untimed
        import pyarrow.compute  # noqa: F401

        import covidflow.read.delimited  # noqa: F401
    if args.profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        started = time.perf_counter()
        n = profiler.runcall(run_phase, args.phase, path, obj, args.topic)
        elapsed = time.perf_counter() - started
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(18)
    else:
        started = time.perf_counter()
        n = run_phase(args.phase, path, obj, args.topic)
        elapsed = time.perf_counter() - started
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"records": n, "seconds": elapsed, "peak_rss_mb": rss_mb}))


def main() -> None:
    use_stack_connections()  # the local stack's logins, unless the environment has its own connections
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=1, help="run the phases N times (interleaved); medians")
    parser.add_argument("--records", action="store_true", help="also time the per-record path (read_records)")
    parser.add_argument("--profile", default="", help="cProfile this phase (top functions on stderr; slower)")
    parser.add_argument("--phase", help=argparse.SUPPRESS)  # internal: run one phase in this process
    parser.add_argument("--file", help=argparse.SUPPRESS)
    parser.add_argument("--object", help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        child(args)
        return
    admin = AdminClient(kafka_config())
    topic = f"bench.publish.{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(topic, num_partitions=6, replication_factor=1)])[topic].result(30)
    s3, bucket = s3_client(timeout=60), f"bench-publish-{uuid.uuid4().hex[:8]}"
    phases = PHASES + (("publish_records",) if args.records else ())
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
            print(f"{args.rows} rows, {size / 1e6:.1f} MB, topic {topic}, {len(phases)} phases, one subprocess each")
            rates: dict[str, list[float]] = {name: [] for name in phases}
            rss: dict[str, float] = {name: 0.0 for name in phases}
            for round_ in range(1, args.repeat + 1):
                for name in phases:
                    command = [sys.executable, __file__, "--phase", name, "--file", str(path), "--topic", topic,
                               "--object", json.dumps(obj.to_dict())]  # fmt: skip
                    command += ["--profile", "1"] if args.profile == name else []
                    done = subprocess.run(command, capture_output=True, text=True, check=False)
                    if done.returncode:
                        raise SystemExit(f"phase {name} failed:\n{done.stderr[-3000:]}")
                    if args.profile == name:
                        print(done.stderr, file=sys.stderr)
                    result = json.loads(done.stdout.strip().splitlines()[-1])
                    assert result["records"] == args.rows, (name, result)
                    rate = result["records"] / result["seconds"]
                    rates[name].append(rate)
                    rss[name] = max(rss[name], result["peak_rss_mb"])
                    print(
                        f"[{round_}/{args.repeat}] {name:>15}: {result['records']} records in "
                        f"{result['seconds']:6.2f} s = {rate:9.0f} records/s, peak RSS {result['peak_rss_mb']:.0f} MB"
                    )
            median = {name: statistics.median(values) for name, values in rates.items()}
            print(f"medians over {args.repeat} round(s):")
            for name in phases:
                print(
                    f"{name:>15}: {median[name]:9.0f} records/s (range {min(rates[name]):.0f}-{max(rates[name]):.0f}), "
                    f"peak RSS {rss[name]:.0f} MB"
                )
            for name in phases[1:]:
                per_round = ", ".join(f"{a / b:.2f}" for a, b in zip(rates[name], rates["bare_loop"], strict=True))
                print(f"{name} / bare_loop: {median[name] / median['bare_loop']:.2f} (per round: {per_round})")
    finally:
        admin.delete_topics([topic])[topic].result(30)
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                s3.delete_object(Bucket=bucket, Key=item["Key"])
        s3.delete_bucket(Bucket=bucket)


if __name__ == "__main__":
    main()
