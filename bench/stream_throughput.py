"""Stream throughput and latency on the local stack, next to the raw write rates of the same records, same run.

Phases (one process, one run):
1. raw Cassandra: the ~63k canonical records of all bundled samples, written by CassandraWriter alone
   (observations_latest + observations_by_vintage + vintages_by_source), records/s;
2. raw Elasticsearch: the same records, EsWriter alone (bulk, _id = record_id), records/s;
3. stream: a private streaming job (own topic, checkpoint and app name, 1 s trigger) on the standalone master;
   the same sample files are published as envelopes (new vintage, so new ids) and timed from the first
   publish until the job has written them all to both stores: records/s sustained Kafka -> both stores;
4. latency: N times, one small file (WHO sample, ~1k records) is published with a fresh vintage and timed
   until the last record is readable in Cassandra and Elasticsearch: median and p95 seconds.
   Measured from the Kafka publish: the S3 -> ingest DAG leg is not included (see the issue notes).

Needs `covidflow stack up` (kafka, cassandra, elasticsearch, spark). Run: `.venv/bin/python bench/stream_throughput.py`
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from covidflow import settings
from covidflow.catalog.specs import find_spec, load_all
from covidflow.index.es_writer import EsWriter, client, ensure_index
from covidflow.normalise.replay import envelopes_for_file, publish_file
from covidflow.normalise.stream import process_messages
from covidflow.normalise.stream_runtime import NormaliserCache
from covidflow.normalise.supervise import build_bundle, fetch_master_status, spark_submit_command
from covidflow.read.base import RawReject
from covidflow.stack.home import StackHome
from covidflow.stack.services.spark import kafka_connector_jars, spark_env
from covidflow.store.cassandra_writer import CassandraWriter, ensure_schema, session


def records_for(files: list[tuple[str, Path]], vintage: datetime) -> dict[str, dict]:
    cache = NormaliserCache()
    out: dict[str, dict] = {}
    for sid, path in files:
        envs = [e for e in envelopes_for_file(find_spec(sid), path, vintage=vintage) if not isinstance(e, RawReject)]
        out.update(process_messages([e.to_json() for e in envs], cache).records)
    return out


def visible(sess, es, records: list[dict]) -> bool:
    """The last record of a publish is readable in both stores."""
    r = records[-1]
    row = sess.execute(
        "SELECT record_id FROM covidflow.observations_by_vintage WHERE source_id=%s AND vintage=%s "
        "AND location_key=%s AND metric=%s AND date=%s",
        [r["source_id"], r["vintage"], r["location_key"], r["metric"], r["date"]],
    ).one()
    return row is not None and es.exists(index="covid-observations", id=r["record_id"]).body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--latency-runs", type=int, default=15)
    args = parser.parse_args()
    from confluent_kafka import Producer

    files = [(s.id, s.sample_path) for s in load_all().values() if s.sample_path and s.sample_path.exists()]
    base = datetime.now(UTC).replace(microsecond=0)
    sess, es = session(), client()
    ensure_schema(sess)
    ensure_index(es)
    results: dict[str, object] = {}

    # 1-2: raw store writes of the same records
    raw = list(records_for(files, base).values())
    t0 = time.monotonic()
    CassandraWriter(sess).write(raw)
    t_cass = time.monotonic() - t0
    t0 = time.monotonic()
    EsWriter(es).write(raw)
    t_es = time.monotonic() - t0
    results["records"] = len(raw)
    results["raw_cassandra_records_per_s"] = round(len(raw) / t_cass)
    results["raw_elasticsearch_records_per_s"] = round(len(raw) / t_es)
    results["raw_both_sequential_records_per_s"] = round(len(raw) / (t_cass + t_es))
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
        producer = Producer({"bootstrap.servers": settings.KAFKA_BOOTSTRAP, "enable.idempotence": True})
        stream_vintage = base + timedelta(seconds=1)
        want = len(records_for(files, stream_vintage))
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
        print(json.dumps(results), flush=True)

        # 4: latency, publish -> visible in both stores
        who = find_spec("who_covid19_global_weekly")
        latencies = []
        for i in range(args.latency_runs):
            v = base + timedelta(seconds=10 + i)
            recs = sorted(records_for([(who.id, who.sample_path)], v).values(), key=lambda r: r["source_row"])
            t0 = time.monotonic()
            publish_file(producer, who, who.sample_path, vintage=v, topic=env["COVIDFLOW_STREAM_RAW_TOPIC"])
            while not visible(sess, es, recs):
                time.sleep(0.1)
            latencies.append(time.monotonic() - t0)
        latencies.sort()
        results["latency_records_per_publish"] = len(recs)
        results["latency_median_s"] = round(statistics.median(latencies), 2)
        results["latency_p95_s"] = round(latencies[max(0, round(0.95 * len(latencies)) - 1)], 2)
        results["latency_max_s"] = round(latencies[-1], 2)
    finally:
        job.terminate()
        job.wait(60)
        from confluent_kafka.admin import AdminClient

        topics = [env["COVIDFLOW_STREAM_RAW_TOPIC"], env["COVIDFLOW_STREAM_DEADLETTER_TOPIC"]]
        AdminClient({"bootstrap.servers": settings.KAFKA_BOOTSTRAP}).delete_topics(topics)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
