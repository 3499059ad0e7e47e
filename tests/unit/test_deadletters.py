"""Dead-letter grouping, filtering and replay bookkeeping, without Kafka or S3 (those are in tests/integration)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from covidflow.publish.deadletters import (
    field_of,
    format_groups,
    letter_id,
    parse_since,
    reason_group,
    replay,
    select,
    summarise,
)


def letter(row: int, reason: str, stage: str = "normalise", source: str = "spf_vacsi", **extra: Any) -> dict:
    return {
        "stage": stage,
        "source_id": source,
        "reason": reason,
        "object": {"bucket": "b", "key": "spf/vacsi/vacsi-dep.csv", "etag": "e1"},
        "record_index": row,
        "line": row + 1,
        "excerpt": '{"dep": "20"}',
        "fields": {"dep": "20", "jour": "2021-01-01", "n_dose1": "1", "n_cum_dose1": "1"},
        "at": "2026-11-30T10:00:00+00:00",
        **extra,
    }


def test_groups_take_values_out_and_examples_name_object_row_and_field() -> None:
    letters = [letter(i, f"dep: unknown location (fr_department): '{d}'") for i, d in ((1, "20"), (2, "2C"), (3, "99"))]
    letters.append(letter(9, "spf/vacsi/vacsi-dep.csv: line 10: 6 fields, header has 4", stage="publish"))
    groups = summarise(letters, examples=2)
    assert [(g.stage, g.reason, g.count, len(g.examples)) for g in groups] == [
        ("normalise", "dep: unknown location (fr_department): …", 3, 2),
        ("publish", "line N: N fields, header has N", 1, 1),  # the object key prefix is dropped for grouping
    ]
    example = groups[0].examples[0]
    assert example == {
        "object": "s3://b/spf/vacsi/vacsi-dep.csv",
        "etag": "e1",
        "row": 1,
        "line": 2,
        "field": "dep",
        "reason": "dep: unknown location (fr_department): '20'",
        "excerpt": '{"dep": "20"}',
        "at": "2026-11-30T10:00:00+00:00",
    }
    table = format_groups(groups, 4)
    assert table.splitlines()[0] == "4 dead letter(s) in 2 group(s)"
    assert "e.g. s3://b/spf/vacsi/vacsi-dep.csv (etag e1) row 1 line 2: dep: unknown location" in table
    assert format_groups([], 0) == "no dead letters match\n"


def test_field_is_named_only_for_a_normalise_reason_that_starts_with_one() -> None:
    assert field_of(letter(1, "jour: not a date: 'x'")) == "jour"
    assert field_of(letter(1, "normaliser error: boom")) is None
    assert field_of(letter(1, "k: line 2: bad", stage="publish")) is None
    assert reason_group("value: not a number: '1,5' at 12") == "value: not a number: … at N"


def test_select_filters_and_counts_a_letter_written_twice_once() -> None:
    a = letter(1, "dep: unknown location: '20'")
    again = {**a, "at": "2026-11-30T12:00:00+00:00"}  # the stream dead-lettered the replayed row again
    b = letter(2, "jour: not a date: 'x'", source="spf_other", at="2026-11-01T00:00:00+00:00")
    assert letter_id(a) == letter_id(again) != letter_id(b)
    assert len(select([a, again, b])) == 2
    assert [x["record_index"] for x in select([a, again, b], source="spf_other")] == [2]
    assert [x["record_index"] for x in select([a, b], reason="UNKNOWN location")] == [1]
    assert [x["record_index"] for x in select([a, b], stage="publish")] == []
    since = parse_since("2026-11-15")
    assert [x["record_index"] for x in select([a, b], since=since)] == [1]


def test_since_takes_an_iso_time_or_an_age() -> None:
    now = datetime(2026, 11, 30, 12, tzinfo=UTC)
    assert parse_since("6h", now) == now - timedelta(hours=6)
    assert parse_since("2d", now) == now - timedelta(days=2)
    assert parse_since("2026-11-30T10:00:00Z") == datetime(2026, 11, 30, 10, tzinfo=UTC)
    assert parse_since(None) is None
    with pytest.raises(ValueError, match="an age like 30m"):
        parse_since("yesterday")


class FakeS3:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}

    def get_paginator(self, name: str) -> FakeS3:
        return self

    def paginate(self, Bucket: str, Prefix: str) -> list[dict]:
        return [{"Contents": [{"Key": k} for b, k in self.objects if b == Bucket and k.startswith(Prefix)]}]

    def get_object(self, Bucket: str, Key: str) -> dict:
        if (Bucket, Key) not in self.objects:
            raise KeyError(Key)
        body = self.objects[(Bucket, Key)]
        return {"Body": type("B", (), {"read": lambda self: body})()}

    def put_object(self, Bucket: str, Key: str, Body: bytes, ContentType: str = "") -> None:
        self.objects[(Bucket, Key)] = Body


class FakeProducer:
    def __init__(self, sent: list) -> None:
        self.sent = sent

    def init_transactions(self, timeout: float) -> None: ...
    def begin_transaction(self) -> None: ...
    def commit_transaction(self, timeout: float) -> None: ...
    def abort_transaction(self, timeout: float) -> None: ...
    def poll(self, timeout: float) -> None: ...
    def flush(self, timeout: float) -> int:
        return 0

    def produce(self, topic: str, value: bytes, key: bytes, headers: list, on_delivery: Any) -> None:
        self.sent.append((topic, json.loads(value), key))
        on_delivery(None, None)


def test_replay_sends_each_letter_once_per_spec_version_and_skips_publish_stage_letters() -> None:
    from covidflow.land.manifest import marker_key
    from covidflow.land.objects import LandedObject

    s3 = FakeS3()
    obj = LandedObject("b", "spf/vacsi/vacsi-dep.csv", "e1", 1, "2026-11-30T09:00:00+00:00")
    marker = {"object": obj.to_dict(), "summary": {"vintage": "2026-11-30T09:00:00+00:00"}}
    s3.objects[("b", marker_key("_manifest/", "spf_vacsi", obj))] = json.dumps(marker).encode()
    letters = [letter(1, "dep: unknown location: '20'"), letter(2, "dep: unknown location: '2C'")]
    letters.append(letter(3, "spf/vacsi/vacsi-dep.csv: line 4: bad", stage="publish", fields={}))
    sent: list = []

    def run() -> Any:
        return replay(
            letters, s3=s3, producer_factory=lambda _txn: FakeProducer(sent), ledger_bucket="b",
            manifest_prefix="_manifest/",
        )  # fmt: skip

    first = run()
    assert (first.selected, first.sent, first.already_replayed) == (3, 2, 0)
    assert first.not_replayable == {"publish-stage (re-publish the object)": 1}
    assert first.rerun_hints == {"covidflow ingest rerun spf_vacsi --key spf/vacsi/vacsi-dep.csv"}
    assert [(t, v["record_index"], v["vintage"], k) for t, v, k in sent] == [
        ("covid.raw.v1", 1, "2026-11-30T09:00:00+00:00", b"spf_vacsi|20|2021-01-01"),
        ("covid.raw.v1", 2, "2026-11-30T09:00:00+00:00", b"spf_vacsi|20|2021-01-01"),
    ]
    assert sent[0][1]["landed_at"] == "2026-11-30T09:00:00+00:00" and sent[0][1]["fields"]["dep"] == "20"
    second = run()
    assert (second.sent, second.already_replayed) == (0, 2) and len(sent) == 2
    assert "0 sent to covid.raw.v1, 2 already replayed" in second.line()
