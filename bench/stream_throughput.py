"""Stream throughput and latency on the local stack, next to the raw write rates of the same records, same run.

Phases (one process, one run), on the canonical records of every bundled sample plus a synthetic SPF hospital
file of `--spf-rows` rows (4 records per row):
1. raw Elasticsearch bulk (the baseline the issue names): `helpers.bulk` of the same documents into a private
   index made from the project's template, records/s;
2. raw Cassandra: the same records written by CassandraWriter alone (every table it writes), records/s;
3. stream: a private streaming job (own topics, checkpoint and app name, 1 s trigger) on the standalone master;
   the same files are published as envelopes (new vintage, so new ids) and timed from the first publish until
   the job has written them all to both stores: records/s sustained Kafka -> both stores, and its ratio to 1;
   then 1 again (the baseline moves between minutes on a shared machine): the ratio to each, and to the faster;
4. latency: N times, one small file (WHO sample, ~1k records) is published with a fresh vintage and timed
   until the last record is readable in Cassandra and Elasticsearch: median and p95 seconds.
   Measured from the Kafka publish: the S3 -> ingest DAG leg is not included (bench/s3_to_query.py has it).

Needs `covidflow stack up` (kafka, cassandra, elasticsearch, spark).
Run: `.venv/bin/python bench/stream_throughput.py [--spf-rows 50000] [--latency-runs 15]`
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from covidflow import settings
from covidflow.catalog.schema import load_schema
from covidflow.catalog.specs import find_spec, load_all
from covidflow.clients import kafka_config
from covidflow.index.es_writer import arrow_actions, client, ensure_index
from covidflow.normalise.replay import envelopes_for_file, publish_file
from covidflow.normalise.stream import process_messages
from covidflow.normalise.stream_runtime import NormaliserCache
from covidflow.normalise.supervise import build_bundle, fetch_master_status, spark_submit_command
from covidflow.read.base import RawReject
from covidflow.stack.connections import use_stack_connections
from covidflow.stack.home import StackHome
from covidflow.stack.services.spark import kafka_connector_jars, spark_env
from covidflow.store.cassandra_writer import CassandraWriter, ensure_schema, session


def records_for(files: list[tuple[str, Path]], vintage: datetime) -> Any:
    """The canonical records the stream will make of ``files`` at ``vintage``, as one Arrow table."""
    import pyarrow as pa

    cache = NormaliserCache()
    tables = []
    for sid, path in files:
        envs = [e for e in envelopes_for_file(find_spec(sid), path, vintage=vintage) if not isinstance(e, RawReject)]
        tables.append(process_messages([e.to_json() for e in envs], cache).records)
    return pa.concat_tables(tables)


def synthetic_spf(folder: Path, rows: int) -> Path:
    """An SPF hospital-shaped file named like the publisher's (bench/scale_e2e.py's generator)."""
    from scale_e2e import generate

    path = folder / "donnees-hospitalieres-covid19-2031-02-01-19h00.csv"
    generate(path, rows)
    return path


def raw_bulk_rate(es: Any, table: Any) -> float:
    """records/s of plain helpers.bulk of the same documents into a private index (the baseline)."""
    from elasticsearch import helpers

    from covidflow.index.es_template import generate_template

    index = f"bench-raw-bulk-{uuid.uuid4().hex[:8]}"
    template = generate_template(load_schema())["template"]
    es.indices.create(index=index, mappings=template["mappings"], settings=template.get("settings", {}))
    try:
        actions = arrow_actions(table, index)
        t0 = time.monotonic()
        ok, errors = helpers.bulk(es, actions, chunk_size=1000, raise_on_error=False)
        seconds = time.monotonic() - t0
        if errors:
            raise SystemExit(f"raw bulk: {len(errors)} errors, first {errors[0]}")
        return ok / seconds
    finally:
        es.indices.delete(index=index, ignore_unavailable=True)


def visible(sess, es, table: Any) -> bool:
    """The last record of a publish (highest source_row) is readable in both stores."""
    import pyarrow.compute as pc

    r = table.take([pc.index(table.column("source_row"), pc.max(table.column("source_row"))).as_py()]).to_pylist()[0]
    row = sess.execute(
        "SELECT record_id FROM covidflow.observations_by_vintage WHERE source_id=%s AND vintage=%s "
        "AND location_key=%s AND metric=%s AND date=%s",
        [r["source_id"], r["vintage"], r["location_key"], r["metric"], r["date"]],
    ).one()
    return row is not None and es.exists(index="covid-observations", id=r["record_id"]).body


def main() -> None:
    use_stack_connections()  # the local stack's logins, unless the environment has its own connections
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--latency-runs", type=int, default=15)
    parser.add_argument("--spf-rows", type=int, default=50_000, help="rows of the synthetic SPF file (4 records each)")
    args = parser.parse_args()
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    work = Path(tempfile.mkdtemp(prefix="covidflow-bench-files-"))
    files = [(s.id, s.sample_path) for s in load_all().values() if s.sample_path and s.sample_path.exists()]
    files.append(("spf_donnees_hospitalieres", synthetic_spf(work, args.spf_rows)))
    base = datetime.now(UTC).replace(microsecond=0)
    sess, es = session(), client()
    ensure_schema(sess)
    ensure_index(es)
    results: dict[str, object] = {}

    # 1-2: raw store writes of the same records
    raw = records_for(files, base)
    results["records"] = raw.num_rows
    results["raw_elasticsearch_bulk_records_per_s"] = round(raw_bulk_rate(es, raw))
    t0 = time.monotonic()
    CassandraWriter(sess).write(raw)
    results["raw_cassandra_writer_records_per_s"] = round(raw.num_rows / (time.monotonic() - t0))
    print(json.dumps(results), flush=True)

    # 3: private streaming job
    tag = base.strftime("%Y%m%d%H%M%S")
    state = Path(tempfile.mkdtemp(prefix="covidflow-bench-"))
    home = StackHome.from_env()
    env = {
        **os.environ,
        **spark_env(home),
        "COVIDFLOW_STREAM_STATE_DIR": str(state),
        "COVIDFLOW_STREAM_RAW_TOPIC": f"covid.raw.bench.{tag}",
        "COVIDFLOW_STREAM_DEADLETTER_TOPIC": f"covid.deadletter.bench.{tag}",
        "COVIDFLOW_STREAM_TRIGGER_SECONDS": "1",
    }
    master = settings.SPARK_MASTER if fetch_master_status() else "local[2]"
    cmd = spark_submit_command(
        master,
        ["--app-name", "covidflow-normalise-bench"],
        bundle=build_bundle(state / "bundle.zip"),
        jars=kafka_connector_jars(home),
    )
    topics = [env["COVIDFLOW_STREAM_RAW_TOPIC"], env["COVIDFLOW_STREAM_DEADLETTER_TOPIC"]]
    admin = AdminClient(kafka_config())
    for future in admin.create_topics([NewTopic(t, num_partitions=6, replication_factor=1) for t in topics]).values():
        future.result(30)  # the job never creates topics
    log = (state / "job.log").open("w")
    job = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    beat_path = state / "heartbeat.json"

    def beat() -> dict:
        try:
            return json.loads(beat_path.read_text())
        except (OSError, ValueError):
            return {}

    try:
        deadline = time.monotonic() + 180
        while not beat() and time.monotonic() < deadline:
            time.sleep(1)
        if not beat():
            raise SystemExit(f"bench job did not start; see {state / 'job.log'}")
        producer = Producer(kafka_config({"enable.idempotence": True}))
        stream_vintage = base + timedelta(seconds=1)
        want = records_for(files, stream_vintage).num_rows
        t0 = time.monotonic()
        for sid, path in files:
            publish_file(
                producer, find_spec(sid), path, vintage=stream_vintage, topic=env["COVIDFLOW_STREAM_RAW_TOPIC"]
            )
        t_pub = time.monotonic() - t0
        while beat().get("totals", {}).get("records", 0) < want:
            if job.poll() is not None:
                raise SystemExit(f"bench job exited {job.returncode}; see {state / 'job.log'}")
            time.sleep(0.5)
        t_stream = time.monotonic() - t0
        results["publish_seconds"] = round(t_pub, 1)
        results["stream_records_per_s"] = round(want / t_stream)
        results["stream_seconds"] = round(t_stream, 1)
        results["stream_vs_raw_elasticsearch_bulk"] = round(
            want / t_stream / results["raw_elasticsearch_bulk_records_per_s"], 2
        )
        results["last_batch"] = beat().get("last_batch")
        # the baseline again, right after: on a shared machine it moves between minutes; the ratio to the
        # faster of the two is the conservative figure
        after = round(raw_bulk_rate(es, raw))
        results["raw_elasticsearch_bulk_after_records_per_s"] = after
        results["stream_vs_raw_elasticsearch_bulk_after"] = round(want / t_stream / after, 2)
        results["stream_vs_faster_raw_bulk"] = round(
            want / t_stream / max(after, results["raw_elasticsearch_bulk_records_per_s"]), 2
        )
        print(json.dumps(results), flush=True)

        # 4: latency, publish -> visible in both stores
        who = find_spec("who_covid19_global_weekly")
        latencies = []
        for i in range(args.latency_runs):
            v = base + timedelta(seconds=10 + i)
            recs = records_for([(who.id, who.sample_path)], v)
            t0 = time.monotonic()
            publish_file(producer, who, who.sample_path, vintage=v, topic=env["COVIDFLOW_STREAM_RAW_TOPIC"])
            while not visible(sess, es, recs):
                time.sleep(0.1)
            latencies.append(time.monotonic() - t0)
        latencies.sort()
        results["latency_records_per_publish"] = recs.num_rows
        results["latency_median_s"] = round(statistics.median(latencies), 2)
        results["latency_p95_s"] = round(latencies[max(0, round(0.95 * len(latencies)) - 1)], 2)
        results["latency_max_s"] = round(latencies[-1], 2)
    finally:
        job.terminate()
        job.wait(60)
        admin.delete_topics(topics)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
