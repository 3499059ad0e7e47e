"""Publish local files as RawEnvelopes on covid.raw.v1: a stand-in for the ingest DAG in tests and benchmarks.

It reads with the same readers as the ingest path and builds the same envelopes, so the stream cannot
tell the difference; reader-level rejects (RawReject) are the publish stage's business and are counted,
not sent.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from covidflow import settings
from covidflow.catalog.specs import SourceSpec
from covidflow.publish.envelope import RAW_TOPIC, ObjectRef, RawEnvelope, message_key
from covidflow.read import open_records
from covidflow.read.base import RawReject


@dataclass
class Published:
    envelopes: int = 0
    reader_rejects: int = 0


def envelopes_for_file(
    spec: SourceSpec, path: Path, *, vintage: datetime, published_at: datetime | None = None, bucket: str = ""
) -> Iterator[RawEnvelope | RawReject]:
    """Envelopes of one local file as if it had landed under the spec's prefix (etag = md5 of the bytes)."""
    path = Path(path)
    key = posixpath.join(spec["landing"]["prefix"], path.name)
    data = path.read_bytes()
    ref = ObjectRef(bucket or settings.LANDING_BUCKET, key, hashlib.md5(data).hexdigest(), None, len(data))
    published = (published_at or vintage).isoformat()
    for raw in open_records(path, spec["format"], spec.get("reader") or {}):
        if isinstance(raw, RawReject):
            yield raw
            continue
        yield RawEnvelope(spec.id, "1", ref, vintage.isoformat(), raw.index, dict(raw.fields), raw.line, published)


def publish_file(
    producer: object,
    spec: SourceSpec,
    path: Path,
    *,
    vintage: datetime,
    topic: str = RAW_TOPIC,
    published_at: datetime | None = None,
) -> Published:
    """Produce every envelope of ``path`` and wait for all deliveries (raises if one failed).

    ``published_at`` (the records' ``ingested_at``) defaults to the vintage; a later one is a re-publish.
    """
    out = Published()
    errors: list[str] = []

    def on_delivery(err: object, _msg: object) -> None:
        if err is not None:
            errors.append(str(err))

    published = (published_at or vintage).astimezone(UTC)
    for env in envelopes_for_file(spec, path, vintage=vintage, published_at=published):
        if isinstance(env, RawReject):
            out.reader_rejects += 1
            continue
        key = message_key(env.source_id, env.object.key, str(env.record_index))
        while True:
            try:
                producer.produce(topic, env.to_json(), key=key, on_delivery=on_delivery)  # type: ignore[attr-defined]
                break
            except BufferError:
                producer.poll(0.5)  # type: ignore[attr-defined]
        out.envelopes += 1
    left = producer.flush(60)  # type: ignore[attr-defined]
    if left or errors:
        raise RuntimeError(f"publish of {path.name}: {left} undelivered, errors {errors[:3]}")
    return out
