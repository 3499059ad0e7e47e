"""Executor- and driver-side glue of the streaming job: one partition in, three sinks out, stats back.

Kept out of ``spark_jobs/`` so it ships in the covidflow package (the same code on driver and executors)
and so the integration tests and the benchmark can run a partition without Spark.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from covidflow.normalise.stream import dead_letter_key, process_messages
from covidflow.normalise.stream_names import APP_NAME
from covidflow.publish.envelope import DEADLETTER_TOPIC, RAW_TOPIC

log = logging.getLogger(__name__)
__all__ = ["APP_NAME", "Heartbeat", "NormaliserCache", "StreamConfig", "process_partition"]


def state_dir() -> Path:
    """Durable home of the checkpoint and the heartbeat (COVIDFLOW_STREAM_STATE_DIR overrides)."""
    from covidflow.stack.home import StackHome

    default = StackHome.from_env().root / "data" / "spark" / "normalise"
    return Path(os.environ.get("COVIDFLOW_STREAM_STATE_DIR", default))


@dataclass(frozen=True)
class StreamConfig:
    """Everything the job needs; picklable, so the same object reaches every executor."""

    #: Kafka address override (None: the connection's, else settings); credentials always come from the connection.
    bootstrap: str | None = None
    raw_topic: str = RAW_TOPIC
    deadletter_topic: str = DEADLETTER_TOPIC
    #: Address overrides only (None: the Airflow connection, else settings, through covidflow.clients);
    #: credentials always come from the connection.
    cassandra_host: str | None = None
    cassandra_port: int | None = None
    elasticsearch_url: str | None = None
    checkpoint: str = field(default_factory=lambda: str(state_dir() / "checkpoint"))
    heartbeat: str = field(default_factory=lambda: str(state_dir() / "heartbeat.json"))
    max_offsets_per_trigger: int = 20000
    #: An idle stream checks Kafka this often: a published file waits at most this long for its micro-batch.
    trigger_seconds: int = 2
    store_retry_seconds: float = 600.0

    @classmethod
    def from_env(cls, **overrides: Any) -> StreamConfig:
        env = {
            "bootstrap": os.environ.get("COVIDFLOW_KAFKA_BOOTSTRAP"),
            "raw_topic": os.environ.get("COVIDFLOW_STREAM_RAW_TOPIC"),
            "deadletter_topic": os.environ.get("COVIDFLOW_STREAM_DEADLETTER_TOPIC"),
            "checkpoint": os.environ.get("COVIDFLOW_STREAM_CHECKPOINT"),
            "cassandra_port": os.environ.get("COVIDFLOW_STREAM_CASSANDRA_PORT"),
            # An address set explicitly in the job's environment wins over the connection's (forwarders in tests).
            "elasticsearch_url": os.environ.get("COVIDFLOW_STREAM_ELASTICSEARCH_URL")
            or os.environ.get("COVIDFLOW_ELASTICSEARCH_URL"),
            "max_offsets_per_trigger": os.environ.get("COVIDFLOW_STREAM_MAX_OFFSETS"),
            "trigger_seconds": os.environ.get("COVIDFLOW_STREAM_TRIGGER_SECONDS"),
        }
        kwargs: dict[str, Any] = {k: v for k, v in env.items() if v}
        for k in ("max_offsets_per_trigger", "trigger_seconds", "cassandra_port"):
            if k in kwargs:
                kwargs[k] = int(kwargs[k])
        kwargs.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**kwargs)


def spec_texts(directory: Path | None = None) -> dict[str, str]:
    """Every spec's text by source id, read by the driver before each micro-batch.

    Shipped to the executors with the batch, so a spec added or changed in the repository is used from the next
    batch on, with no restart and no re-submitted bundle (COVIDFLOW_SPECS_DIR overrides the folder).
    """
    from covidflow.catalog.specs import SOURCES_DIR, spec_paths

    folder = Path(directory or os.environ.get("COVIDFLOW_SPECS_DIR") or SOURCES_DIR)
    return {path.stem: path.read_text(encoding="utf-8") for path in spec_paths(folder)}


class NormaliserCache:
    """One normaliser per (source, spec text) per Python worker: a spec compiles once, and again only if it changes.

    With ``texts`` (the driver's ``spec_texts()``, refreshed per batch by :meth:`use`) specs come from the
    driver; without, from the bundled include/sources (tests, replays).
    """

    def __init__(self, texts: dict[str, str] | None = None) -> None:
        self._texts = texts
        self._by_key: dict[tuple[str, str], Any] = {}

    def use(self, texts: dict[str, str] | None) -> None:
        self._texts = texts

    def __call__(self, source_id: str) -> Any:
        from covidflow.catalog.specs import SOURCES_DIR, find_spec, parse_spec
        from covidflow.normalise.columnar import BatchNormaliser

        if not source_id or "/" in source_id or source_id.startswith("."):
            raise KeyError(f"invalid source id {source_id!r}")
        if self._texts is None:
            key = (source_id, "")
            if key not in self._by_key:
                self._by_key[key] = BatchNormaliser(find_spec(source_id))
            return self._by_key[key]
        if source_id not in self._texts:
            raise KeyError(f"no spec for source {source_id!r} in the driver's spec folder")
        text = self._texts[source_id]
        key = (source_id, hashlib.sha256(text.encode("utf-8")).hexdigest())
        if key not in self._by_key:
            self._by_key = {k: v for k, v in self._by_key.items() if k[0] != source_id}  # drop the old version
            self._by_key[key] = BatchNormaliser(parse_spec(text, SOURCES_DIR / f"{source_id}.yaml"))
        return self._by_key[key]


_NORMALISERS = NormaliserCache()
_WRITERS: dict[str, Any] = {}


def _writers(cfg: StreamConfig) -> tuple[Any, Any, Any]:
    """(CassandraWriter, EsWriter, Kafka Producer), built once per Python worker process."""
    if "cassandra" not in _WRITERS:
        from confluent_kafka import Producer

        from covidflow.clients import kafka_config
        from covidflow.index.es_writer import EsWriter, client
        from covidflow.store.cassandra_writer import CassandraWriter, connect_with_retry

        sess = connect_with_retry(cfg.cassandra_host, cfg.cassandra_port, cfg.store_retry_seconds)
        _WRITERS["cassandra"] = CassandraWriter(sess, retry_for=cfg.store_retry_seconds)
        _WRITERS["es"] = EsWriter(client(cfg.elasticsearch_url), retry_for=cfg.store_retry_seconds)
        _WRITERS["kafka"] = Producer(
            kafka_config({"enable.idempotence": True, "acks": "all", "linger.ms": 20}, bootstrap=cfg.bootstrap)
        )
    return _WRITERS["cassandra"], _WRITERS["es"], _WRITERS["kafka"]


def publish_dead_letters(producer: Any, topic: str, letters: list[Any], timeout: float = 60.0) -> int:
    """Produce and wait for every delivery; a failed delivery raises (the batch is then replayed)."""
    errors: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    for letter in letters:
        while True:
            try:
                producer.produce(topic, letter.to_json(), key=dead_letter_key(letter), on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.5)
    remaining = producer.flush(timeout)
    if remaining or errors:
        raise RuntimeError(f"dead-letter delivery failed: {remaining} undelivered, errors {errors[:3]}")
    return len(letters)


def process_partition(
    batches: Iterable[Any], cfg: StreamConfig, specs: dict[str, str] | None = None
) -> Iterator[dict[str, Any]]:
    """mapInArrow body: Arrow batches with ``value``, ``partition``, ``offset`` in; one stats dict out.

    Values are decoded and normalised object by object as Arrow batches; the canonical records go to both
    stores as one Arrow table, never as per-record objects.
    """
    import pyarrow.compute as pc

    started = time.monotonic()
    _NORMALISERS.use(specs)
    values: list[bytes | None] = []
    offsets: dict[int, int] = {}
    for batch in batches:
        if not batch.num_rows:
            continue
        values.extend(batch.column("value").to_pylist())
        parts = batch.column("partition")
        for part in pc.unique(parts).to_pylist():
            top = pc.max(pc.filter(batch.column("offset"), pc.equal(parts, part))).as_py()
            offsets[part] = max(offsets.get(part, -1), top)
    stats: dict[str, Any] = {"input_rows": len(values), "max_offsets": offsets}
    if values:
        t0 = time.monotonic()
        out = process_messages(values, _NORMALISERS)
        cass, es, producer = _writers(cfg)
        t1 = time.monotonic()
        if out.record_count:
            (stats["cassandra"], c_s), (stats["elasticsearch"], e_s) = write_both(cass, es, out.records)
        else:
            (stats["cassandra"], c_s), (stats["elasticsearch"], e_s) = ({}, 0.0), (0, 0.0)
        stats["dead_letters"] = publish_dead_letters(producer, cfg.deadletter_topic, out.dead_letters)
        stats.update(records=out.record_count, skips=out.skips, duplicates=out.duplicates,
                     normalise_seconds=round(t1 - t0, 3), cassandra_seconds=round(c_s, 3),
                     elasticsearch_seconds=round(e_s, 3), stores_seconds=round(time.monotonic() - t1, 3))  # fmt: skip
    stats["seconds"] = round(time.monotonic() - started, 3)
    yield stats


def write_both(cass: Any, es: Any, records: Any) -> tuple[tuple[Any, float], tuple[Any, float]]:
    """Write Cassandra and Elasticsearch at the same time: each waits on its server most of the time, so the
    batch takes about the slower of the two instead of their sum. Each writer retries on its own; if either
    finally fails the batch fails and is replayed (both writes are idempotent)."""
    from concurrent.futures import ThreadPoolExecutor

    def timed(write: Any) -> tuple[Any, float]:
        started = time.monotonic()
        return write(records), time.monotonic() - started

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="covidflow-es") as pool:
        indexed = pool.submit(timed, es.write)
        stored = timed(cass.write)
        return stored, indexed.result()


def merge_stats(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum per-partition stats into one batch summary (pure)."""
    total: dict[str, Any] = {"input_rows": 0, "records": 0, "dead_letters": 0, "skips": 0, "duplicates": 0,
                             "cassandra": {}, "elasticsearch": 0, "max_offsets": {}, "normalise_seconds": 0.0,
                             "cassandra_seconds": 0.0, "elasticsearch_seconds": 0.0, "stores_seconds": 0.0}  # fmt: skip
    for p in parts:
        for k in ("normalise_seconds", "cassandra_seconds", "elasticsearch_seconds", "stores_seconds"):
            total[k] = round(total[k] + p.get(k, 0.0), 3)
        for k in ("input_rows", "records", "dead_letters", "skips", "duplicates", "elasticsearch"):
            total[k] += p.get(k, 0)
        for table, n in p.get("cassandra", {}).items():
            total["cassandra"][table] = total["cassandra"].get(table, 0) + n
        for part, off in p.get("max_offsets", {}).items():
            total["max_offsets"][str(part)] = max(total["max_offsets"].get(str(part), -1), off)
    return total


_BEAT_LOCK = threading.Lock()  # the batch thread and the driver's main loop both write the heartbeat


@dataclass
class Heartbeat:
    """What the job reports when a batch starts, after every batch and every few seconds; the DAG reads it.

    ``batch_in_progress`` / ``batch_started_at`` name the batch running now (None between batches): the
    driver refreshes ``updated_at`` whatever its batch does, so only these show a batch that is stuck.
    """

    app_id: str
    app_name: str
    started_at: str
    updated_at: str
    last_batch_id: int | None = None
    last_batch_at: str | None = None
    last_batch: dict[str, Any] = field(default_factory=dict)
    batch_in_progress: int | None = None
    batch_started_at: str | None = None
    input_rows_per_second: float | None = None
    processed_rows_per_second: float | None = None
    offsets_behind_latest: float | None = None  # Kafka source metric maxOffsetsBehindLatest
    totals: dict[str, int] = field(default_factory=dict)
    driver_pid: int = field(default_factory=os.getpid)

    def write(self, path: str | Path) -> None:
        """Atomic replace, so a reader never sees half a file."""
        path = Path(path)
        with _BEAT_LOCK:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(asdict(self), indent=1, default=str), encoding="utf-8")
            tmp.replace(path)


def progress_metrics(progress: dict[str, Any] | None) -> dict[str, float | None]:
    """Input rate, processing rate and Kafka lag from a StreamingQueryProgress JSON (pure)."""
    if not progress:
        return {"input_rows_per_second": None, "processed_rows_per_second": None, "offsets_behind_latest": None}
    behind = None
    for src in progress.get("sources", []):
        metrics = src.get("metrics") or {}
        if "maxOffsetsBehindLatest" in metrics:
            behind = float(metrics["maxOffsetsBehindLatest"])
    return {
        "input_rows_per_second": progress.get("inputRowsPerSecond"),
        "processed_rows_per_second": progress.get("processedRowsPerSecond"),
        "offsets_behind_latest": behind,
    }


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
