"""Publish one landed object to Kafka: stream it through the source's reader, one envelope per record.

Guarantees (docs/decisions/0005-kafka-envelope.md): the producer is idempotent (acks=all), every delivery
report is awaited and any failure fails the call; with transactions on (the default) one object is one Kafka
transaction, so a failed attempt leaves nothing visible to ``read_committed`` consumers and a retry publishes
the object exactly once. Reader rejects and whole-object reader errors become dead letters in the same
transaction.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, BinaryIO

from covidflow.land.objects import LandedObject, object_vintage
from covidflow.publish.envelope import DEADLETTER_TOPIC, RAW_TOPIC, DeadLetter, ObjectRef, RawEnvelope, message_key

log = logging.getLogger(__name__)


class DeliveryFailed(RuntimeError):
    """Kafka did not acknowledge every record of an object; nothing of it is committed, a retry republishes."""


@dataclass
class PublishSummary:
    """What one object produced: the task log line and the XCom value."""

    source_id: str
    object: str  # s3://bucket/key
    etag: str
    vintage: str
    bytes: int
    records_out: int = 0
    rejects: int = 0
    rejects_by_reason: dict[str, int] = field(default_factory=dict)
    reader_error: str | None = None
    dead_letters: int = 0
    duration_s: float = 0.0
    records_per_s: float = 0.0

    def line(self) -> str:
        """One log line naming the object and the counts, for on-call."""
        reasons = ", ".join(f"{reason}: {n}" for reason, n in sorted(self.rejects_by_reason.items())) or "none"
        error = f" reader_error={self.reader_error!r}" if self.reader_error else ""
        return (
            f"published {self.object} etag={self.etag} vintage={self.vintage} bytes={self.bytes} "
            f"records_out={self.records_out} rejects={self.rejects} ({reasons}) dead_letters={self.dead_letters}"
            f"{error} duration={self.duration_s:.2f}s rate={self.records_per_s:.0f} records/s"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def schema_version(spec_text: bytes) -> str:
    """The raw layout version: a digest of the spec the object was read with (a spec change shows here)."""
    return hashlib.sha256(spec_text).hexdigest()[:12]


def transactional_id(source_id: str, key: str) -> str:
    """Stable per object, so a retry fences (and aborts) a zombie attempt of the same object."""
    return f"covidflow-ingest-{source_id}-{hashlib.sha1(key.encode()).hexdigest()[:16]}"


def reject_reason(message: str, name: str) -> str:
    """A reader's reject message without its ``<file> line N:`` prefix, so rejects group by reason."""
    if message.startswith(name):
        rest = message[len(name) :]
        head, sep, tail = rest.partition(": ")
        if sep and head.strip().split(" ")[0] in ("line", "record", ""):
            return tail
    return message


class KeyBuilder:
    """Message key ``source|location|period`` from the raw fields the spec names (before any normalisation)."""

    def __init__(self, source_id: str, spec: Mapping[str, Any]) -> None:
        location = spec.get("location") or {}
        self.source_id = source_id
        self.location_columns: list[str] = (
            [location["column"]] if location.get("column") else list(location.get("columns") or [])
        )
        self.date_column: str | None = (spec.get("date") or {}).get("column")

    def __call__(self, fields: Mapping[str, Any]) -> bytes:
        location = ""
        for column in self.location_columns:
            value = fields.get(column)
            if value is not None and str(value).strip():
                location = str(value).strip()
                break
        period = ""
        if self.date_column:
            value = fields.get(self.date_column)
            period = "" if value is None else str(value).strip()
        return message_key(self.source_id, location, period)


class _Deliveries:
    """Counts delivery reports; keeps the first few errors for the failure message."""

    def __init__(self) -> None:
        self.ok = 0
        self.failed = 0
        self.errors: list[str] = []

    def __call__(self, err: Any, msg: Any) -> None:
        if err is None:
            self.ok += 1
        else:
            self.failed += 1
            if len(self.errors) < 3:
                self.errors.append(str(err))


def _produce(producer: Any, topic: str, value: bytes, key: bytes | None, headers: list, on_delivery: Callable) -> None:
    while True:
        try:
            producer.produce(topic, value=value, key=key, headers=headers, on_delivery=on_delivery)
            return
        except BufferError:
            producer.poll(0.1)  # local queue full: serve delivery reports, then try again


def publish_records(
    records: Iterator[Any],
    *,
    source_id: str,
    spec: Mapping[str, Any],
    obj: LandedObject,
    schema_ver: str,
    producer: Any,
    raw_topic: str = RAW_TOPIC,
    deadletter_topic: str = DEADLETTER_TOPIC,
    transactional: bool = True,
    commit_timeout: float = 120.0,
    flush_timeout: float = 120.0,
    clock: Callable[[], float] = time.monotonic,
) -> PublishSummary:
    """Produce every record of one object (RawRecord -> raw topic, RawReject/ReaderError -> dead letters).

    ``records`` is the reader's iterator (``read_records`` over the S3 stream). Raises DeliveryFailed if Kafka
    did not take them all; the caller marks the manifest only when this returns.
    """
    from confluent_kafka import KafkaException

    from covidflow.read import RawRecord, ReaderError

    started = clock()
    now = datetime.now(UTC).isoformat()
    ref = ObjectRef(obj.bucket, obj.key, obj.etag, obj.version_id, obj.size)
    vintage = object_vintage(spec, obj)
    summary = PublishSummary(source_id, obj.uri, obj.etag, vintage, obj.size)
    reasons: Counter[str] = Counter()
    deliveries = _Deliveries()
    key_of = KeyBuilder(source_id, spec)
    produced = 0

    def dead_letter(reason: str, index: int | None, line: int | None, excerpt: str) -> None:
        nonlocal produced
        letter = DeadLetter("publish", source_id, reason, ref, index, line, excerpt, at=now)
        _produce(producer, deadletter_topic, letter.to_json(), key_of({}), letter.headers(), deliveries)
        produced += 1
        summary.dead_letters += 1

    try:
        if transactional:
            producer.begin_transaction()
        try:
            for item in records:
                if isinstance(item, RawRecord):
                    env = RawEnvelope(
                        source_id,
                        schema_ver,
                        ref,
                        vintage,
                        item.index,
                        item.fields,
                        item.line,
                        now,
                        landed_at=obj.last_modified,
                    )
                    _produce(producer, raw_topic, env.to_json(), key_of(item.fields), env.headers(), deliveries)
                    produced += 1
                    summary.records_out += 1
                else:
                    reasons[reject_reason(item.reason, obj.key)] += 1
                    dead_letter(item.reason, item.index, item.line, item.excerpt)
                if produced % 10000 == 0:
                    producer.poll(0)
        except ReaderError as exc:
            summary.reader_error = str(exc)
            reasons[f"unreadable object: {exc.reason}"] += 1
            dead_letter(str(exc), exc.index, exc.line, "")
        remaining = producer.flush(flush_timeout)  # serves every delivery report
        if remaining or deliveries.failed or deliveries.ok != produced:
            _abort(producer, transactional)
            raise DeliveryFailed(_failure(obj, produced, deliveries, None))
        if transactional:
            producer.commit_transaction(commit_timeout)
    except KafkaException as exc:
        _abort(producer, transactional)
        raise DeliveryFailed(_failure(obj, produced, deliveries, exc)) from None
    summary.rejects = sum(reasons.values())
    summary.rejects_by_reason = dict(reasons)
    summary.duration_s = round(clock() - started, 3)
    summary.records_per_s = round(summary.records_out / summary.duration_s, 1) if summary.duration_s else 0.0
    return summary


def _abort(producer: Any, transactional: bool) -> None:
    if not transactional:
        return
    try:
        producer.abort_transaction(10)
    except Exception as exc:  # the broker may be gone; the next init_transactions fences this attempt anyway
        log.warning("abort_transaction failed (the next attempt fences it): %s", exc)


def _failure(obj: LandedObject, produced: int, deliveries: _Deliveries, exc: Exception | None) -> str:
    errors = "; ".join(deliveries.errors) or (str(exc) if exc else "no delivery report")
    return (
        f"Kafka delivery failed for {obj.uri} (etag {obj.etag}): {deliveries.ok} of {produced} records acknowledged, "
        f"{deliveries.failed} failed ({errors}). Nothing of this object is committed and it is not marked in the "
        f"manifest: a retry republishes it."
    )


def open_stream(s3_client: Any, obj: LandedObject) -> BinaryIO:
    """The object's body as a stream (boto3 StreamingBody): read in chunks by the reader, never whole."""
    kwargs: dict[str, Any] = {"Bucket": obj.bucket, "Key": obj.key, "IfMatch": f'"{obj.etag}"'}
    if obj.version_id:
        kwargs["VersionId"] = obj.version_id
    return s3_client.get_object(**kwargs)["Body"]


def producer_config(base: Mapping[str, Any], overrides: Mapping[str, Any], txn_id: str | None) -> dict[str, Any]:
    """The connection's config plus the ingest producer's settings (idempotence, acks, transactional.id)."""
    config = {**base, **overrides}
    if txn_id:
        config["transactional.id"] = txn_id
    return config
