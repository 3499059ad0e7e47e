"""The Kafka envelope of a raw record: what the publisher read, and exactly where it came from.

The envelope is JSON (readable in any Kafka tool, and by Spark's ``from_json``). Its provenance lets
every canonical record, and every dead letter, be traced back to one row of one version of one object.
The message key keeps all records of one place of one source in one partition, so their order holds.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

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
        """Kafka headers duplicating the provenance, so tools can filter without parsing the value."""
        version = [("version_id", self.object.version_id.encode())] if self.object.version_id else []
        return [
            *version,
            ("source_id", self.source_id.encode()),
            ("object_key", self.object.key.encode()),
            ("etag", self.object.etag.encode()),
            ("record_index", str(self.record_index).encode()),
            ("schema_version", self.schema_version.encode()),
            ("vintage", self.vintage.encode()),
            ("landed_at", self.landed_at.encode()),
            ("envelope_version", str(self.envelope_version).encode()),
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
