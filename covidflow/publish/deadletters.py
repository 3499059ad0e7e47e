"""Dead letters: list them by source and reason, and replay the ones a fix can now normalise.

A dead letter (``covidflow.publish.envelope.DeadLetter`` on ``covid.deadletter.v1``) is written by the publisher
(``stage: publish``: a row the reader could not decode) or by the stream (``stage: normalise``: a decoded row the
spec could not map, with its raw ``fields``). Only the second kind can be re-sent: its raw fields go back to
``covid.raw.v1`` in a fresh envelope, read with the spec as it is now. A publish-stage letter names the object
to re-publish instead (``covidflow ingest rerun SOURCE --key KEY``).

Idempotence (ADR 0017): each letter has a deterministic id (source, object key, etag, row, reason: the stream's
``dead_letter_key``); a replay records the ids it sent, per source and spec version, in the landing bucket
(``_deadletters/replayed/<source>/<spec version>/<replay>.json``, written after the Kafka transaction commits).
A second replay with the same spec sends nothing; after another spec fix (a new version) the letters that failed
again can be replayed again. Should the record be lost after a commit, the re-sent rows carry the same source,
place, date, metric and vintage, hence the same record ids: the stores overwrite, nothing is added.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from covidflow.publish.envelope import DEADLETTER_TOPIC, RAW_TOPIC

LEDGER_PREFIX = "_deadletters/replayed/"

_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_NUMBER = re.compile(r"\b\d+(\.\d+)?\b")
_RELATIVE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def letter_id(letter: Mapping[str, Any]) -> str:
    """Deterministic id of a dead letter: the stream's ``dead_letter_key`` parts, hashed."""
    obj = letter.get("object") or {}
    parts = (
        letter.get("source_id", ""),
        obj.get("key", ""),
        obj.get("etag", ""),
        str(letter.get("record_index")),
        letter.get("reason", ""),
    )
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


def reason_group(reason: str) -> str:
    """A reason with its values taken out ('x', 12, 2021-01-10 -> …), so letters group by what went wrong."""
    return _NUMBER.sub("N", _QUOTED.sub("…", reason)).strip()


def field_of(letter: Mapping[str, Any]) -> str | None:
    """The field a normalise-stage reason names (``<field>: <why>``); None for a whole row (publish stage)."""
    if letter.get("stage") != "normalise":
        return None
    head, sep, _ = str(letter.get("reason", "")).partition(":")
    return head.strip() if sep and " " not in head.strip() else None


def parse_since(text: str | None, now: datetime | None = None) -> datetime | None:
    """``--since``: an ISO date or time (naive = UTC), or an age such as ``30m``, ``6h``, ``2d``, ``1w``."""
    if not text:
        return None
    now = now or datetime.now(UTC)
    match = _RELATIVE.match(text.strip())
    if match:
        return now - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"--since {text!r}: give an ISO date/time or an age like 30m, 6h, 2d") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def letter_time(letter: Mapping[str, Any]) -> datetime | None:
    at = letter.get("at") or letter.get("_timestamp")
    if not at:
        return None
    try:
        value = datetime.fromisoformat(str(at).replace("Z", "+00:00"))
    except ValueError:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def select(
    letters: Iterable[Mapping[str, Any]],
    source: str | None = None,
    reason: str | None = None,
    since: datetime | None = None,
    stage: str | None = None,
) -> list[dict[str, Any]]:
    """The letters matching every filter (reason: case-insensitive substring), one per letter id (a letter the
    stream wrote again after a replay that did not fix it counts once; the newest copy is kept)."""
    out: dict[str, dict[str, Any]] = {}
    needle = reason.lower() if reason else None
    for letter in letters:
        if source and letter.get("source_id") != source:
            continue
        if stage and letter.get("stage") != stage:
            continue
        if needle and needle not in str(letter.get("reason", "")).lower():
            continue
        if since:
            at = letter_time(letter)
            if at is None or at < since:
                continue
        out[letter_id(letter)] = dict(letter)
    return list(out.values())


@dataclass
class Group:
    source_id: str
    stage: str
    reason: str
    count: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)


def summarise(letters: Iterable[Mapping[str, Any]], examples: int = 3) -> list[Group]:
    """Counts by source, stage and reason group (largest first), with up to ``examples`` letters each."""
    groups: dict[tuple[str, str, str], Group] = {}
    for letter in letters:
        reason = str(letter.get("reason", ""))
        object_key = (letter.get("object") or {}).get("key") or ""
        if object_key and reason.startswith(object_key + ": "):  # publish-stage reasons start with the key
            reason = reason[len(object_key) + 2 :]
        key = (letter.get("source_id", ""), letter.get("stage", ""), reason_group(reason))
        group = groups.setdefault(key, Group(*key))
        group.count += 1
        if len(group.examples) < examples:
            group.examples.append(example(letter))
    return sorted(groups.values(), key=lambda g: (-g.count, g.source_id, g.reason))


def example(letter: Mapping[str, Any]) -> dict[str, Any]:
    """What on-call needs to find the row: object (bucket, key, etag), row, line, field, reason, excerpt."""
    obj = letter.get("object") or {}
    return {
        "object": f"s3://{obj.get('bucket', '')}/{obj.get('key', '')}",
        "etag": obj.get("etag", ""),
        "row": letter.get("record_index"),
        "line": letter.get("line"),
        "field": field_of(letter),
        "reason": letter.get("reason", ""),
        "excerpt": letter.get("excerpt", ""),
        "at": letter.get("at", ""),
    }


def format_groups(groups: list[Group], total: int) -> str:
    """The ``deadletters list`` table: one line per group, its examples indented under it."""
    if not groups:
        return "no dead letters match\n"
    lines = [f"{total} dead letter(s) in {len(groups)} group(s)", f"{'count':>7}  {'source':<34} {'stage':<9} reason"]
    for g in groups:
        lines.append(f"{g.count:>7}  {g.source_id:<34} {g.stage:<9} {g.reason}")
        for e in g.examples:
            row = "-" if e["row"] is None else e["row"]
            where = f"{e['object']} (etag {e['etag']}) row {row}" + (f" line {e['line']}" if e["line"] else "")
            lines.append(f"           e.g. {where}: {e['reason']}")
            if e["excerpt"]:
                lines.append(f"                {e['excerpt'][:160]}")
    return "\n".join(lines) + "\n"


# -- Kafka and S3 ---------------------------------------------------------------------------------------------


def read_letters(
    bootstrap: str | None = None, topic: str = DEADLETTER_TOPIC, timeout: float = 60.0
) -> list[dict[str, Any]]:
    """Every committed dead letter on the topic (from the start of its retention to the end offsets now), read with
    the covidflow_kafka connection's client (``bootstrap`` overrides its address only)."""
    from covidflow.publish.topics import read_to_end

    letters: list[dict[str, Any]] = []
    for msg in read_to_end(bootstrap, topic, timeout=timeout):
        try:
            letter = json.loads(msg.value())
        except (TypeError, ValueError):
            continue
        _, millis = msg.timestamp()
        letter["_timestamp"] = datetime.fromtimestamp(millis / 1000, UTC).isoformat() if millis else ""
        letters.append(letter)
    return letters


@dataclass
class ReplayResult:
    selected: int = 0
    sent: int = 0
    would_send: int = 0  # dry run
    already_replayed: int = 0
    not_replayable: dict[str, int] = field(default_factory=dict)  # reason -> count
    ledger: list[str] = field(default_factory=list)
    rerun_hints: set[str] = field(default_factory=set)

    def line(self) -> str:
        skipped = ", ".join(f"{n} {why}" for why, n in sorted(self.not_replayable.items())) or "none"
        sent = f"{self.would_send} would be sent" if self.would_send else f"{self.sent} sent"
        return (
            f"{self.selected} selected, {sent} to {RAW_TOPIC}, {self.already_replayed} already replayed "
            f"with this spec version, not replayable: {skipped}"
        )


def ledger_seen(s3: Any, bucket: str, source_id: str, spec_version: str) -> set[str]:
    """Letter ids already replayed for this source and spec version."""
    seen: set[str] = set()
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=f"{LEDGER_PREFIX}{source_id}/{spec_version}/"):
        for item in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            seen.update(json.loads(body)["letters"])
    return seen


def _marker(s3: Any, manifest_prefix: str, source_id: str, obj: Mapping[str, Any]) -> dict[str, Any] | None:
    """The manifest marker of the letter's object version (its vintage and landing time), or None."""
    from covidflow.land.manifest import marker_key
    from covidflow.land.objects import LandedObject

    ref = LandedObject(obj.get("bucket", ""), obj.get("key", ""), obj.get("etag", ""), 0, "")
    try:
        body = s3.get_object(Bucket=ref.bucket, Key=marker_key(manifest_prefix, source_id, ref))["Body"].read()
    except Exception:
        return None
    return json.loads(body)


def replay(
    letters: list[dict[str, Any]],
    *,
    s3: Any,
    producer_factory: Any,
    ledger_bucket: str,
    manifest_prefix: str,
    dry_run: bool = False,
) -> ReplayResult:
    """Re-send the normalise-stage letters not yet replayed under the current spec, one Kafka transaction per
    source; then record their ids. ``producer_factory(transactional_id)`` gives a confluent-kafka Producer."""
    from covidflow.catalog.specs import SpecError, find_spec
    from covidflow.publish.envelope import ObjectRef, RawEnvelope
    from covidflow.publish.kafka import KeyBuilder, schema_version

    result = ReplayResult(selected=len(letters))
    by_source: dict[str, list[dict[str, Any]]] = defaultdict(list)
    skipped: Counter[str] = Counter()
    for letter in letters:
        if letter.get("stage") != "normalise" or not letter.get("fields"):
            skipped["publish-stage (re-publish the object)"] += 1
            obj = letter.get("object") or {}
            result.rerun_hints.add(f"covidflow ingest rerun {letter.get('source_id')} --key {obj.get('key')}")
            continue
        by_source[letter["source_id"]].append(letter)
    now = datetime.now(UTC).isoformat()
    for source_id, items in sorted(by_source.items()):
        try:
            spec = find_spec(source_id)
        except (KeyError, SpecError, FileNotFoundError):
            skipped["no spec for the source"] += len(items)
            continue
        version = schema_version(spec.path.read_bytes())
        done = ledger_seen(s3, ledger_bucket, source_id, version)
        todo = [item for item in items if letter_id(item) not in done]
        result.already_replayed += len(items) - len(todo)
        envelopes: list[tuple[str, RawEnvelope]] = []
        markers: dict[tuple[str, str, str], dict[str, Any] | None] = {}
        for item in todo:
            obj = item["object"]
            ident = (obj.get("bucket", ""), obj.get("key", ""), obj.get("etag", ""))
            if ident not in markers:
                markers[ident] = _marker(s3, manifest_prefix, source_id, obj)
            marker = markers[ident]
            if marker is None:
                skipped["object not in the manifest (vintage unknown)"] += 1
                continue
            ref = ObjectRef(**{k: obj.get(k) for k in ("bucket", "key", "etag", "version_id", "size")})
            env = RawEnvelope(
                source_id=source_id,
                schema_version=version,
                object=ref,
                vintage=str(marker["summary"]["vintage"]),
                record_index=int(item["record_index"]),
                fields=item["fields"],
                line=item.get("line"),
                published_at=now,
                landed_at=str(marker["object"].get("last_modified", "")),
            )
            envelopes.append((letter_id(item), env))
        if dry_run:
            result.would_send += len(envelopes)
            continue
        if not envelopes:
            continue
        key_of = KeyBuilder(source_id, spec.data)
        txn = f"covidflow-deadletter-replay-{source_id}"
        producer = producer_factory(txn)
        producer.init_transactions(30)
        producer.begin_transaction()
        errors: list[str] = []

        def delivered(err: Any, msg: Any, errors: list[str] = errors) -> None:
            if err is not None:
                errors.append(str(err))

        try:
            for _, env in envelopes:
                producer.produce(
                    RAW_TOPIC, env.to_json(), key=key_of(env.fields), headers=env.headers(), on_delivery=delivered
                )
                producer.poll(0)
            producer.flush(60)
            if errors:
                raise RuntimeError(f"{len(errors)} replayed record(s) not acknowledged: {errors[:3]}")
            producer.commit_transaction(60)
        except Exception:
            producer.abort_transaction(30)
            raise
        key = f"{LEDGER_PREFIX}{source_id}/{version}/{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}.json"
        body = {"at": now, "source_id": source_id, "spec_version": version, "letters": [i for i, _ in envelopes]}
        s3.put_object(Bucket=ledger_bucket, Key=key, Body=json.dumps(body).encode(), ContentType="application/json")
        result.sent += len(envelopes)
        result.ledger.append(f"s3://{ledger_bucket}/{key}")
    result.not_replayable = dict(skipped)
    return result
