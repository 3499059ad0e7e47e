"""covidflow-normalise: Kafka covid.raw.v1 -> shared normalisation core -> Cassandra + Elasticsearch + dead letters.

Submitted by the ``covidflow_stream`` DAG (or ``spark-submit`` by hand). Executors get the covidflow package
and include/ (specs, schemas, locations) as the archive ``covidflow_bundle``; the mapping code is the
shared core, never a second implementation. Credentials never travel on the command line: the driver reads the
connections from the environment it inherits, gives the Kafka source its SASL options in the query plan, and hands
the executors the connections that carry credentials through ``spark.executorEnv.*`` set in its own SparkConf at
runtime (``covidflow.clients.executor_env_conf``; names Spark's redaction hides).

Exactly-once effect = Kafka offsets in the checkpoint +
idempotent writes (deterministic keys/ids): a replayed micro-batch rewrites the same rows and documents.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import signal
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

log = logging.getLogger("covidflow.normalise_stream")
BUNDLE = "covidflow_bundle"


def _use_bundle() -> str | None:
    """Put the shipped bundle first on sys.path (executors), so they run exactly the submitted code."""
    try:
        from pyspark import SparkFiles

        root = Path(SparkFiles.getRootDirectory()) / BUNDLE
    except Exception:
        return None
    if (root / "covidflow" / "__init__.py").exists() and str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return str(root) if root.exists() else None


def _partition(batches: Any, cfg: dict[str, Any], specs: dict[str, str]) -> Any:
    """Runs on the executors (pickled by value: covidflow is imported only after the bundle is on sys.path).

    ``mapInArrow``: Kafka rows arrive as Arrow batches, not as pickled Row objects; one stats row goes back.
    """
    _use_bundle()
    import pyarrow as pa

    import covidflow
    from covidflow.normalise.stream_runtime import StreamConfig, process_partition

    for stats in process_partition(batches, StreamConfig(**cfg), specs):
        stats["code"] = covidflow.__file__
        yield pa.RecordBatch.from_pydict({"stats": [json.dumps(stats)]})


def _other_instances(master_ui: str | None, app_name: str, own_id: str) -> list[str]:
    """Ids of other live applications with our name on the standalone master (never two copies)."""
    if not master_ui:
        return []
    try:
        with urllib.request.urlopen(f"{master_ui}/json/", timeout=5) as resp:
            status = json.load(resp)
    except OSError:
        return []
    return [a["id"] for a in status.get("activeapps", []) if a.get("name") == app_name and a.get("id") != own_id]


def _require_topics(kafka: Mapping[str, Any], topics: list[str]) -> None:
    """The stream never creates topics (their partitions and configs are the topics DAG's, from topics.yaml):
    a missing one stops the job at once, named, with what to run. ``kafka``: ``covidflow.clients.kafka_config()``."""
    from confluent_kafka.admin import AdminClient

    existing = set(AdminClient(dict(kafka)).list_topics(timeout=30).topics)
    missing = [t for t in topics if t not in existing]
    if missing:
        raise SystemExit(
            f"Kafka topic(s) {', '.join(missing)} do not exist on {kafka['bootstrap.servers']}: the stream never "
            "creates topics. "
            "Run the covidflow_kafka_topics DAG (include/config/topics.yaml) first; covidflow_stream does it "
            "before its first start."
        )


def spark_session(app_name: str) -> Any:
    """The driver's session. The executors' credentials go into its SparkConf here, at runtime, from the
    environment the driver inherited: never on the spark-submit command line, so never in ``ps``."""
    from pyspark.sql import SparkSession

    from covidflow.clients import executor_env_conf

    builder = SparkSession.builder.appName(app_name)
    executor_env = executor_env_conf()
    for key, value in executor_env.items():
        builder = builder.config(key, value)
    if executor_env:
        log.info("executors get credentials for: %s", ", ".join(k.rsplit(".", 1)[-1] for k in executor_env))
    return builder.getOrCreate()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", help="checkpoint folder (default: ~/.covidflow/data/spark/normalise/...)")
    parser.add_argument("--max-offsets-per-trigger", type=int)
    parser.add_argument("--trigger-seconds", type=int)
    parser.add_argument("--master-ui", help="standalone master web UI, to refuse running twice")
    parser.add_argument("--app-name", help="default covidflow-normalise (tests use another name)")
    parser.add_argument("--available-now", action="store_true", help="process what is there, then exit (tests)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    from covidflow.clients import kafka_config, kafka_spark_options
    from covidflow.index.es_writer import client, ensure_index
    from covidflow.normalise.stream_runtime import (
        APP_NAME,
        Heartbeat,
        StreamConfig,
        merge_stats,
        now_iso,
        progress_metrics,
        spec_texts,
    )
    from covidflow.store.cassandra_writer import ensure_schema, session

    cfg = StreamConfig.from_env(
        checkpoint=args.checkpoint,
        max_offsets_per_trigger=args.max_offsets_per_trigger,
        trigger_seconds=args.trigger_seconds,
    )
    state = Path(cfg.heartbeat).parent
    state.mkdir(parents=True, exist_ok=True)
    lock = (state / "driver.lock").open("w")
    try:  # same-host guard: a second driver on this checkpoint exits at once
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log.error("another covidflow-normalise driver holds %s; exiting", state / "driver.lock")
        return 3

    kafka = kafka_config(bootstrap=cfg.bootstrap)
    # The executors produce dead letters to the address the driver resolved (as when cfg carried it from settings).
    cfg = replace(cfg, bootstrap=kafka["bootstrap.servers"])
    _require_topics(kafka, [cfg.raw_topic, cfg.deadletter_topic])
    n = ensure_schema(session(cfg.cassandra_host, cfg.cassandra_port))  # replication: include/config/replication.yaml
    alias = ensure_index(client(cfg.elasticsearch_url))
    log.info("stores ready: %d CQL statements applied, ES write alias %s", n, alias)

    app_name = args.app_name or APP_NAME
    spark = spark_session(app_name)
    app_id = spark.sparkContext.applicationId
    others = _other_instances(args.master_ui, app_name, app_id)
    if others:
        log.error("%s already running as %s; exiting", app_name, others)
        spark.stop()
        return 3
    _use_bundle()

    beat = Heartbeat(app_id=app_id, app_name=app_name, started_at=now_iso(), updated_at=now_iso())
    totals = {"batches": 0, "input_rows": 0, "records": 0, "dead_letters": 0}
    cfg_dict = asdict(cfg)

    # The cores the app may use (spark.cores.max; standalone's defaultParallelism is never below 2).
    cores = int(spark.conf.get("spark.cores.max", "0") or 0) or spark.sparkContext.defaultParallelism

    def process_batch(df: Any, batch_id: int) -> None:
        # Said before any work, so the supervisor sees how long this batch has been running if it never ends.
        beat.batch_in_progress, beat.batch_started_at = batch_id, now_iso()
        beat.updated_at = now_iso()
        beat.write(cfg.heartbeat)
        try:
            run_batch(df, batch_id)
        finally:
            beat.batch_in_progress = beat.batch_started_at = None
            beat.updated_at = now_iso()
            beat.write(cfg.heartbeat)

    def run_batch(df: Any, batch_id: int) -> None:
        started = time.monotonic()
        specs = spec_texts()  # read per batch: a new or changed spec is live from this batch on
        parts = [
            json.loads(row["stats"])
            for row in df.select("value", "partition", "offset")
            # One task per core, not per Kafka partition: each task is a Python round trip and a write per store,
            # which a small batch over 6 partitions paid 6 times on one core. No shuffle; a record id always comes
            # from one partition, in offset order.
            .coalesce(cores)
            .mapInArrow(lambda batches: _partition(batches, cfg_dict, specs), "stats string")
            .collect()
        ]
        stats = merge_stats(parts)
        stats["seconds"] = round(time.monotonic() - started, 3)
        stats["code"] = sorted({p.get("code") for p in parts if p.get("code")})
        for k in ("input_rows", "records", "dead_letters"):
            totals[k] += stats[k]
        totals["batches"] += 1
        beat.last_batch_id, beat.last_batch_at, beat.last_batch = batch_id, now_iso(), stats
        beat.totals = dict(totals)
        log.info(
            "batch %d: input %d, records %d, normalise %.1fs, cassandra %s (%.1fs) and elasticsearch %d (%.1fs) in "
            "%.1fs, rejects %d, skips %d, %.2fs",
            batch_id, stats["input_rows"], stats["records"], stats["normalise_seconds"], stats["cassandra"],
            stats["cassandra_seconds"], stats["elasticsearch"], stats["elasticsearch_seconds"],
            stats["stores_seconds"], stats["dead_letters"], stats["skips"], stats["seconds"],
        )  # fmt: skip

    reader = (
        spark.readStream.format("kafka")
        # kafka.bootstrap.servers, plus security protocol, SASL mechanism and JAAS when the connection has them.
        .options(**kafka_spark_options(kafka))
        .option("subscribe", cfg.raw_topic)
        # Only committed transactions: an ingest attempt that failed midway (aborted) must never be stored.
        .option("kafka.isolation.level", "read_committed")
        .option("startingOffsets", "earliest")
        .option("maxOffsetsPerTrigger", str(cfg.max_offsets_per_trigger))
    )
    writer = reader.load().writeStream.queryName("normalise").option("checkpointLocation", cfg.checkpoint)
    writer = writer.foreachBatch(process_batch)
    if args.available_now:
        writer = writer.trigger(availableNow=True)
    else:
        writer = writer.trigger(processingTime=f"{cfg.trigger_seconds} seconds")
    query = writer.start()
    log.info("%s started: app %s, checkpoint %s", app_name, app_id, cfg.checkpoint)

    stopping: list[int] = []

    def stop(signum: int, _frame: Any) -> None:
        # Only flag it: calling Py4J from a signal handler re-enters the call the main thread is blocked in.
        log.warning("signal %d: stopping the query (an unfinished batch is replayed on restart)", signum)
        stopping.append(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while query.isActive and not stopping:
        query.awaitTermination(5)
        if spark.sparkContext._jsc.sc().isStopped():
            # The master killed the app (the supervisor does so for a stuck batch or a hung driver): the context
            # is gone, but an idle query would stay "active" in this process for ever and hold the submit task.
            log.error("the SparkContext of %s was stopped (app killed on the master): exiting with 1, so the "
                      "supervisor restarts the job from its checkpoint", app_id)  # fmt: skip
            return 1
        beat.updated_at = now_iso()
        for k, v in progress_metrics(query.lastProgress).items():
            setattr(beat, k, v)
        beat.write(cfg.heartbeat)
    if stopping:
        query.stop()
        spark.stop()
        return 0
    error = query.exception()
    spark.stop()
    if error is not None:
        log.error("query failed: %s", error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
