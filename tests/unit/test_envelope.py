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


def test_headers_name_the_object_version_and_the_format() -> None:
    """Constant per object (the rest of the provenance is in the value; ADR 0005 says why)."""
    assert envelope().headers() == [
        ("source_id", b"spf_vacsi"),
        ("object_key", b"spf/vacsi/vacsi-dep.csv"),
        ("etag", b"abc"),
        ("envelope_version", b"1"),
    ]
    assert envelope(record_index=8).headers() == envelope().headers()
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


ODD_TEXT = ["", "plain", 'q"uote', "back\\slash", "é ü 中", "tab\tnl\n", "\x00\x1f", "\u2028", None]


@pytest.mark.parametrize("version_id", [None, "v42"])
def test_the_encoder_writes_the_bytes_of_to_json(version_id: str | None) -> None:
    """Per record and per raw batch, the encoder's bytes and headers are RawEnvelope's, for every value kind."""
    from covidflow.publish.envelope import EnvelopeEncoder
    from covidflow.read.base import RawRecord
    from covidflow.read.batch import records_to_batch

    ref = ObjectRef("landing", 'spf/"odd" é.csv', "abc", version_id, 48465)
    encoder = EnvelopeEncoder("spf_vacsi", "0123456789ab", ref, "2024-05-01", "2024-05-02T00:00:00+00:00", "t0")
    records = [
        RawRecord(i + 1, {"txt": text, "i": i * 10**15 - 7, "f": [0.1, 1e16, 1e-7, 2.5][i % 4], "n": None}, i or None)
        for i, text in enumerate(ODD_TEXT)
    ]
    batches = [records_to_batch(records), records_to_batch([RawRecord(1, {"a": "x"}, 2)])]
    assert all(b is not None for b in batches)
    assert batches[0].schema.field("txt").type == "string" and batches[0].schema.field("f").type == "double"
    for batch in batches:
        expected = [
            RawEnvelope("spf_vacsi", "0123456789ab", ref, "2024-05-01", r.index, r.fields, r.line,
                        "2024-05-02T00:00:00+00:00", landed_at="t0")
            for r in batch_records(batch)
        ]  # fmt: skip
        assert encoder.encode_batch(batch) == [e.to_json() for e in expected]
        assert [encoder.encode(e.record_index, e.fields, e.line) for e in expected] == [e.to_json() for e in expected]
        assert all(encoder.headers == e.headers() for e in expected)
    assert RawEnvelope.from_json(encoder.encode_batch(batches[0])[4]).fields["txt"] == "é ü 中"
    whole = encoder.encode_batch(batches[0])
    assert encoder.encode_batch(batches[0].slice(2, 4)) == whole[2:6]  # slices (produced 16,384 rows at a time)


def batch_records(batch):
    from covidflow.read.batch import batch_to_records

    return batch_to_records(batch)


def test_json_column_falls_back_to_json_dumps_exactly() -> None:
    import pyarrow as pa

    from covidflow.publish.envelope import json_column

    values = [1e15, 1e16, 0.1, float("nan"), float("inf"), -0.0, None]
    assert json_column(pa.array(values, pa.float64())).to_pylist() == [json.dumps(v) for v in values[:-1]] + ["null"]
    assert json_column(pa.array([True, None])).to_pylist() == ["true", "null"]
    assert json_column(pa.nulls(2)).to_pylist() == ["null", "null"]
    assert json_column(pa.array(['a"b\\c', "ok"])).to_pylist() == ['"a\\"b\\\\c"', '"ok"']
