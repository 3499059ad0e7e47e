"""Publishing one object, against an in-memory producer that records messages and can fail deliveries."""

from __future__ import annotations

import io
import json
from types import SimpleNamespace
from typing import Any

import pytest

from covidflow.land.objects import LandedObject
from covidflow.ops.callbacks import failure_line
from covidflow.publish.kafka import (
    DeliveryFailed,
    KeyBuilder,
    PublishSummary,
    publish_records,
    reject_reason,
    transactional_id,
)
from covidflow.read import read_records

OBJ = LandedObject("landing", "spf/vacsi/v.csv", "etag1", 70, "2024-05-01T10:00:00+00:00")
SPEC = {"location": {"column": "dep"}, "date": {"column": "jour"}, "vintage": {"from": "landed_at"}}
CSV = b"dep;jour;n\n01;2021-01-06;1\n02;2021-01-06;2;9\n03;2021-01-07;3\n"


class FakeProducer:
    """Queues messages; delivers them on flush, failing the ones whose index is in ``fail``."""

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
        return 0

    def begin_transaction(self) -> None:
        self.calls.append("begin")

    def commit_transaction(self, timeout) -> None:
        self.calls.append("commit")
        self.committed = [(t, v, k, h) for t, v, k, h, _, _ in self.pending]

    def abort_transaction(self, timeout) -> None:
        self.calls.append("abort")


def publish(producer: FakeProducer, data: bytes = CSV) -> PublishSummary:
    records = read_records(io.BytesIO(data), "csv", {"delimiter": ";"}, name=OBJ.key)
    return publish_records(
        records,
        source_id="spf_vacsi",
        spec=SPEC,
        obj=OBJ,
        schema_ver="s1",
        producer=producer,
        clock=iter([100.0, 100.5]).__next__,
    )


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


def test_an_unreadable_object_becomes_one_dead_letter() -> None:
    producer = FakeProducer()
    summary = publish(producer, data=b"")
    assert summary.records_out == 0 and summary.dead_letters == 1
    assert summary.reader_error == "spf/vacsi/v.csv: empty file"
    assert summary.rejects_by_reason == {"unreadable object: empty file": 1}


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
