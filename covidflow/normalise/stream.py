"""Pure transformation steps of the streaming job: Kafka value bytes -> canonical records + dead letters.

No Spark, Kafka, Cassandra or Elasticsearch here: the Spark job calls these functions once per partition
(``process_messages``) and hands the output to the store writers, and unit tests call them directly. The
mapping itself is the shared columnar core (``BatchNormaliser``): envelopes are grouped by object into Arrow raw
batches, and the canonical records come back as one Arrow table, checked against the canonical schema. The store
writers shape rows and documents themselves (``covidflow/store/cassandra_writer.py``, ``covidflow/index/es_writer.py``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from covidflow.catalog.schema import ObservationSchema, load_schema, parse_instant, record_id
from covidflow.normalise.core import Provenance, Reject
from covidflow.publish.envelope import DeadLetter, ObjectRef, RawEnvelope
from covidflow.read.base import RawRecord

STAGE = "normalise"
EXCERPT_CHARS = 200
_UNKNOWN_OBJECT = ObjectRef(bucket="", key="", etag="")

#: Python types a canonical value may have, per logical type of observation.yaml (None handled separately).
_PY_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "text": (str,),
    "int": (int,),
    "long": (int,),
    "double": (float, int),
    "date": (date,),
    "timestamp": (datetime,),
    "geo_point": (dict,),
}


def provenance_of(env: RawEnvelope, *, now: datetime | None = None) -> Provenance:
    """Adapter envelope -> core Provenance.

    ``landed_at`` is the object's S3 LastModified (the core's vintage fallback); envelopes written without it
    (replays of old captures) fall back to the publisher's ``vintage``. ``published_at`` is when covidflow read
    the object.
    """
    landed = parse_instant(env.landed_at) or parse_instant(env.vintage)
    ingested = parse_instant(env.published_at) or landed or now or datetime.now(UTC)
    return Provenance(
        object_key=env.object.key,
        landed_at=landed or ingested,
        ingested_at=ingested,
        object_version=env.object.version_id or env.object.etag or None,
    )


def validate_record(record: dict[str, Any], schema: ObservationSchema | None = None) -> list[str]:
    """Problems of one canonical record against observation.yaml (missing/extra fields, nulls, types, id)."""
    schema = schema or load_schema()
    problems = []
    names = set(schema.field_names)
    extra = sorted(set(record) - names)
    if extra:
        problems.append(f"unknown fields {extra}")
    for f in schema.fields:
        if f.name not in record:
            problems.append(f"missing field {f.name}")
            continue
        value = record[f.name]
        if value is None:
            if not f.nullable:
                problems.append(f"null {f.name}")
            continue
        expected = _PY_TYPES[f.type]
        bad_bool = isinstance(value, bool)
        bad_date = f.type == "date" and isinstance(value, datetime)
        if bad_bool or bad_date or not isinstance(value, expected):
            problems.append(f"{f.name} is {type(value).__name__}, expected {f.type}")
        elif f.type == "double" and value != value:
            problems.append(f"{f.name} is NaN")
        elif f.type == "geo_point" and set(value) != {"lat", "lon"}:
            problems.append(f"{f.name} must have exactly lat and lon")
    if not problems and record["record_id"] != record_id(record, schema):
        problems.append("record_id does not match its identifying fields")
    return problems


def dead_letter_from_reject(reject: Reject, env: RawEnvelope, at: str) -> DeadLetter:
    return DeadLetter(
        stage=STAGE,
        source_id=env.source_id,
        reason=f"{reject.field}: {reject.reason}" + (f": {reject.value!r}" if reject.value else ""),
        object=env.object,
        record_index=env.record_index,
        line=reject.line if reject.line is not None else env.line,
        excerpt=_excerpt(env.fields),
        fields=env.fields,
        at=at,
    )


def _excerpt(fields: dict[str, Any]) -> str:
    return json.dumps(fields, ensure_ascii=False, default=str)[:EXCERPT_CHARS]


def dead_letter_key(letter: DeadLetter) -> bytes:
    """Deterministic key: a replayed reject lands on the same partition with the same key (compaction-friendly)."""
    parts = (letter.source_id, letter.object.key, letter.object.etag, str(letter.record_index), letter.reason)
    return "|".join(parts).encode("utf-8")


@dataclass
class BatchOutput:
    """What one partition of one micro-batch yields."""

    records: Any = None  # pyarrow.Table of canonical records (arrow_schema), one row per record_id (last wins)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    input_rows: int = 0
    skips: int = 0
    duplicates: int = 0  # record ids seen twice in this batch (a replay inside one batch)

    @property
    def record_count(self) -> int:
        return 0 if self.records is None else self.records.num_rows


def _object_of(env: RawEnvelope) -> tuple[Any, ...]:
    """Envelopes with the same key share one provenance: they are normalised together, as one raw batch."""
    return (env.source_id, env.object, env.vintage, env.landed_at, env.published_at)


def process_messages(
    values: Iterable[bytes | str | None],
    normaliser_for: Callable[[str], Any],
    *,
    schema: ObservationSchema | None = None,
    now: datetime | None = None,
) -> BatchOutput:
    """Decode Kafka values, normalise them object by object as Arrow batches, and check the result.

    Never raises on bad data: it becomes a dead letter. ``normaliser_for(source_id)`` returns the (cached)
    ``BatchNormaliser`` of a source, or raises ``KeyError``/``ValueError`` for an unknown or invalid spec.
    """
    import pyarrow as pa

    from covidflow.catalog.schema import arrow_schema
    from covidflow.read.batch import records_to_batch

    schema = schema or load_schema()
    at = (now or datetime.now(UTC)).isoformat()
    out = BatchOutput()
    groups: dict[tuple[Any, ...], list[RawEnvelope]] = {}
    for value in values:
        out.input_rows += 1
        try:
            env = RawEnvelope.from_json(value if value is not None else b"")
        except (ValueError, TypeError, KeyError) as exc:
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            out.dead_letters.append(
                DeadLetter(
                    STAGE, "", f"undecodable envelope: {exc}", _UNKNOWN_OBJECT, excerpt=text[:EXCERPT_CHARS], at=at
                )
            )
            continue
        groups.setdefault(_object_of(env), []).append(env)

    tables = []
    by_row: dict[tuple[str, int], RawEnvelope] = {}
    for envs in groups.values():
        first = envs[0]
        try:
            norm = normaliser_for(first.source_id)
        except (KeyError, ValueError) as exc:
            said = str(exc.args[0] if exc.args else "") or repr(exc)  # a KeyError's str() would quote it again
            reason = f"no valid spec for source {first.source_id!r}: {said.splitlines()[0]}"
            out.dead_letters.extend(_envelope_letter(env, reason, at) for env in envs)
            continue
        raws = [RawRecord(env.record_index, dict(env.fields), env.line) for env in envs]
        index = {env.record_index: env for env in envs}
        try:
            chunk = records_to_batch(raws)
            result = norm.normalise(chunk if chunk is not None else raws, provenance_of(first))
        except Exception as exc:  # the core promises not to raise; if it does, the records must still be kept
            out.dead_letters.extend(_envelope_letter(env, f"normaliser error: {exc!r}", at) for env in envs)
            continue
        out.skips += result.skips.num_rows
        out.dead_letters.extend(dead_letter_from_reject(r, index.get(r.row, first), at) for r in result.rejects)
        if result.records.num_rows:
            tables.append(result.records)
            by_row.update(((first.object.key, i), env) for i, env in index.items())
    if not tables:
        out.records = arrow_schema(schema).empty_table()
        return out
    records = pa.concat_tables(tables)
    records, problems = _checked(records, schema)
    for (key, row), reason in problems.items():
        env = by_row[(key, row)]
        out.dead_letters.append(_envelope_letter(env, "schema validation: " + reason, at))
    out.records, out.duplicates = last_per_id(records)
    return out


def _checked(records: Any, schema: ObservationSchema) -> tuple[Any, dict[tuple[str, int], str]]:
    """Drop records with a null in a non-nullable field or a NaN value (vectorised); say why per raw row.

    Types cannot be wrong: the table has the canonical Arrow schema by construction.
    """
    import pyarrow.compute as pc

    bad = None
    reasons: list[tuple[Any, str]] = []
    for f in schema.fields:
        column = records.column(f.name)
        checks = []
        if not f.nullable and column.null_count:
            checks.append((pc.is_null(column), f"null {f.name}"))
        if f.type == "double":
            checks.append((pc.fill_null(pc.is_nan(column), False), f"{f.name} is NaN"))
        for mask, reason in checks:
            if pc.any(mask).as_py():
                reasons.append((mask, reason))
                bad = mask if bad is None else pc.or_(bad, mask)
    if bad is None:
        return records, {}
    problems: dict[tuple[str, int], str] = {}
    for mask, reason in reasons:
        rows = records.filter(mask).select(["source_object_key", "source_row"]).to_pylist()
        for row in rows:
            key = (row["source_object_key"], row["source_row"])
            problems[key] = f"{problems[key]}; {reason}" if key in problems else reason
    return records.filter(pc.invert(bad)), problems


def last_per_id(records: Any) -> tuple[Any, int]:
    """One row per record_id, the last one seen (a replay inside one batch); and how many were dropped."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n = records.num_rows
    if n == 0:
        return records, 0
    numbered = records.append_column("__i", pa.array(range(n), pa.int64()))
    last = numbered.group_by("record_id", use_threads=False).aggregate([("__i", "max")]).column("__i_max")
    if len(last) == n:
        return records, 0
    rows = pc.take(last, pc.sort_indices(last))  # the kept row numbers, in table order (not the sort permutation:
    return records.take(rows), n - len(last)  # taking that dropped the table's last rows, CI rehearsal 2026-11-30)


def _envelope_letter(env: RawEnvelope, reason: str, at: str) -> DeadLetter:
    return DeadLetter(
        STAGE, env.source_id, reason, env.object, env.record_index, env.line, _excerpt(env.fields), env.fields, at
    )
