"""Rebuild the Elasticsearch index from Cassandra, the system of record (e.g. after losing the cluster).

The index holds every vintage of every record: ``_id = record_id`` and the record id includes the vintage. Of
the Cassandra tables only ``observations_by_vintage`` holds them all (one row per record id: its primary key is
the record id's fields); ``observations_latest`` keeps the newest vintage per place, metric and dimensions. So
the rebuild reads ``observations_by_vintage``, one token range after the other, each range paged, and writes
the rows through the stream's own ``EsWriter``: the same documents, and the same routing (an id an older index
of a rolled-over alias holds is overwritten there, not copied into the write index).
"""

from __future__ import annotations

import datetime as dt
import itertools
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

MIN_TOKEN = -(2**63)  # Murmur3Partitioner's ring
MAX_TOKEN = 2**63 - 1
REBUILD_TABLE = "observations_by_vintage"


def token_ranges(n: int) -> list[tuple[int, int]]:
    """``n`` contiguous ranges ``(start, end]`` over the whole Murmur3 ring (the first one also includes start)."""
    if n < 1:
        raise ValueError(f"token_ranges must be >= 1, got {n}")
    step = (MAX_TOKEN - MIN_TOKEN) // n
    bounds = [MIN_TOKEN + i * step for i in range(n)] + [MAX_TOKEN]
    return list(itertools.pairwise(bounds))


def row_record(row: Mapping[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """A Cassandra row as a canonical record: aware UTC instants, ``datetime.date``, geo_point as {lat, lon}."""
    record: dict[str, Any] = {}
    for name in names:
        value = row.get(name)
        if isinstance(value, dt.datetime):
            value = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        elif type(value).__name__ == "Date":  # cassandra.util.Date
            value = value.date()
        elif value is not None and hasattr(value, "lat") and hasattr(value, "lon"):
            value = {"lat": value.lat, "lon": value.lon}
        record[name] = value
    return record


def _as_mapping(row: Any, names: Sequence[str]) -> Mapping[str, Any]:
    """Whatever row factory the session has: dict, named tuple or plain tuple."""
    if isinstance(row, Mapping):
        return row
    if hasattr(row, "_asdict"):
        return row._asdict()
    return dict(zip(names, row, strict=True))


def scan_table(
    session: Any, keyspace: str, table: str, columns: Sequence[str], *, ranges: int = 64, page_size: int = 1000
) -> Iterator[tuple[int, Mapping[str, Any]]]:
    """Every row of ``keyspace.table`` as (range number, row): one ``token(partition key)`` range after the other,
    each read in pages of ``page_size``. Each query touches one slice of the ring: no full-table query for the
    coordinator to hold, no ALLOW FILTERING, and a failure is retried by the driver per page."""
    from cassandra.query import SimpleStatement

    meta = session.cluster.metadata
    key = ", ".join(c.name for c in meta.keyspaces[keyspace].tables[table].partition_key)
    select = f"SELECT {', '.join(columns)} FROM {keyspace}.{table}"
    if not str(meta.partitioner).endswith("Murmur3Partitioner"):  # another ring: one paged scan
        for row in session.execute(SimpleStatement(select, fetch_size=page_size), timeout=120):
            yield 0, _as_mapping(row, columns)
        return
    first = session.prepare(f"{select} WHERE token({key}) >= ? AND token({key}) <= ?")
    rest = session.prepare(f"{select} WHERE token({key}) > ? AND token({key}) <= ?")
    for n, (start, end) in enumerate(token_ranges(ranges)):
        statement = (first if n == 0 else rest).bind((start, end))
        statement.fetch_size = page_size
        for row in session.execute(statement, timeout=120):
            yield n, _as_mapping(row, columns)


def rebuild(
    session: Any,
    es: Any,
    keyspace: str,
    alias: str,
    *,
    table: str = REBUILD_TABLE,
    ranges: int = 64,
    page_size: int = 1000,
    batch_size: int = 2000,
    progress_every: int = 10000,
    retry_for: float = 600.0,
    log: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """Write every row of ``keyspace.table`` to ``alias`` through EsWriter; counts of rows read and documents written.

    Rows go to Elasticsearch as canonical Arrow tables of ``batch_size`` rows, as the stream's micro-batches do.
    """
    import pyarrow as pa

    from covidflow.catalog.schema import arrow_schema, load_schema
    from covidflow.index.es_writer import EsWriter

    schema = load_schema()
    names = list(schema.field_names)
    live = set(session.cluster.metadata.keyspaces[keyspace].tables[table].columns)
    absent = [n for n in names if n not in live]
    if absent or "record_id" not in live:
        raise ValueError(f"{keyspace}.{table} lacks the canonical columns {absent}: cannot rebuild the documents")
    writer = EsWriter(es, schema, alias=alias, retry_for=retry_for)
    target = arrow_schema(schema)
    started = time.monotonic()
    read = written = 0
    last_range = -1
    batch: list[dict[str, Any]] = []

    def flush() -> None:
        nonlocal written
        if batch:
            written += writer.write(pa.Table.from_pylist(batch, schema=target))
            batch.clear()

    for last_range, row in scan_table(session, keyspace, table, names, ranges=ranges, page_size=page_size):
        batch.append(row_record(row, names))
        read += 1
        if len(batch) >= batch_size:
            flush()
        if read % progress_every == 0:
            rate = read / max(time.monotonic() - started, 1e-6)
            log(f"rebuild {keyspace}.{table} -> {alias}: {read} rows read, {written} documents written, token "
                f"range {last_range + 1}/{ranges}, {rate:.0f} rows/s")  # fmt: skip
    flush()
    seconds = time.monotonic() - started
    log(f"rebuild {keyspace}.{table} -> {alias}: done, {read} rows read, {written} documents written in "
        f"{seconds:.1f} s ({ranges} token ranges)")  # fmt: skip
    return {"rows": read, "written": written, "seconds": round(seconds, 1)}
