"""Load and check ``include/schemas/observation.yaml``, the one definition every store is derived from.

The Cassandra CQL, the Elasticsearch template and the Spark schema are generated from the object
returned by :func:`load_schema`, so a field added here shows up everywhere (and tests prove it).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from covidflow import PROJECT_ROOT

SCHEMA_PATH = PROJECT_ROOT / "include" / "schemas" / "observation.yaml"
_STORES = ("cql", "es", "spark", "arrow")


class SchemaError(ValueError):
    """observation.yaml is inconsistent; the message names the field."""


@dataclass(frozen=True)
class Field:
    name: str
    type: str
    nullable: bool
    description: str


@dataclass(frozen=True)
class ObservationSchema:
    name: str
    version: int
    description: str
    types: dict[str, dict[str, str]]
    fields: tuple[Field, ...]
    record_id_fields: tuple[str, ...]
    dimensions: tuple[str, ...]
    dimension_defaults: dict[str, str]
    cassandra: dict[str, Any]
    elasticsearch: dict[str, Any]

    @property
    def field_names(self) -> list[str]:
        return [f.name for f in self.fields]

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    def store_type(self, field: Field, store: str) -> str:
        """The type of ``field`` in ``store`` (cql, es, spark or arrow)."""
        return self.types[field.type][store]


def _check(raw: dict[str, Any], path: Path) -> None:
    """Fail loudly on a schema that the generators would turn into nonsense."""
    for key in ("name", "version", "types", "fields", "record_id", "dimensions", "cassandra", "elasticsearch"):
        if key not in raw:
            raise SchemaError(f"{path}: missing top-level key {key!r}")
    if not isinstance(raw["version"], int) or raw["version"] < 1:
        raise SchemaError(f"{path}: version must be a positive integer")
    for tname, spelled in raw["types"].items():
        missing = [s for s in _STORES if s not in spelled]
        if missing:
            raise SchemaError(f"{path}: type {tname!r} has no spelling for {missing}")
    seen: set[str] = set()
    for f in raw["fields"]:
        for key in ("name", "type", "nullable", "description"):
            if key not in f:
                raise SchemaError(f"{path}: field {f.get('name', '?')!r} lacks {key!r}")
        if f["name"] in seen:
            raise SchemaError(f"{path}: field {f['name']!r} defined twice")
        if f["type"] not in raw["types"]:
            raise SchemaError(f"{path}: field {f['name']!r} has unknown type {f['type']!r}")
        seen.add(f["name"])
    for name in [*raw["record_id"]["fields"], *raw["dimensions"]]:
        if name not in seen:
            raise SchemaError(f"{path}: record_id/dimensions name unknown field {name!r}")
    for table in raw["cassandra"]["tables"]:
        cols = seen if table["columns"] == "all" else set(table["columns"])
        keys = [*table["partition_key"], *(c for c, _ in table["clustering"])]
        for col in keys:
            if col not in cols or col not in seen:
                raise SchemaError(f"{path}: table {table['name']!r} key column {col!r} is not a column")
            if raw["fields"][[f["name"] for f in raw["fields"]].index(col)]["nullable"]:
                raise SchemaError(f"{path}: table {table['name']!r} key column {col!r} is nullable")


def load_schema(path: Path = SCHEMA_PATH) -> ObservationSchema:
    """Read and check observation.yaml (safe YAML only)."""
    return _load_cached(Path(path))


@cache
def _load_cached(path: Path) -> ObservationSchema:
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    _check(raw, path)
    return ObservationSchema(
        name=raw["name"],
        version=raw["version"],
        description=raw.get("description", ""),
        types=raw["types"],
        fields=tuple(Field(f["name"], f["type"], bool(f["nullable"]), f["description"]) for f in raw["fields"]),
        record_id_fields=tuple(raw["record_id"]["fields"]),
        dimensions=tuple(raw["dimensions"]),
        dimension_defaults=dict(raw["dimension_defaults"]),
        cassandra=raw["cassandra"],
        elasticsearch=raw["elasticsearch"],
    )


def record_id(record: dict[str, Any], schema: ObservationSchema | None = None) -> str:
    """sha256 of the identifying fields (in schema order, U+001F-joined), first 32 hex chars."""
    schema = schema or load_schema()
    parts = []
    for name in schema.record_id_fields:
        value = record[name]
        parts.append(value.isoformat() if hasattr(value, "isoformat") else str(value))
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()[:32]


#: Write versions count seconds from here; a vintage before it counts as 0 (docs/decisions/0018).
VERSION_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_VERSION_EPOCH_S = int(VERSION_EPOCH.timestamp())
_VINTAGE_BITS, _INGESTED_BITS = 31, 32  # 63 bits: a positive int64, Cassandra's write time and ES's version


def parse_instant(value: str | datetime | None) -> datetime | None:
    """An ISO date or datetime (an envelope's, a summary's, a document's; naive means UTC) as an aware UTC datetime;
    None for an empty value. The one reading of the schema's instants (vintage, ingested_at, landed_at)."""
    if value is None or value == "":
        return None
    parsed = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def write_version(vintage: datetime, ingested_at: datetime) -> int:
    """Which write of a record wins: the newer vintage, then, for the same vintage, the later ingest.

    Packed into one int64 as (vintage s since 2000) << 32 | (ingest s since 2000), so a store that keeps the
    highest write time (Cassandra's ``USING TIMESTAMP``) keeps the correction of a same-vintage file. Vintages
    up to 2068 and ingests up to 2136 fit; one second is the resolution of both.
    """

    def seconds(instant: datetime, bits: int) -> int:
        since = int((instant if instant.tzinfo else instant.replace(tzinfo=UTC)).timestamp()) - _VERSION_EPOCH_S
        return min(max(since, 0), (1 << bits) - 1)

    return seconds(vintage, _VINTAGE_BITS) << _INGESTED_BITS | seconds(ingested_at, _INGESTED_BITS)


def write_versions(table: Any) -> Any:
    """``write_version`` of every row of a canonical Arrow table, column-wise (an int64 array)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    def seconds(name: str, bits: int) -> Any:
        column = pc.cast(table.column(name), pa.int64())  # timestamp[us, UTC] -> µs since 1970
        since = pc.subtract(pc.divide(column, 1_000_000), _VERSION_EPOCH_S)  # integer division, as int()
        return pc.min_element_wise(pc.max_element_wise(since, 0), (1 << bits) - 1)

    vintage = pc.multiply(seconds("vintage", _VINTAGE_BITS), 1 << _INGESTED_BITS)
    return pc.add(vintage, seconds("ingested_at", _INGESTED_BITS))


def _arrow_type(spelled: str) -> Any:
    import pyarrow as pa

    simple = {
        "string": pa.string(),
        "int32": pa.int32(),
        "int64": pa.int64(),
        "float64": pa.float64(),
        "double": pa.float64(),
        "date32": pa.date32(),
        "timestamp_utc": pa.timestamp("us", tz="UTC"),
    }
    spelled = spelled.replace(" ", "")
    if spelled.startswith("struct<") and spelled.endswith(">"):
        parts = [p.split(":", 1) for p in spelled[len("struct<") : -1].split(",")]
        return pa.struct([pa.field(name, _arrow_type(typ)) for name, typ in parts])
    return simple[spelled]


def arrow_schema(schema: ObservationSchema | None = None) -> Any:
    """The ``pyarrow.Schema`` of canonical record batches: the schema's fields, types and nullability, in order.

    What the columnar normalisation core produces and the store writers consume (pyarrow imported here only).
    """
    import pyarrow as pa

    schema = schema or load_schema()
    return pa.schema(
        [pa.field(f.name, _arrow_type(schema.store_type(f, "arrow")), nullable=f.nullable) for f in schema.fields]
    )
