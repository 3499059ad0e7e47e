"""Publishing one object, against an in-memory producer that records messages and can fail deliveries."""

from __future__ import annotations

import gzip
import io
import json
import logging
from types import SimpleNamespace
from typing import Any

import pytest

from covidflow.land.objects import LandedObject
from covidflow.ops.callbacks import failure_line
from covidflow.publish.kafka import (
    PY_WHITESPACE,
    DeliveryFailed,
    KeyBuilder,
    ObjectRefused,
    PublishSummary,
    ReadInterrupted,
    publish_records,
    reject_reason,
    transactional_id,
)
from covidflow.read import read_records
from covidflow.read.base import RawRecord
from covidflow.read.batch import read_batches, records_to_batch

OBJ = LandedObject("landing", "spf/vacsi/v.csv", "etag1", 70, "2024-05-01T10:00:00+00:00")
SPEC = {"location": {"column": "dep"}, "date": {"column": "jour"}, "vintage": {"from": "landed_at"}}
CSV = b"dep;jour;n\n01;2021-01-06;1\n02;2021-01-06;2;9\n03;2021-01-07;3\n"


class FakeProducer:
    """Queues messages; delivers them on flush (failing the ones whose index is in ``fail``); commit makes the
    transaction's messages visible, abort drops them, as for a read_committed consumer."""

    def __init__(self, fail: set[int] = frozenset()) -> None:
        self.pending: list[tuple] = []
        self.committed: list[tuple[str, bytes, bytes, dict]] = []
        self.fail, self.sent, self.calls = fail, 0, []

    def produce(self, topic, value, key, headers, on_delivery) -> None:
        self.pending.append((topic, value, key, dict(headers), on_delivery, self.sent))
        self.sent += 1

    def poll(self, timeout) -> int:
        return 0

    def flush(self, timeout) -> int:
        for _topic, _value, _key, _headers, callback, index in self.pending:
            callback("broker down" if index in self.fail else None, None)
        self.delivered = list(self.pending)
        return 0

    def begin_transaction(self) -> None:
        self.calls.append("begin")
        self.pending = []

    def commit_transaction(self, timeout) -> None:
        self.calls.append("commit")
        self.committed += [(t, v, k, h) for t, v, k, h, _, _ in self.pending]
        self.pending = []

    def abort_transaction(self, timeout) -> None:
        self.calls.append("abort")
        self.pending = []


def publish(producer: FakeProducer, data: bytes = CSV, items: Any = None, **kw: Any) -> PublishSummary:
    records = read_records(io.BytesIO(data), "csv", {"delimiter": ";"}, name=OBJ.key) if items is None else items
    return publish_records(
        records,
        source_id="spf_vacsi",
        spec=SPEC,
        obj=OBJ,
        schema_ver="s1",
        producer=producer,
        **{"clock": iter([100.0, 100.5]).__next__, **kw},
    )


def big_csv(rows: int) -> bytes:
    return b"dep;jour;n\n" + b"".join(b"%02d;2021-01-06;%d\n" % (i % 90, i) for i in range(rows))


def truncated_gzip(rows: int) -> bytes:
    """A gzip of many records cut short: the reader yields records, then fails mid-object (like a bomb's cap)."""
    data = gzip.compress(big_csv(rows))
    return data[: len(data) // 2]


def test_records_and_rejects_are_published_in_one_transaction() -> None:
    producer = FakeProducer()
    summary = publish(producer)
    assert producer.calls == ["begin", "commit"]
    topics = [t for t, *_ in producer.committed]
    assert topics == ["covid.raw.v1", "covid.deadletter.v1", "covid.raw.v1"]
    raw = [json.loads(v) for t, v, _, _ in producer.committed if t == "covid.raw.v1"]
    assert [(r["record_index"], r["fields"], r["line"]) for r in raw] == [
        (1, {"dep": "01", "jour": "2021-01-06", "n": "1"}, 2),
        (3, {"dep": "03", "jour": "2021-01-07", "n": "3"}, 4),
    ]
    assert [k for t, _, k, _ in producer.committed if t == "covid.raw.v1"] == [
        b"spf_vacsi|01|2021-01-06",
        b"spf_vacsi|03|2021-01-07",
    ]
    letter = json.loads(producer.committed[1][1])
    assert (letter["stage"], letter["record_index"], letter["line"]) == ("publish", 2, 3)
    assert summary.records_out == 2 and summary.rejects == 1 and summary.dead_letters == 1
    assert summary.duration_s == 0.5 and summary.records_per_s == 4.0
    assert summary.vintage == "2024-05-01T10:00:00+00:00"
    (reason,) = summary.rejects_by_reason
    assert not reason.startswith(OBJ.key)
    assert summary.line().startswith(
        "published s3://landing/spf/vacsi/v.csv etag=etag1 vintage=2024-05-01T10:00:00+00:00 bytes=70 "
        "records_out=2 rejects=1 ("
    )
    assert summary.line().endswith("dead_letters=1 duration=0.50s rate=4 records/s")


def test_a_failed_delivery_fails_and_aborts_the_transaction() -> None:
    producer = FakeProducer(fail={2})
    with pytest.raises(
        DeliveryFailed,
        match=r"s3://landing/spf/vacsi/v.csv \(etag etag1\): 2 of 3 records "
        r"acknowledged, 1 failed \(broker down\)",
    ):
        publish(producer)
    assert producer.calls == ["begin", "abort"]
    assert producer.committed == []


def test_an_empty_object_publishes_nothing_and_one_dead_letter_in_its_own_transaction() -> None:
    producer = FakeProducer()
    with pytest.raises(ObjectRefused) as refused:
        publish(producer, data=b"")
    summary = refused.value.summary
    assert producer.calls == ["begin", "abort", "begin", "commit"]
    assert [t for t, *_ in producer.committed] == ["covid.deadletter.v1"]
    letter = json.loads(producer.committed[0][1])
    assert letter["reason"] == "spf/vacsi/v.csv: empty file; nothing of the object was published"
    assert (summary.status, summary.records_out, summary.dead_letters) == ("refused", 0, 1)
    assert summary.reader_error == "spf/vacsi/v.csv: empty file"
    assert str(refused.value).startswith(
        "s3://landing/spf/vacsi/v.csv (etag etag1) cannot be read to its end: spf/vacsi/v.csv: empty file. "
        "Nothing of it was published to covid.raw.v1"
    )


@pytest.mark.parametrize("reader", ["records", "batches"])
def test_an_object_that_fails_midway_publishes_no_record_only_one_dead_letter(reader: str) -> None:
    data = truncated_gzip(20_000)
    stream = io.BytesIO(data)
    if reader == "records":
        items = read_records(stream, "csv", {"delimiter": ";"}, name=OBJ.key)
    else:
        items = read_batches(stream, "csv", {"delimiter": ";"}, name=OBJ.key, batch_rows=1000)
    producer = FakeProducer()
    with pytest.raises(ObjectRefused) as refused:
        publish(producer, items=items, clock=lambda: 0.0)
    summary = refused.value.summary
    assert summary.records_discarded > 1000, "the reader must have yielded records before failing"
    assert producer.sent > 1000  # records were produced, inside the transaction that was then aborted
    assert producer.calls == ["begin", "abort", "begin", "commit"]
    assert [t for t, *_ in producer.committed] == ["covid.deadletter.v1"]  # no raw record is visible
    letter = json.loads(producer.committed[0][1])
    assert letter["reason"].startswith("spf/vacsi/v.csv line ") and "truncated or corrupt gzip data" in letter["reason"]
    assert f"({summary.records_discarded} records read before the error were discarded)" in letter["reason"]
    assert letter["line"] == summary.records_discarded + 2  # header line + the records read, then the cut
    assert dict(producer.committed[0][3])["stage"] == b"publish"
    assert summary.records_out == 0 and summary.dead_letters == 1


def test_a_read_cut_by_s3_is_transient_no_dead_letter() -> None:
    producer = FakeProducer()
    cause = ConnectionResetError("peer reset")
    items = read_records(io.BytesIO(truncated_gzip(20_000)), "csv", {"delimiter": ";"}, name=OBJ.key)
    with pytest.raises(ReadInterrupted, match=r"S3 failed while s3://landing/spf/vacsi/v.csv"):
        publish(producer, items=items, clock=lambda: 0.0, source_failed=lambda: cause)
    assert producer.calls == ["begin", "abort"] and producer.committed == []


def test_key_builder_takes_the_first_non_empty_location_column() -> None:
    key = KeyBuilder("jhu", {"location": {"columns": ["Province/State", "Country/Region"]}, "date": {}})
    assert key({"Province/State": " ", "Country/Region": "France"}) == b"jhu|France|"
    assert key({"Province/State": "Reunion", "Country/Region": "France"}) == b"jhu|Reunion|"
    assert key({}) == b"jhu||"


def test_reject_reason_drops_the_file_and_line() -> None:
    assert reject_reason("a/b.csv line 3: 4 fields, expected 3", "a/b.csv") == "4 fields, expected 3"
    assert reject_reason("a/b.csv record 9: bad", "a/b.csv") == "bad"
    assert reject_reason("other: bad", "a/b.csv") == "other: bad"


def test_transactional_id_is_stable_per_object() -> None:
    assert transactional_id("s", "k") == transactional_id("s", "k") != transactional_id("s", "k2")
    assert transactional_id("s", "k").startswith("covidflow-ingest-s-")


def test_failure_line() -> None:
    ti = SimpleNamespace(dag_id="ingest_x", run_id="r1", task_id="publish", map_index=2, try_number=3)
    context: dict[str, Any] = {"ti": ti, "exception": DeliveryFailed("Kafka unreachable\nmore")}
    assert failure_line(context) == (
        "FAILED dag=ingest_x run=r1 task=publish[2] try=3 error=DeliveryFailed: Kafka unreachable"
    )
    assert failure_line(context, "RETRY").startswith("RETRY dag=ingest_x")


def test_reject_ratio_beyond_the_limit_fails_the_run_and_says_where_the_rejects_are() -> None:
    from covidflow.publish.ingest import reject_ratio_exceeded

    summary = {"object": "s3://b/spf/x.csv", "records_out": 90, "rejects": 10, "rejects_by_reason": {"bad date": 10}}
    assert reject_ratio_exceeded(summary, 0.10) is None  # exactly at the limit passes
    message = reject_ratio_exceeded(summary, 0.05)
    assert message is not None
    assert message.startswith("s3://b/spf/x.csv: 10 of 100 records rejected (10.0% > the allowed 5.0%)")
    assert "covid.deadletter.v1" in message and "{'bad date': 10}" in message
    assert reject_ratio_exceeded({**summary, "records_out": 0, "rejects": 0}, 0.0) is None  # empty object


def test_batches_and_records_publish_the_same_messages() -> None:
    """The column-wise path (read_batches) and the per-record path give the same values, keys and headers."""
    data = CSV + big_csv(3000)[len(b"dep;jour;n\n") :] + b' 7 ;2021-02-01 ;"a ""q"" \\ \xc3\xa9"\n'
    runs = {}
    for reader in ("records", "batches"):
        stream = io.BytesIO(data)
        items = (
            read_records(stream, "csv", {"delimiter": ";"}, name=OBJ.key)
            if reader == "records"
            else read_batches(stream, "csv", {"delimiter": ";"}, name=OBJ.key, batch_rows=500)
        )
        producer = FakeProducer()
        publish(producer, items=items, clock=lambda: 0.0)
        runs[reader] = [
            (t, {**json.loads(v), "published_at": "-", "at": "-"}, k, h) for t, v, k, h in producer.committed
        ]
    assert len(runs["records"]) == 2 + 3000 + 1 + 1  # records, and the malformed row's dead letter
    assert runs["batches"] == runs["records"]
    last = runs["batches"][-1]
    assert last[1]["fields"] == {"dep": " 7 ", "jour": "2021-02-01 ", "n": 'a "q" \\ é'}
    assert last[2] == b"spf_vacsi|7|2021-02-01"
    assert last[1]["record_index"] == 3004
    assert last[3] == {"source_id": b"spf_vacsi", "object_key": b"spf/vacsi/v.csv", "etag": b"etag1",
                       "envelope_version": b"1"}  # fmt: skip


def test_key_builder_batches_equal_per_record_keys() -> None:
    odd = ["", " ", "\u3000", "x\x1c", "\xa0Paris ", None, "é"]
    records = [
        RawRecord(i + 1, {"Province/State": a, "Country/Region": b, "Date": d, "n": i}, None)
        for i, (a, b, d) in enumerate(
            [(a, b, d) for a in odd for b in ["France", " ", None] for d in [" 2021-01-01", None, ""]]
        )
    ]
    keys = KeyBuilder(
        "jhu", {"location": {"columns": ["Province/State", "Country/Region"]}, "date": {"column": "Date"}}
    )
    assert keys.batch(records_to_batch(records)) == [keys(r.fields) for r in records]
    ints = [RawRecord(1, {"dep": 1, "jour": 20210101}, None), RawRecord(2, {"dep": None, "jour": None}, None)]
    by_int = KeyBuilder("s", {"location": {"column": "dep"}, "date": {"column": "jour"}})
    assert by_int.batch(records_to_batch(ints)) == [b"s|1|20210101", b"s||"]
    assert KeyBuilder("s", {}).batch(records_to_batch(ints)) == [b"s||", b"s||"]


def test_py_whitespace_is_what_str_strip_strips() -> None:
    assert set(PY_WHITESPACE) == {chr(c) for c in range(0x110000) if chr(c).isspace()}


def test_a_large_object_logs_its_progress(caplog: pytest.LogCaptureFixture) -> None:
    ticks = iter(float(t) for t in range(0, 10_000, 3))
    items = read_batches(io.BytesIO(big_csv(5000)), "csv", {"delimiter": ";"}, name=OBJ.key, batch_rows=1000)
    with caplog.at_level(logging.INFO, logger="covidflow.publish.kafka"):
        publish(FakeProducer(), items=items, clock=ticks.__next__, progress_seconds=5)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("publishing ")]
    assert lines == [
        "publishing s3://landing/spf/vacsi/v.csv: 2000 records so far in 6 s, 333 records/s",
        "publishing s3://landing/spf/vacsi/v.csv: 4000 records so far in 12 s, 333 records/s",
    ]


def test_the_drift_guard_reads_raw_batches() -> None:
    """publish_object peeks at read_batches: columns come from the batch schema, the peek is bounded by rows."""
    from covidflow.store.quality import SchemaDrift, guard_drift, peek_columns

    vacsi = {"location": {"column": "dep"}, "date": {"column": "jour"}, "metrics": {"n": {"column": "n"}}}
    config = {"drift": {"peek_records": 10}}
    batches = list(read_batches(io.BytesIO(big_csv(50)), "csv", {"delimiter": ";"}, name=OBJ.key, batch_rows=20))
    columns, replay = peek_columns(iter(batches), 10)
    assert columns == {"dep", "jour", "n"}
    assert list(replay) == batches  # one batch peeked, all still yielded
    renamed = big_csv(50).replace(b"dep;", b"departement;", 1)
    with pytest.raises(SchemaDrift, match="column 'dep' mapped by the spec is missing"):
        guard_drift("spf_vacsi", vacsi, read_batches(io.BytesIO(renamed), "csv", {"delimiter": ";"}, name="k"),
                    config, name="k")  # fmt: skip
