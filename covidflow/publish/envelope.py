"""The Kafka envelope of a raw record: what the publisher read, and exactly where it came from.

The envelope is JSON (readable in any Kafka tool, and by Spark's ``from_json``). Its provenance lets
every canonical record, and every dead letter, be traced back to one row of one version of one object.
The message key keeps all records of one place of one source in one partition, so their order holds.

``EnvelopeEncoder`` writes the same bytes as ``RawEnvelope.to_json`` at producer speed: the parts that are
constant for an object are serialised once, and a raw batch's envelopes are assembled column-wise by Arrow.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

ENVELOPE_VERSION = 1
RAW_TOPIC = "covid.raw.v1"
DEADLETTER_TOPIC = "covid.deadletter.v1"


@dataclass(frozen=True)
class ObjectRef:
    """One version of one landed object: a corrected file has a new etag, hence a new vintage."""

    bucket: str
    key: str
    etag: str
    version_id: str | None = None
    size: int | None = None


@dataclass(frozen=True)
class RawEnvelope:
    source_id: str
    schema_version: str
    object: ObjectRef
    vintage: str  # ISO date (or datetime) the publisher released this version
    record_index: int  # 1-based, as RawRecord.index
    fields: dict[str, Any]
    line: int | None = None
    published_at: str = ""  # ISO datetime the record was put on Kafka
    envelope_version: int = ENVELOPE_VERSION
    landed_at: str = ""  # ISO datetime the object landed (S3 LastModified): the normaliser's Provenance.landed_at

    def to_json(self) -> bytes:
        # Built by hand rather than with asdict(): asdict deep-copies every field, a third of the publish cost.
        obj = self.object
        data = {
            "source_id": self.source_id,
            "schema_version": self.schema_version,
            "object": {
                "bucket": obj.bucket,
                "key": obj.key,
                "etag": obj.etag,
                "version_id": obj.version_id,
                "size": obj.size,
            },
            "vintage": self.vintage,
            "record_index": self.record_index,
            "fields": self.fields,
            "line": self.line,
            "published_at": self.published_at,
            "envelope_version": self.envelope_version,
            "landed_at": self.landed_at,
        }
        return json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str).encode("utf-8")

    @classmethod
    def from_json(cls, payload: bytes | str) -> RawEnvelope:
        data = json.loads(payload)
        if data.get("envelope_version") != ENVELOPE_VERSION:
            raise ValueError(f"unsupported envelope_version {data.get('envelope_version')!r}")
        return cls(**{**data, "object": ObjectRef(**data["object"])})

    def headers(self) -> list[tuple[str, bytes]]:
        """Kafka headers naming the object version and the envelope format, so tools can filter and dispatch
        without parsing the value; the same for every record of an object (the rest of the provenance is in the
        value: per-record headers were the largest cost left in publishing, ADR 0005)."""
        return object_headers(self.source_id, self.object)


def object_headers(source_id: str, obj: ObjectRef) -> list[tuple[str, bytes]]:
    """The raw-record headers of one object version: ``version_id`` (versioned buckets), ``source_id``,
    ``object_key``, ``etag``, ``envelope_version``."""
    version = [("version_id", obj.version_id.encode())] if obj.version_id else []
    return [
        *version,
        ("source_id", source_id.encode()),
        ("object_key", obj.key.encode()),
        ("etag", obj.etag.encode()),
        ("envelope_version", str(ENVELOPE_VERSION).encode()),
    ]


@dataclass(frozen=True)
class DeadLetter:
    """A record that could not be decoded (publish stage) or normalised (normalise stage), with why."""

    stage: str  # "publish" | "normalise"
    source_id: str
    reason: str
    object: ObjectRef
    record_index: int | None = None
    line: int | None = None
    excerpt: str = ""
    fields: dict[str, Any] = field(default_factory=dict)
    at: str = ""
    envelope_version: int = ENVELOPE_VERSION

    def headers(self) -> list[tuple[str, bytes]]:
        """Provenance headers, as on raw records, plus the stage and the reason."""
        return [
            ("stage", self.stage.encode()),
            ("source_id", self.source_id.encode()),
            ("object_key", self.object.key.encode()),
            ("etag", self.object.etag.encode()),
            ("record_index", b"" if self.record_index is None else str(self.record_index).encode()),
            ("reason", self.reason.encode()[:1000]),
            ("envelope_version", str(self.envelope_version).encode()),
        ]

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), ensure_ascii=False, separators=(",", ":"), default=str).encode("utf-8")


def message_key(source_id: str, location: str, period: str = "") -> bytes:
    """``source|location|period``: stable across re-runs, so a replay lands on the same partition."""
    return "|".join((source_id, location, period)).encode("utf-8")


def _dumps(value: Any) -> str:
    """The JSON spelling RawEnvelope.to_json uses for every part, so pieces concatenate to the same bytes."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


_ROW, _LINE = "__row", "__line"  # covidflow.read.batch.ROW / LINE (not imported: the reader imports are heavy)


class EnvelopeEncoder:
    """Envelope v1 bytes and headers for the records of one object, constant parts serialised once.

    ``encode`` (one record) and ``encode_batch`` (a raw batch, see covidflow/read/batch.py) give exactly the bytes
    of ``RawEnvelope(...).to_json()``: the key order and JSON spelling are the same, so every consumer and
    ``RawEnvelope.from_json`` read them unchanged. Why: building a dataclass and a nested dict per record was
    most of the publish cost (ADR 0005).
    """

    def __init__(
        self,
        source_id: str,
        schema_version: str,
        obj: ObjectRef,
        vintage: str,
        published_at: str,
        landed_at: str,
    ) -> None:
        ref = {"bucket": obj.bucket, "key": obj.key, "etag": obj.etag, "version_id": obj.version_id, "size": obj.size}
        self.head = (
            f'{{"source_id":{_dumps(source_id)},"schema_version":{_dumps(schema_version)},"object":{_dumps(ref)},'
            f'"vintage":{_dumps(vintage)},"record_index":'
        )
        self.tail = (
            f',"published_at":{_dumps(published_at)},"envelope_version":{ENVELOPE_VERSION},'
            f'"landed_at":{_dumps(landed_at)}}}'
        )
        #: One list for every record of the object: librdkafka copies it on each produce.
        self.headers: list[tuple[str, bytes]] = object_headers(source_id, obj)

    def encode(self, record_index: int, fields: Mapping[str, Any], line: int | None) -> bytes:
        """One record's envelope (the per-record path: non-columnar chunks, tests)."""
        line_json = "null" if line is None else str(line)
        return f'{self.head}{record_index},"fields":{_dumps(fields)},"line":{line_json}{self.tail}'.encode()

    def encode_batch(self, batch: pa.RecordBatch, row_text: pa.Array | None = None) -> list[bytes]:
        """Every record's envelope of a raw batch, assembled column-wise (one Python object per record).

        ``row_text``: the ``__row`` column already cast to strings, when the caller has it.
        """
        import pyarrow as pa
        import pyarrow.compute as pc

        names = [n for n in batch.schema.names if n not in (_ROW, _LINE)]
        fields: list[Any] = ["{"] if not names else []
        for i, name in enumerate(names):
            text, quote = _json_parts(batch.column(name))
            fields += [f"{',' if i else '{'}{_dumps(name)}:{quote}", text, quote]
        parts = [
            self.head,
            pc.cast(batch.column(_ROW), pa.string()) if row_text is None else row_text,
            ',"fields":',
            *fields,
            '},"line":',
            _nulls_as_json(pc.cast(batch.column(_LINE), pa.string())),
            self.tail,
        ]
        joined = pc.binary_join_element_wise(*[_arg(p) for p in _merged(parts)], "")
        return joined.cast(pa.binary()).to_pylist()


def _arg(part: Any) -> Any:
    import pyarrow as pa

    return pa.scalar(part, pa.string()) if isinstance(part, str) else part


def _merged(parts: list[Any]) -> list[Any]:
    """Adjacent literal parts joined, so Arrow concatenates fewer arguments per record."""
    out: list[Any] = []
    for part in parts:
        if isinstance(part, str) and out and isinstance(out[-1], str):
            out[-1] += part
        else:
            out.append(part)
    return out


def json_column(column: pa.Array) -> pa.Array:
    """A column's values spelt as json.dumps spells them (ensure_ascii=False), as a string array."""
    import pyarrow.compute as pc

    text, quote = _json_parts(column)
    return pc.binary_join_element_wise(quote, text, quote, "") if quote else text


def _json_parts(column: pa.Array) -> tuple[pa.Array, str]:
    """(text, quote): the column's JSON spelling is ``quote + text + quote`` for every value.

    Strings without nulls are quoted by the caller's one join (``quote='"'``), escaped by Arrow first only when
    they hold ``"`` or ``\\``; integers are cast by Arrow; anything else (floats, whose shortest repr Arrow does
    not promise, control characters, nulls in strings, other types) goes through json.dumps value by value.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = column.type
    if pa.types.is_null(kind):
        return pa.array(["null"] * len(column), pa.string()), ""
    if pa.types.is_integer(kind):
        return _nulls_as_json(pc.cast(column, pa.string())), ""
    if pa.types.is_string(kind) and not column.null_count:
        special = _special_bytes(column)
        if not special:
            return column, '"'
        if special <= {34, 92}:  # only '"' and '\\'
            return pc.replace_substring(pc.replace_substring(column, "\\", "\\\\"), '"', '\\"'), '"'
    return pa.array([_dumps(v) for v in column.to_pylist()], pa.string()), ""


def _special_bytes(column: pa.Array) -> set[int]:
    """Which bytes json.dumps escapes (control characters, ``"``, ``\\``) occur in a string column's values.

    Scans the value bytes of the column's range with numpy: UTF-8 never uses these byte values inside a
    multi-byte character, so this is exact.
    """
    import numpy as np

    offsets_buffer, data = column.buffers()[1:3]
    if data is None or not len(column):
        return set()
    offsets = np.frombuffer(offsets_buffer, np.int32, len(column) + 1, column.offset * 4)
    raw = np.frombuffer(data, np.uint8)[offsets[0] : offsets[-1]]
    found = set(np.unique(raw[(raw < 32) | (raw == 34) | (raw == 92)]).tolist())
    return found


def _nulls_as_json(text: pa.Array) -> pa.Array:
    import pyarrow.compute as pc

    return pc.fill_null(text, "null") if text.null_count else text
