"""Publish one landed object to Kafka: stream it through the source's reader, one envelope per record.

Guarantees (docs/decisions/0005-kafka-envelope.md): the producer is idempotent (acks=all), every delivery
report is awaited and any failure fails the call; with transactions on (the default) one object is one Kafka
transaction, so a failed attempt leaves nothing visible to ``read_committed`` consumers and a retry publishes
the object exactly once. Reader rejects become dead letters in the same transaction. An object that cannot be
read to its end publishes nothing: its transaction is aborted and one dead letter says why (``ObjectRefused``).

Speed: the reader's raw batches (covidflow/read/batch.py) are encoded column-wise (``EnvelopeEncoder``,
``KeyBuilder.batch``), so the per-record Python work is one ``produce`` call.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from covidflow.land.objects import LandedObject, object_vintage
from covidflow.publish.envelope import (
    DEADLETTER_TOPIC,
    RAW_TOPIC,
    DeadLetter,
    EnvelopeEncoder,
    ObjectRef,
    message_key,
)

log = logging.getLogger(__name__)

#: Seconds between two progress lines of one object (issue 12: a large object's progress is visible).
PROGRESS_SECONDS = 10.0
#: Records of the per-record path (``read_records``) encoded and produced together.
RECORD_GROUP = 4096
#: Rows of a raw batch encoded and produced together: bounds the envelopes and keys held in Python at once.
SLICE_ROWS = 16384


class DeliveryFailed(RuntimeError):
    """Kafka did not acknowledge every record of an object; nothing of it is committed, a retry republishes."""


class ObjectRefused(RuntimeError):
    """The object cannot be read to its end: nothing of it was published, one dead letter says why.

    Deterministic (the same bytes give the same error), so the task fails without retry. ``summary`` has the
    counts (records read before the error, all discarded) and the reason.
    """

    def __init__(self, message: str, summary: PublishSummary) -> None:
        super().__init__(message)
        self.summary = summary


class ReadInterrupted(OSError):
    """S3 failed while the object was read (the reader then says "truncated"): transient, a retry reads it again."""

    def __init__(self, obj: LandedObject, cause: BaseException, reader_error: Exception) -> None:
        super().__init__(
            f"S3 failed while {obj.uri} (etag {obj.etag}) was read ({cause!r}; the reader said: {reader_error}). "
            "Nothing published, the object is not marked: a retry reads it again."
        )


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
    status: str = "published"  # "published" | "refused" (nothing of the object is on the raw topic)
    records_discarded: int = 0  # refused: records read before the error, in the aborted transaction
    #: When the records were put on Kafka: their envelopes' ``published_at``, the records' ``ingested_at``
    #: (a re-run's purge deletes what was ingested before it, docs/decisions/0016).
    published_at: str = ""

    def line(self) -> str:
        """One log line naming the object and the counts, for on-call."""
        if self.status == "refused":
            return (
                f"refused {self.object} etag={self.etag} vintage={self.vintage} bytes={self.bytes} records_out=0 "
                f"records_discarded={self.records_discarded} dead_letters={self.dead_letters} "
                f"reader_error={self.reader_error!r} duration={self.duration_s:.2f}s"
            )
        reasons = ", ".join(f"{reason}: {n}" for reason, n in sorted(self.rejects_by_reason.items())) or "none"
        error = f" reader_error={self.reader_error!r}" if self.reader_error else ""
        return (
            f"published {self.object} etag={self.etag} vintage={self.vintage} bytes={self.bytes} "
            f"records_out={self.records_out} rejects={self.rejects} ({reasons}) dead_letters={self.dead_letters}"
            f"{error} duration={self.duration_s:.2f}s rate={self.records_per_s:.0f} records/s"
        )

    def to_dict(self) -> dict[str, Any]:
        """The XCom value and the manifest marker's body."""
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


#: What str.strip() strips (every str.isspace() character), for Arrow's utf8_trim: keys equal the per-record ones.
PY_WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009"
    "\u200a\u2028\u2029\u202f\u205f\u3000"
)


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

    def batch(self, batch: Any) -> list[bytes]:
        """The keys of a raw batch's records, computed column-wise; equal to calling the builder per record."""
        import pyarrow as pa
        import pyarrow.compute as pc

        names = set(batch.schema.names)
        location: Any = None
        for column in self.location_columns:
            if column in names:
                text = _stripped_text(batch.column(column))
                text = pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text)
                location = text if location is None else pc.coalesce(location, text)
        period: Any = ""
        if self.date_column and self.date_column in names:
            period = pc.fill_null(_stripped_text(batch.column(self.date_column)), "")
        location = "" if location is None else pc.fill_null(location, "")
        if isinstance(location, str) and isinstance(period, str):
            return [message_key(self.source_id, location, period)] * batch.num_rows
        parts = [pa.scalar(p, pa.string()) if isinstance(p, str) else p for p in (location, period)]
        joined = pc.binary_join_element_wise(pa.scalar(f"{self.source_id}|"), parts[0], "|", parts[1], "")
        return joined.cast(pa.binary()).to_pylist()


def _stripped_text(column: Any) -> Any:
    """``str(value).strip()`` of every non-null value of a column, null kept, as a string array."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_string(column.type):
        return pc.utf8_trim(column, characters=PY_WHITESPACE)
    if pa.types.is_integer(column.type):
        return pc.cast(column, pa.string())
    return pa.array([None if v is None else str(v).strip() for v in column.to_pylist()], pa.string())


class _Deliveries:
    """Counts delivery reports; keeps the first few errors for the failure message."""

    def __init__(self) -> None:
        self.ok = 0
        self.failed = 0
        self.errors: list[str] = []
        self.callback = self._make_callback()

    def _make_callback(self) -> Callable[[Any, Any], None]:
        # A plain closure: librdkafka calls it once per message, and it is cheaper than a bound __call__.
        def report(err: Any, msg: Any) -> None:
            if err is None:
                self.ok += 1
            else:
                self.failed += 1
                if len(self.errors) < 3:
                    self.errors.append(str(err))

        return report


def _produce(producer: Any, topic: str, value: bytes, key: bytes | None, headers: list, on_delivery: Callable) -> None:
    while True:
        try:
            producer.produce(topic, value=value, key=key, headers=headers, on_delivery=on_delivery)
            return
        except BufferError:
            producer.poll(0.1)  # local queue full: serve delivery reports, then try again


def _produce_all(
    producer: Any, topic: str, values: list[bytes], keys: list[bytes], headers: list, on_delivery: Callable
) -> None:
    """The hot loop: one produce per record, falling back to the waiting path only when the queue is full."""
    produce = producer.produce
    for value, key in zip(values, keys, strict=True):
        try:
            produce(topic, value, key, headers=headers, on_delivery=on_delivery)
        except BufferError:
            _produce(producer, topic, value, key, headers, on_delivery)


class _Progress:
    """Logs ``object, records so far, rate`` every ``every`` seconds while a large object is published."""

    def __init__(self, uri: str, clock: Callable[[], float], every: float, started: float) -> None:
        self.uri, self.clock, self.every = uri, clock, every
        self.started = started
        self.next = started + every

    def tick(self, records: int) -> None:
        now = self.clock()
        if now >= self.next:
            elapsed = now - self.started
            log.info(
                "publishing %s: %d records so far in %.0f s, %.0f records/s",
                self.uri,
                records,
                elapsed,
                records / elapsed if elapsed else 0.0,
            )
            self.next = now + self.every


def publish_records(
    items: Iterable[Any],
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
    progress_seconds: float = PROGRESS_SECONDS,
    source_failed: Callable[[], BaseException | None] = lambda: None,
) -> PublishSummary:
    """Produce every record of one object: records -> raw topic, RawRejects -> dead letters, in one transaction.

    ``items`` is ``read_batches`` (raw batches, record lists, rejects) or ``read_records`` (records, rejects)
    over the S3 stream. A ReaderError while iterating (the object cannot be read to its end) aborts the
    transaction, sends one dead letter with the reason in a transaction of its own, and raises ObjectRefused:
    nothing of the object reaches the raw topic; unless ``source_failed()`` names an error of the byte source
    (S3 failed mid-read), then ReadInterrupted (retryable) and no dead letter. Raises DeliveryFailed if Kafka
    did not take everything; the caller marks the manifest only when this returns (or on ObjectRefused).
    """
    import pyarrow as pa
    from confluent_kafka import KafkaException

    from covidflow.read import RawRecord, RawReject, ReaderError

    started = clock()
    now = datetime.now(UTC).isoformat()
    ref = ObjectRef(obj.bucket, obj.key, obj.etag, obj.version_id, obj.size)
    vintage = object_vintage(spec, obj)
    summary = PublishSummary(source_id, obj.uri, obj.etag, vintage, obj.size, published_at=now)
    reasons: Counter[str] = Counter()
    deliveries = _Deliveries()
    report = deliveries.callback
    key_of = KeyBuilder(source_id, spec)
    encoder = EnvelopeEncoder(source_id, schema_ver, ref, vintage, now, obj.last_modified)
    progress = _Progress(obj.uri, clock, progress_seconds, started)
    produced = 0

    def records(chunk: list[Any]) -> int:
        values = [encoder.encode(r.index, r.fields, r.line) for r in chunk]
        _produce_all(producer, raw_topic, values, [key_of(r.fields) for r in chunk], encoder.headers, report)
        return len(chunk)

    def batch(chunk: pa.RecordBatch) -> int:
        for start in range(0, chunk.num_rows, SLICE_ROWS):  # bounds the Python objects alive at once
            part = chunk.slice(start, SLICE_ROWS)
            _produce_all(producer, raw_topic, encoder.encode_batch(part), key_of.batch(part), encoder.headers, report)
        return chunk.num_rows

    try:
        if transactional:
            producer.begin_transaction()
        pending: list[Any] = []  # single RawRecords (read_records), produced in groups
        try:
            for item in items:
                if isinstance(item, RawRecord):
                    pending.append(item)
                    if len(pending) < RECORD_GROUP:
                        continue
                    item, pending = pending, []
                elif pending:  # keep the reading order: the records before this item go first
                    summary.records_out += records(pending)
                    pending = []
                if isinstance(item, pa.RecordBatch):
                    summary.records_out += batch(item)
                elif isinstance(item, RawReject):
                    reasons[reject_reason(item.reason, obj.key)] += 1
                    letter = DeadLetter("publish", source_id, item.reason, ref, item.index, item.line, item.excerpt,
                                        at=now)  # fmt: skip
                    _produce(producer, deadletter_topic, letter.to_json(), key_of({}), letter.headers(), report)
                    summary.dead_letters += 1
                    continue
                else:  # a group of RawRecords, or a chunk of them that does not fit Arrow columns
                    summary.records_out += records(item)
                producer.poll(0)  # serve delivery reports as we go
                progress.tick(summary.records_out)
            if pending:
                summary.records_out += records(pending)
        except ReaderError as exc:
            cause = source_failed()
            if transactional:
                summary.records_discarded, summary.records_out = summary.records_out + len(pending), 0
                _abort(producer, transactional)
            if cause is not None:
                raise ReadInterrupted(obj, cause, exc) from cause
            refuse(producer, summary, exc, source_id=source_id, ref=ref, at=now, deadletter_topic=deadletter_topic,
                   transactional=transactional, commit_timeout=commit_timeout, flush_timeout=flush_timeout)  # fmt: skip
            summary.duration_s = round(clock() - started, 3)
            message = refused_message(summary)
            if not transactional:  # nothing to abort (transactions are on by default): what was produced stays
                message = (
                    f"{summary.object} (etag {summary.etag}) cannot be read to its end: {exc}. Transactions are "
                    f"disabled, so the {summary.records_out} records produced before the error stay published."
                )
            raise ObjectRefused(message, summary) from None
        produced = summary.records_out + summary.dead_letters
        remaining = producer.flush(flush_timeout)  # serves every delivery report
        if remaining or deliveries.failed or deliveries.ok != produced:
            _abort(producer, transactional)
            raise DeliveryFailed(_failure(obj, produced, deliveries, None))
        if transactional:
            producer.commit_transaction(commit_timeout)
    except KafkaException as exc:
        _abort(producer, transactional)
        produced = produced or summary.records_out + summary.dead_letters
        raise DeliveryFailed(_failure(obj, produced, deliveries, exc)) from None
    summary.rejects = sum(reasons.values())
    summary.rejects_by_reason = dict(reasons)
    summary.duration_s = round(clock() - started, 3)
    summary.records_per_s = round(summary.records_out / summary.duration_s, 1) if summary.duration_s else 0.0
    return summary


def refuse(
    producer: Any,
    summary: PublishSummary,
    error: Exception,
    *,
    source_id: str,
    ref: ObjectRef,
    at: str,
    deadletter_topic: str = DEADLETTER_TOPIC,
    transactional: bool = True,
    commit_timeout: float = 120.0,
    flush_timeout: float = 120.0,
    index: int | None = None,
    line: int | None = None,
) -> None:
    """Send the one dead letter of an object that is not published, in a transaction of its own.

    Its own transaction (not the aborted one, nor outside any: a transactional producer cannot write outside a
    transaction) makes it visible to ``read_committed`` consumers and never half-sent. Raises DeliveryFailed if
    Kafka does not take it: the caller must not mark the object then, a retry sends it again.
    """
    from confluent_kafka import KafkaException

    index = getattr(error, "index", None) if index is None else index
    line = getattr(error, "line", None) if line is None else line
    summary.status, summary.reader_error = "refused", str(error)
    reason = f"{error}; nothing of the object was published"
    if summary.records_discarded:
        reason += f" ({summary.records_discarded} records read before the error were discarded)"
    letter = DeadLetter("publish", source_id, reason, ref, index, line, "", at=at)
    deliveries = _Deliveries()
    try:
        if transactional:
            producer.begin_transaction()
        _produce(producer, deadletter_topic, letter.to_json(), message_key(source_id, ""), letter.headers(),
                 deliveries.callback)  # fmt: skip
        remaining = producer.flush(flush_timeout)
        if remaining or deliveries.ok != 1:
            _abort(producer, transactional)
            raise DeliveryFailed(_failure(_landed(ref), 1, deliveries, None))
        if transactional:
            producer.commit_transaction(commit_timeout)
    except KafkaException as exc:
        _abort(producer, transactional)
        raise DeliveryFailed(_failure(_landed(ref), 1, deliveries, exc)) from None
    summary.dead_letters = 1


def refused_message(summary: PublishSummary) -> str:
    """Why the task fails: the file, where and why reading stopped, and what was (not) published."""
    discarded = (
        f"the {summary.records_discarded} records read before the error were discarded (transaction aborted); "
        if summary.records_discarded
        else ""
    )
    return (
        f"{summary.object} (etag {summary.etag}) cannot be read to its end: {summary.reader_error}. "
        f"Nothing of it was published to {RAW_TOPIC}: {discarded}one dead letter with the reason is on "
        f"{DEADLETTER_TOPIC}. Fix the file and re-upload it (new etag)."
    )


def _landed(ref: ObjectRef) -> LandedObject:
    return LandedObject(ref.bucket, ref.key, ref.etag, ref.size or 0, "", ref.version_id)


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


class S3Body:
    """The object's body stream, remembering whether S3 itself failed while it was read.

    Readers turn a failing stream into a ReaderError ("truncated gzip", ...), which would refuse the object for
    good; ``failed`` lets the caller tell a transient S3 error (retry) from a bad file (refuse).
    """

    def __init__(self, body: Any) -> None:
        self._body = body
        self.failed: BaseException | None = None

    def read(self, size: int = -1) -> bytes:
        try:
            return self._body.read(size)
        except Exception as exc:
            self.failed = exc
            raise

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        self._body.close()


def open_stream(s3_client: Any, obj: LandedObject) -> S3Body:
    """The object's body as a stream (boto3 StreamingBody): read in chunks by the reader, never whole."""
    kwargs: dict[str, Any] = {"Bucket": obj.bucket, "Key": obj.key, "IfMatch": f'"{obj.etag}"'}
    if obj.version_id:
        kwargs["VersionId"] = obj.version_id
    return S3Body(s3_client.get_object(**kwargs)["Body"])


def producer_config(base: Mapping[str, Any], overrides: Mapping[str, Any], txn_id: str | None) -> dict[str, Any]:
    """The connection's config plus the ingest producer's settings (idempotence, acks, transactional.id)."""
    config = {**base, **overrides}
    if txn_id:
        config["transactional.id"] = txn_id
    return config
