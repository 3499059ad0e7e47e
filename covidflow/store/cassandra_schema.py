"""Generate the Cassandra CQL (keyspace, types, tables) from observation.yaml.

``include/schemas/cassandra.cql`` is this module's output with the committed configuration (the keyspace's
replication from include/config/replication.yaml: SimpleStrategy, factor 1, for one node); a test regenerates
it so the committed file never drifts from the schema.
"""

from __future__ import annotations

from pathlib import Path

from covidflow import PROJECT_ROOT
from covidflow.catalog.schema import ObservationSchema, load_schema
from covidflow.replication import cassandra_replication

CQL_PATH = PROJECT_ROOT / "include" / "schemas" / "cassandra.cql"


def _replication(options: dict[str, str | int]) -> str:
    return "{" + ", ".join(f"'{k}': {v!r}" if isinstance(v, str) else f"'{k}': {v}" for k, v in options.items()) + "}"


def _options(options: dict[str, str]) -> str:
    return "{" + ", ".join(f"'{k}': '{v}'" for k, v in options.items()) + "}"


def generate_cql(
    schema: ObservationSchema | None = None,
    *,
    keyspace: str | None = None,
    replication: dict[str, str | int] | None = None,
) -> str:
    """All statements, idempotent (IF NOT EXISTS), in dependency order. ``replication`` defaults to the
    configured one (include/config/replication.yaml), so every caller creates the keyspace the same way."""
    schema = schema or load_schema()
    cfg = schema.cassandra
    ks = keyspace or cfg["keyspace"]
    out = [
        f"-- Generated from include/schemas/observation.yaml (schema {schema.name} v{schema.version}).",
        "-- Do not edit: run `python -m covidflow.store.cassandra_schema` and commit the result.",
        "",
        f"CREATE KEYSPACE IF NOT EXISTS {ks}",
        f"    WITH replication = {_replication(replication or cassandra_replication())};",
        "",
    ]
    for tname, tfields in cfg.get("types", {}).items():
        cols = ",\n".join(f"    {name} {typ}" for name, typ in tfields.items())
        out += [f"CREATE TYPE IF NOT EXISTS {ks}.{tname} (\n{cols}\n);", ""]
    for table in cfg["tables"]:
        names = schema.field_names if table["columns"] == "all" else table["columns"]
        lines = [f"    {n} {schema.store_type(schema.field(n), 'cql')}," for n in names]
        pk = ", ".join(table["partition_key"])
        clustering = [c for c, _ in table["clustering"]]
        lines.append(f"    PRIMARY KEY (({pk}), {', '.join(clustering)})")
        order = ", ".join(f"{c} {o}" for c, o in table["clustering"])
        out += [
            f"-- {table['purpose']}",
            f"CREATE TABLE IF NOT EXISTS {ks}.{table['name']} (",
            *lines,
            ")",
            f"    WITH CLUSTERING ORDER BY ({order})",
            f"    AND compaction = {_options(table['compaction'])}",
            f"    AND comment = 'schema {schema.name} v{schema.version}';",
            "",
        ]
    return "\n".join(out)


def alter_keyspace_cql(
    schema: ObservationSchema | None = None, *, replication: dict[str, str | int] | None = None
) -> str:
    """``ALTER KEYSPACE`` to the configured replication: CREATE ... IF NOT EXISTS leaves an existing keyspace
    as it is, so moving a live keyspace to a cluster takes this statement and then ``nodetool repair``."""
    ks = (schema or load_schema()).cassandra["keyspace"]
    return f"ALTER KEYSPACE {ks} WITH replication = {_replication(replication or cassandra_replication())};"


def statements(cql: str) -> list[str]:
    """Split generated CQL into single statements for the driver (it takes one at a time)."""
    body = "\n".join(line for line in cql.splitlines() if not line.startswith("--"))
    return [s.strip() for s in body.split(";") if s.strip()]


def write(path: Path = CQL_PATH) -> None:
    path.write_text(generate_cql(), encoding="utf-8")


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["--alter"]:
        print(alter_keyspace_cql())
    else:
        write()
