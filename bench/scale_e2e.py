"""Full-size files through the whole stack: S3 upload -> ingest DAG -> Kafka -> stream -> Cassandra + Elasticsearch.

For each size, an SPF hospital-shaped file (101 departments x 3 sexes per day, 4 canonical records per row, as
the real `donnees-hospitalieres-covid19` file) is generated, uploaded under the source's prefix with a fresh
vintage in its name, and its ingest DAG is triggered through Airflow's REST API. Three marks from the upload:
- the ingest DAG run finished (S3 -> Kafka, the baseline of the same run);
- every record of the object is in Elasticsearch (the stream writes Cassandra before Elasticsearch in every
  micro-batch, so this is also the moment every record is in both stores);
- a final count in Cassandra (observations_by_vintage, this object version) confirms it.
It samples the RSS of the stream's driver and executor Python processes every second (peak per size), and prints
records/s and the per-record time of each size next to the smallest one's (the issue asks within 1.2x).

Needs `covidflow stack up` with the stream running (the script triggers covidflow_stream, which starts it unless it
runs). The records stay in the stores (they are a real source's records with a vintage of 2031).

    .venv/bin/python bench/scale_e2e.py [--rows 100000 300000]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import threading
import time
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil

from covidflow import clients, settings
from covidflow.catalog.specs import find_spec
from covidflow.demo import published_vintage
from covidflow.stack.airflow_api import AirflowClient
from covidflow.stack.connections import use_stack_connections
from covidflow.stack.services.s3 import s3_client

SOURCE = "spf_donnees_hospitalieres"
RECORDS_PER_ROW = 4
DEPARTMENTS = [f"{i:02d}" for i in range(1, 96) if i != 20] + ["2A", "2B", "971", "972", "973", "974", "976"]


def generate(path: Path, rows: int, seed: int = 7) -> None:
    """SPF's layout and quoting: "dep";"sexe";"jour";"hosp";"rea";"rad";"dc", one block of 303 rows per day."""
    rng = random.Random(seed)
    start = date(2020, 3, 18)
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write('"dep";"sexe";"jour";"hosp";"rea";"rad";"dc"\n')
        per_day = len(DEPARTMENTS) * 3
        for i in range(rows):
            day = start + timedelta(days=i // per_day)
            dep = DEPARTMENTS[(i // 3) % len(DEPARTMENTS)]
            out.write(
                f'"{dep}";{i % 3};"{day.isoformat()}";{rng.randint(0, 900)};{rng.randint(0, 300)};'
                f"{rng.randint(0, 90000)};{rng.randint(0, 20000)}\n"
            )


class RssSampler(threading.Thread):
    """Peak RSS of the stream's Python processes (driver, executor workers), sampled every second."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak_mb = 0.0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(1.0):
            total = 0
            for proc in psutil.process_iter(["cmdline", "memory_info"]):
                cmd = " ".join(proc.info["cmdline"] or [])
                if "normalise_stream.py" in cmd or "pyspark.daemon" in cmd or "pyspark/daemon" in cmd:
                    total += proc.info["memory_info"].rss if proc.info["memory_info"] else 0
            self.peak_mb = max(self.peak_mb, total / 2**20)


def es_count(es, key: str, etag: str) -> int:
    query = {"bool": {"filter": [{"term": {"source_object_key": key}}, {"term": {"source_object_version": etag}}]}}
    es.indices.refresh(index="covid-observations", ignore_unavailable=True)
    return es.count(index="covid-observations", query=query, ignore_unavailable=True)["count"]


def cassandra_count(vintage) -> int:
    """Rows of this vintage in observations_by_vintage, partition by partition (its key is source, vintage, place,
    metric): a count(*) with ALLOW FILTERING scans the whole table and fails once it holds millions of rows."""
    from cassandra.concurrent import execute_concurrent_with_args

    from covidflow.catalog.specs import find_spec
    from covidflow.store.cassandra_writer import session

    sess = session()
    metrics = list(find_spec(SOURCE)["metrics"].values())
    places = [f"FR-D{dep}" for dep in DEPARTMENTS]
    stmt = sess.prepare(
        "SELECT count(*) FROM covidflow.observations_by_vintage WHERE source_id = ? AND vintage = ? "
        "AND location_key = ? AND metric = ?"
    )
    args = [(SOURCE, vintage, place, metric) for place in places for metric in metrics]
    results = execute_concurrent_with_args(sess, stmt, args, concurrency=32, raise_on_first_error=True)
    return sum(result.one()[0] for _, result in results)


def one_size(client: AirflowClient, s3, es, rows: int, prefix: str, stamp: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"donnees-hospitalieres-covid19-2031-01-01-{stamp}.csv"
        generate(path, rows)
        size = path.stat().st_size
        key = f"{prefix}{path.name}"
        expected = rows * RECORDS_PER_ROW
        sampler = RssSampler()
        sampler.start()
        start = time.monotonic()
        etag = s3.put_object(Bucket=settings.LANDING_BUCKET, Key=key, Body=path.read_bytes())["ETag"].strip('"')
    state, tasks = client.wait(f"ingest_{SOURCE}", client.trigger(f"ingest_{SOURCE}"), timeout=3600)
    ingested = time.monotonic() - start
    if state != "success":
        raise SystemExit(f"ingest_{SOURCE} {state}: {tasks}")
    print(f"  {rows:,} rows ({size / 1e6:.1f} MB): ingest DAG done after {ingested:.1f} s", flush=True)
    last_report = 0.0
    while (seen := es_count(es, key, etag)) < expected:
        now = time.monotonic() - start
        if now > 7200:
            raise SystemExit(f"{key}: {seen:,} of {expected:,} records after 2 h")
        if now - last_report >= 30:
            print(f"  {seen:,} of {expected:,} records in Elasticsearch after {now:.0f} s", flush=True)
            last_report = now
        time.sleep(1)
    visible = time.monotonic() - start
    sampler.stop.set()
    stored = cassandra_count(published_vintage(SOURCE, key, etag))
    if stored != expected:
        raise SystemExit(f"{key}: Cassandra holds {stored:,} of {expected:,} records")
    return {"rows": rows, "records": expected, "mb": size / 1e6, "ingest_s": ingested, "visible_s": visible,
            "peak_mb": sampler.peak_mb}  # fmt: skip


def main() -> None:
    use_stack_connections()  # the local stack's logins, unless the environment has its own connections
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 300_000])
    args = parser.parse_args()

    spec = find_spec(SOURCE)
    client, s3, es = AirflowClient(), s3_client(timeout=300), clients.elasticsearch(cached=False)
    client.trigger("covidflow_stream")
    results = []
    for n, rows in enumerate(sorted(args.rows)):
        stamp = f"{random.randrange(24):02d}h{(n * 7 + int(time.time()) // 60) % 60:02d}"
        results.append(one_size(client, s3, es, rows, spec["landing"]["prefix"], stamp))
    base = results[0]["visible_s"] / results[0]["records"]
    print(f"\n{'rows':>10} {'records':>10} {'MB':>6} {'ingest DAG':>11} {'visible':>9} {'records/s':>10} "
          f"{'µs/record':>10} {'vs smallest':>11} {'stream peak RSS':>16}")  # fmt: skip
    for r in results:
        per = r["visible_s"] / r["records"]
        print(f"{r['rows']:>10,} {r['records']:>10,} {r['mb']:>6.1f} {r['ingest_s']:>10.1f}s {r['visible_s']:>8.1f}s "
              f"{r['records'] / r['visible_s']:>10,.0f} {per * 1e6:>10.1f} {per / base:>10.2f}x "
              f"{r['peak_mb']:>13.0f} MB")  # fmt: skip


if __name__ == "__main__":
    main()
