"""The ingest manifest: which (key, etag) pairs of a source were published, kept as markers in S3.

A marker is ``<manifest prefix><source_id>/<url-quoted object key>/<etag>.json`` in the landing bucket, with a
JSON run summary as its body. One LIST of ``<manifest prefix><source_id>/`` gives every published pair, so
selection costs one request per 1000 objects, and the manifest lives and dies with the data it describes.
See docs/decisions/0006-ingest-manifest.md.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, unquote

from covidflow.land.objects import LandedObject


def marker_key(manifest_prefix: str, source_id: str, obj: LandedObject) -> str:
    """Where the marker of one published object version lives."""
    return f"{manifest_prefix}{source_id}/{quote(obj.key, safe='')}/{obj.etag}.json"


def parse_marker(manifest_prefix: str, source_id: str, key: str) -> tuple[str, str] | None:
    """(object key, etag) of a marker key, or None for anything else under the prefix."""
    head = f"{manifest_prefix}{source_id}/"
    if not key.startswith(head) or not key.endswith(".json"):
        return None
    rest = key[len(head) : -len(".json")]
    quoted, sep, etag = rest.rpartition("/")
    if not sep or not quoted or not etag:
        return None
    return unquote(quoted), etag


class S3Manifest:
    """Read and write the markers of one bucket through a boto3 S3 client (S3Hook.get_conn() in tasks)."""

    def __init__(self, client: Any, bucket: str, prefix: str) -> None:
        self.client, self.bucket, self.prefix = client, bucket, prefix

    def seen(self, source_id: str) -> set[tuple[str, str]]:
        pairs: set[tuple[str, str]] = set()
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=f"{self.prefix}{source_id}/"):
            for item in page.get("Contents", []):
                pair = parse_marker(self.prefix, source_id, item["Key"])
                if pair:
                    pairs.add(pair)
        return pairs

    def mark(self, source_id: str, obj: LandedObject, summary: dict[str, Any]) -> str:
        """Record that ``obj`` was published; called only after Kafka confirmed every record."""
        key = marker_key(self.prefix, source_id, obj)
        body = json.dumps({"object": obj.to_dict(), "summary": summary}, sort_keys=True, default=str)
        self.client.put_object(Bucket=self.bucket, Key=key, Body=body.encode(), ContentType="application/json")
        return key


def seen_from_keys(manifest_prefix: str, source_id: str, keys: Iterable[str]) -> set[tuple[str, str]]:
    """The published (key, etag) pairs named by a listing of marker keys: what ``S3Manifest.seen`` computes,
    for callers that list with another client (the triggerer's async one)."""
    pairs: set[tuple[str, str]] = set()
    for key in keys:
        pair = parse_marker(manifest_prefix, source_id, key)
        if pair:
            pairs.add(pair)
    return pairs
