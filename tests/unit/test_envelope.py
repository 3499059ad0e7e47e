"""The Kafka envelope: JSON round trip, headers carrying the provenance, message keys."""

from __future__ import annotations

import json

import pytest

from covidflow.publish.envelope import DeadLetter, ObjectRef, RawEnvelope, message_key

REF = ObjectRef("landing", "spf/vacsi/vacsi-dep.csv", "abc", None, 48465)


def envelope(**kw) -> RawEnvelope:
    base = dict(
        source_id="spf_vacsi",
        schema_version="0123456789ab",
        object=REF,
        vintage="2024-05-01",
        record_index=7,
        fields={"dep": "01", "n": "é"},
        line=8,
        published_at="2024-05-02T00:00:00+00:00",
        landed_at="2024-05-01T10:00:00+00:00",
    )
    return RawEnvelope(**{**base, **kw})


def test_json_round_trip_is_exact_and_utf8() -> None:
    env = envelope()
    payload = env.to_json()
    assert "é".encode() in payload
    assert RawEnvelope.from_json(payload) == env
    assert json.loads(payload)["object"] == {
        "bucket": "landing",
        "key": "spf/vacsi/vacsi-dep.csv",
        "etag": "abc",
        "version_id": None,
        "size": 48465,
    }


def test_unknown_envelope_version_is_refused() -> None:
    data = json.loads(envelope().to_json())
    data["envelope_version"] = 99
    with pytest.raises(ValueError, match="unsupported envelope_version 99"):
        RawEnvelope.from_json(json.dumps(data))


def test_headers_carry_the_provenance() -> None:
    assert envelope().headers() == [
        ("source_id", b"spf_vacsi"),
        ("object_key", b"spf/vacsi/vacsi-dep.csv"),
        ("etag", b"abc"),
        ("record_index", b"7"),
        ("schema_version", b"0123456789ab"),
        ("vintage", b"2024-05-01"),
        ("landed_at", b"2024-05-01T10:00:00+00:00"),
        ("envelope_version", b"1"),
    ]
    versioned = envelope(object=ObjectRef("landing", "k", "abc", "v42", 1))
    assert versioned.headers()[0] == ("version_id", b"v42")


def test_dead_letter_headers_and_json() -> None:
    letter = DeadLetter("publish", "spf_vacsi", "k line 6: 6 fields, expected 4", REF, 5, 6, "01;2", at="t")
    assert dict(letter.headers())["reason"] == b"k line 6: 6 fields, expected 4"
    assert dict(letter.headers())["stage"] == b"publish"
    assert json.loads(letter.to_json())["line"] == 6


def test_message_key() -> None:
    assert message_key("spf_vacsi", "01", "2021-01-06") == b"spf_vacsi|01|2021-01-06"
    assert message_key("jhu", "France") == b"jhu|France|"
