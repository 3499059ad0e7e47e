"""Landed objects and the choice of which ones to publish: pure functions, so they are unit-tested without S3.

A source's objects are those under its ``landing.prefix`` whose name (relative to the prefix) matches one of
its ``landing.patterns``. An object is new when its (key, etag) pair is not in the manifest: re-uploading an
identical file keeps its etag (nothing to do), a corrected file gets a new etag (a new vintage to publish).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from covidflow.land.keys import UnsafeObjectKey, check_object_key


@dataclass(frozen=True)
class LandedObject:
    """One version of one object in the landing bucket, as S3 lists it (etag without quotes)."""

    bucket: str
    key: str
    etag: str
    size: int
    last_modified: str  # ISO 8601, UTC: the object's landed_at
    version_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LandedObject:
        return cls(**data)

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def clean_etag(etag: str) -> str:
    """S3 returns ETags in double quotes; the manifest and the envelope keep the bare value."""
    return etag.strip().strip('"')


def from_listing(bucket: str, item: Mapping[str, Any]) -> LandedObject:
    """A ``list_objects_v2`` Contents entry -> LandedObject."""
    modified = item["LastModified"]
    if isinstance(modified, datetime):
        modified = (modified if modified.tzinfo else modified.replace(tzinfo=UTC)).astimezone(UTC).isoformat()
    return LandedObject(
        bucket=bucket,
        key=item["Key"],
        etag=clean_etag(item["ETag"]),
        size=int(item.get("Size", 0)),
        last_modified=str(modified),
        version_id=item.get("VersionId"),
    )


def matches(key: str, prefix: str, patterns: Iterable[str]) -> bool:
    """Is ``key`` one of the source's files: a safe key directly under the prefix, matching a pattern."""
    try:
        name = check_object_key(key, prefix)
    except UnsafeObjectKey:
        return False
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def unsafe_keys(objects: Iterable[LandedObject], prefix: str) -> list[str]:
    """Why each listed key under the prefix is refused (traversal, control characters...), for the task log.

    ``matches`` already skips these; listing them keeps a hostile or mistyped upload from vanishing silently.
    """
    reasons = []
    for obj in objects:
        try:
            check_object_key(obj.key, prefix)
        except UnsafeObjectKey as exc:
            if obj.key.startswith(prefix):
                reasons.append(str(exc))
    return reasons


def select_new(
    objects: Iterable[LandedObject], seen: set[tuple[str, str]], prefix: str, patterns: Iterable[str]
) -> list[LandedObject]:
    """The source's objects whose (key, etag) is not in ``seen``, oldest first (so vintages arrive in order)."""
    patterns = list(patterns)
    new = [o for o in objects if matches(o.key, prefix, patterns) and (o.key, o.etag) not in seen]
    return sorted(new, key=lambda o: (o.last_modified, o.key))


def object_vintage(spec: Mapping[str, Any], obj: LandedObject) -> str:
    """The vintage of a whole object under the spec's rule, as ISO text.

    ``file_name``: the date (and hour/minute) in the object name; ``landed_at`` and the fallback: the object's
    LastModified. ``column`` vintages are per row: the envelope then carries landed_at and the normaliser
    reads the column. The file-name rule itself is the core's ``name_vintage``.
    """
    from covidflow.normalise.core import name_vintage

    rule = spec.get("vintage") or {"from": "landed_at"}
    if rule.get("from") == "file_name":
        try:
            named = name_vintage(rule, obj.key)
        except ValueError:  # the name matches but its date does not parse: fall back to the landing time
            named = None
        if named:
            day, hm = named
            return day.isoformat() if hm is None else datetime.combine(day, hm, tzinfo=UTC).isoformat()
    return obj.last_modified


class RerunRequestError(ValueError):
    """A re-run request that names nothing of the source (unknown key, a prefix outside the landing prefix)."""


def select_rerun(
    objects: Iterable[LandedObject],
    prefix: str,
    patterns: Iterable[str],
    *,
    key: str | None = None,
    key_prefix: str | None = None,
) -> list[LandedObject]:
    """The source's objects to publish again whatever the manifest says: one ``key``, every key under
    ``key_prefix``, or (neither given) all of them; oldest first, like ``select_new``.

    A request that selects nothing is an error, not an empty run: a typo in the UI must not look like success.
    """
    patterns = list(patterns)
    mine = [o for o in objects if matches(o.key, prefix, patterns)]
    if key:
        chosen = [o for o in mine if o.key == key]
        if not chosen:
            raise RerunRequestError(f"{key!r} is not an object of this source (under {prefix!r}, matching {patterns})")
    elif key_prefix:
        if not (key_prefix.startswith(prefix) or prefix.startswith(key_prefix)):
            raise RerunRequestError(f"prefix {key_prefix!r} is outside the source's landing prefix {prefix!r}")
        chosen = [o for o in mine if o.key.startswith(key_prefix)]
        if not chosen:
            raise RerunRequestError(f"no object of this source under {key_prefix!r} (matching {patterns})")
    else:
        chosen = mine
    return sorted(chosen, key=lambda o: (o.last_modified, o.key))
