"""Write canonical records into every table of the Cassandra data model, idempotently and in bulk.

Rows are grouped by partition key into UNLOGGED batches (one partition per batch, bounded by rows and bytes),
sent ``CONCURRENCY`` at a time with ``execute_async`` through a token-aware session: a single-partition batch
is one mutation on one replica, so Cassandra applies it as cheaply as one row and the client pays one round
trip per batch instead of one per row (docs/decisions/0009). Deterministic primary keys make a replayed
batch rewrite the same cells. The record tables are written ``USING TIMESTAMP <write version>`` per row
(``catalog.schema.write_version``): the newest vintage wins, then the latest ingest of that vintage (a corrected
file re-uploaded under the same name), regardless of arrival order, inside a batch too (docs/decisions/0018).
Input is a list of canonical record dicts or a ``pyarrow.Table`` of ``arrow_schema()``; both are turned into
bind tuples column-wise.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections.abc import Iterable, Sequence
from operator import itemgetter
from typing import Any

from covidflow import clients
from covidflow.catalog.schema import ObservationSchema, arrow_schema, load_schema, write_version, write_versions
from covidflow.store.cassandra_schema import generate_cql, statements

log = logging.getLogger(__name__)

#: Batches in flight per writer. A quick check on the shared 2-core stack: 8 in flight was ~40 % slower than 32,
#: 64 no faster; more only queues requests on the server, closer to the driver's 10 s timeout.
CONCURRENCY = 32
#: Rows per batch: the 100-row batches of issue 12's measurement; 200 measured no faster.
MAX_BATCH_ROWS = 100
#: Bytes per batch (of serialised bound values). Cassandra only checks the size of batches spanning several
#: partitions (batch_size_fail_threshold, 50 KiB by default, not overridden in the stack's cassandra.yaml);
#: ours span one, but staying under it keeps every request small and the writer safe if that ever changes.
MAX_BATCH_BYTES = 40 * 1024
#: Records converted to bind tuples at a time: bounds the Python objects alive for a big Arrow table.
SLICE_ROWS = 100_000
LATEST_TABLE = "observations_latest"
TIMESTAMP_MARKER = "[timestamp]"  # the driver's name for the ``USING TIMESTAMP ?`` bind marker
PROTOCOL_VERSION = clients.CASSANDRA_PROTOCOL_VERSION


#: The Cassandra factory (covidflow.clients): connection or settings, one cached session per endpoint (a Cluster per
#: batch would cost ~1 s each time); ``host``/``port`` replace the address only.
session = clients.cassandra_session


def connect_with_retry(host: str | None = None, port: int | None = None, retry_for: float = 600.0) -> Any:
    """``session()``, retried while Cassandra is unreachable: an outage stalls the batch, it does not fail it."""
    deadline = time.monotonic() + retry_for
    delay = 1.0
    while True:
        try:
            return session(host, port)
        except Exception as exc:  # NoHostAvailable, OperationTimedOut...
            if time.monotonic() > deadline:
                raise
            log.warning("cassandra: cannot connect (%r); retry in %.0fs", exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 30.0)


def _any_host_up(sess: Any) -> bool:
    return any(h.is_up for h in sess.cluster.metadata.all_hosts())


def ensure_schema(sess: Any, replication: dict[str, str | int] | None = None, *, keyspace: str | None = None) -> int:
    """Run the generated CQL (all IF NOT EXISTS): safe at every job start. Returns statements run."""
    stmts = statements(generate_cql(replication=replication, keyspace=keyspace))
    for stmt in stmts:
        sess.execute(stmt, timeout=60)
    return len(stmts)


# -- shapes for the tables (pure) ------------------------------------------------------------------------


def write_timestamp(record: dict[str, Any]) -> int:
    """Cassandra write time of a record's rows in the versioned tables: its write version (docs/decisions/0018)."""
    return write_version(record["vintage"], record["ingested_at"])


def cassandra_values(record: dict[str, Any], columns: list[str]) -> tuple[Any, ...]:
    """Bind values for a prepared INSERT of ``columns`` (geo_point as a (lat, lon) tuple for the UDT)."""
    out = []
    for name in columns:
        value = record[name]
        if name == "location_point" and value is not None:
            value = (value["lat"], value["lon"])
        out.append(value)
    return tuple(out)


def vintage_rows(records: Iterable[dict[str, Any]], columns: list[str]) -> list[tuple[Any, ...]]:
    """Distinct rows of vintages_by_source for the records of a batch."""
    return list(dict.fromkeys(tuple(record[c] for c in columns) for record in records))


def _unset_nulls(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A bound null writes a tombstone; an unset value writes nothing. Nullable columns are stable per key
    (a place's parent and point, a source's object version), so leaving them unset never keeps a stale value."""
    from cassandra.query import UNSET_VALUE

    return tuple(UNSET_VALUE if v is None else v for v in row)


def canonical_table(records: Any, schema: ObservationSchema | None = None) -> Any | None:
    """``records`` as a ``pyarrow.Table`` checked against ``arrow_schema()``, or None if it is not Arrow data.

    The check names the first wrong column: a table from another schema version must fail here, not half-way
    through a write. Non-nullable columns must hold no null (Arrow does not enforce a field's nullability).
    """
    module = type(records).__module__
    if not module.startswith("pyarrow"):
        return None
    import pyarrow as pa

    table = pa.Table.from_batches([records]) if isinstance(records, pa.RecordBatch) else records
    if not isinstance(table, pa.Table):
        raise TypeError(f"expected a pyarrow.Table of canonical records, got {type(records).__name__}")
    expected = arrow_schema(schema)
    if table.schema.names != expected.names:
        raise ValueError(f"arrow columns {table.schema.names} are not the canonical ones {expected.names}")
    for field in expected:
        got = table.schema.field(field.name)
        if not got.type.equals(field.type):
            raise ValueError(f"arrow column {field.name} is {got.type}, expected {field.type}")
        if not field.nullable and table.column(field.name).null_count:
            raise ValueError(f"arrow column {field.name} holds nulls but is not nullable")
    return table


def partition_batches(
    keys: Sequence[Any], sizes: Sequence[int], *, max_rows: int = MAX_BATCH_ROWS, max_bytes: int = MAX_BATCH_BYTES
) -> list[list[int]]:
    """Row indices grouped into batches: one partition key per batch, at most ``max_rows`` rows and ``max_bytes``
    (estimated) bytes each; a single row bigger than ``max_bytes`` goes alone. Rows keep their order."""
    groups: dict[Any, list[int]] = {}
    for i, key in enumerate(keys):
        group = groups.get(key)
        if group is None:
            groups[key] = [i]
        else:
            group.append(i)
    batches: list[list[int]] = []
    for rows in groups.values():
        if len(rows) <= max_rows and sum(sizes[i] for i in rows) <= max_bytes:
            batches.append(rows)
            continue
        current: list[int] = []
        used = 0
        for i in rows:
            if current and (len(current) >= max_rows or used + sizes[i] > max_bytes):
                batches.append(current)
                current, used = [], 0
            current.append(i)
            used += sizes[i]
        batches.append(current)
    return batches


class _Columns:
    """One slice of records as Python lists per canonical field (nulls as None), built without a dict per record."""

    def __init__(self, names: list[str], columns: list[list[Any]], versions: list[int]) -> None:
        self.by_name = dict(zip(names, columns, strict=True))
        self.versions = versions

    @classmethod
    def from_records(cls, records: list[dict[str, Any]], names: list[str]) -> _Columns:
        columns = [[r[name] for r in records] for name in names]
        pairs = list(zip(columns[names.index("vintage")], columns[names.index("ingested_at")], strict=True))
        versions = {pair: write_version(*pair) for pair in set(pairs)}  # few distinct pairs per batch
        return cls(names, columns, [versions[pair] for pair in pairs])

    def bind_values(self, name: str) -> list[Any]:
        """What the driver binds for column ``name``: a point as (lat, lon) for the UDT, nulls unset."""
        from cassandra.query import UNSET_VALUE

        if name == TIMESTAMP_MARKER:
            return self.versions
        values = self.by_name[name]
        if name == "location_point":
            return [UNSET_VALUE if p is None else (p["lat"], p["lon"]) for p in values]
        if None in values:
            return [UNSET_VALUE if v is None else v for v in values]
        return values

    def encoded(self, name: str, cql_type: Any, protocol_version: int) -> tuple[list[Any], list[int]]:
        return encode_column(self.bind_values(name), cql_type, protocol_version)

    def distinct(self, columns: list[str]) -> list[tuple[Any, ...]]:
        return list(dict.fromkeys(zip(*(self.by_name[c] for c in columns), strict=True)))


class _ArrowColumns(_Columns):
    """One slice of a canonical Arrow table. Columns are dictionary-encoded by Arrow and only their distinct values
    become Python objects; the point (a struct) goes through the list path."""

    def __init__(self, table: Any) -> None:
        self.table = table

    def bind_values(self, name: str) -> list[Any]:
        from cassandra.query import UNSET_VALUE

        assert name == "location_point", name
        return [UNSET_VALUE if p is None else (p["lat"], p["lon"]) for p in self.table.column(name).to_pylist()]

    def encoded(self, name: str, cql_type: Any, protocol_version: int) -> tuple[list[Any], list[int]]:
        import pyarrow.compute as pc
        from cassandra.query import UNSET_VALUE

        if name == "location_point":
            return super().encoded(name, cql_type, protocol_version)
        if name == TIMESTAMP_MARKER:
            column = write_versions(self.table).combine_chunks()
        else:
            column = self.table.column(name).combine_chunks()
        dictionary = column.dictionary_encode()
        codes, lengths = encode_column(dictionary.dictionary.to_pylist(), cql_type, protocol_version)
        codes.append(UNSET_VALUE)  # a null (nullable columns only; checked by canonical_table) is left unset
        lengths.append(0)
        indices = pc.fill_null(dictionary.indices, len(codes) - 1).to_pylist()
        return list(map(codes.__getitem__, indices)), list(map(lengths.__getitem__, indices))

    def distinct(self, columns: list[str]) -> list[tuple[Any, ...]]:
        unique = self.table.select(columns).group_by(columns, use_threads=False).aggregate([])
        return list(zip(*(unique.column(c).to_pylist() for c in columns), strict=True))


def encode_column(values: list[Any], cql_type: Any, protocol_version: int) -> tuple[list[Any], list[int]]:
    """Serialise one column with the driver's own CQL type, each distinct value once; returns (bytes, lengths).

    ``PreparedStatement.bind`` does the same per row, per value, and costs ~50 µs a row here: most columns of a
    batch repeat a handful of values (source, metric, unit, place, vintage), so this is several times cheaper.
    ``UNSET_VALUE`` (and None) pass through, as in ``bind``.
    """
    from cassandra.query import UNSET_VALUE

    def one(v: Any) -> Any:
        if v is None or v is UNSET_VALUE:
            return v
        try:
            return cql_type.serialize(v, protocol_version)
        except (TypeError, struct.error, AttributeError) as exc:
            raise TypeError(f"cannot serialise {v!r} as {cql_type.cql_parameterized_type()}: {exc}") from exc

    codes = {v: one(v) for v in dict.fromkeys(values)}
    lengths = {v: len(b) if isinstance(b, bytes) else 0 for v, b in codes.items()}
    return list(map(codes.__getitem__, values)), list(map(lengths.__getitem__, values))


class CassandraWriter:
    """Upserts canonical records into observations_latest, observations_by_vintage and vintages_by_source."""

    def __init__(
        self,
        sess: Any,
        schema: ObservationSchema | None = None,
        *,
        retry_for: float = 600.0,
        keyspace: str | None = None,
        concurrency: int = CONCURRENCY,
        max_batch_rows: int = MAX_BATCH_ROWS,
        max_batch_bytes: int = MAX_BATCH_BYTES,
    ) -> None:
        self.session = sess
        self.schema = schema or load_schema()
        self.retry_for = retry_for
        self.concurrency = concurrency
        self.max_batch_rows = max_batch_rows
        self.max_batch_bytes = max_batch_bytes
        self.keyspace = keyspace or self.schema.cassandra["keyspace"]
        self.protocol = getattr(getattr(sess, "cluster", None), "protocol_version", None) or PROTOCOL_VERSION
        self.tables: dict[str, dict[str, Any]] = {}
        for table in self.schema.cassandra["tables"]:
            cols = self.schema.field_names if table["columns"] == "all" else list(table["columns"])
            marks = ", ".join("?" for _ in cols)
            versioned = table.get("write_time") == "version"
            using = " USING TIMESTAMP ?" if versioned else ""
            cql = f"INSERT INTO {self.keyspace}.{table['name']} ({', '.join(cols)}) VALUES ({marks}){using}"
            prepared = sess.prepare(cql)
            bound = [*cols, TIMESTAMP_MARKER] if versioned else cols
            self.tables[table["name"]] = {
                "statement": prepared,
                "columns": cols,
                "bound": bound,  # the bind markers in order: the columns, then the write time if any
                "types": dict(zip(bound, (c.type for c in prepared.column_metadata), strict=True)),
                "per_record": table["columns"] == "all",  # one row per record; otherwise distinct projections
                "key": [cols.index(c) for c in table["partition_key"]],
            }

    @property
    def inserts(self) -> dict[str, tuple[Any, list[str]]]:
        """table -> (prepared INSERT, its columns)."""
        return {name: (t["statement"], t["columns"]) for name, t in self.tables.items()}

    def write(self, records: Iterable[dict[str, Any]] | Any) -> dict[str, int]:
        """Rows written per table; retries the failed (idempotent) batches while Cassandra is unreachable.

        ``records``: canonical record dicts or a ``pyarrow.Table`` with exactly ``arrow_schema()``. A record id
        given twice is written once (the last one): inside one batch two writes of a row share a timestamp.
        """
        table = canonical_table(records, self.schema)
        names = self.schema.field_names
        if table is not None:
            table = _last_per_id(table)
            total = table.num_rows
            slices: Iterable[_Columns] = (
                _ArrowColumns(table.slice(i, SLICE_ROWS)) for i in range(0, total, SLICE_ROWS)
            )
        else:
            batch = list({r["record_id"]: r for r in records}.values())
            total = len(batch)
            slices = (_Columns.from_records(batch[i : i + SLICE_ROWS], names) for i in range(0, total, SLICE_ROWS))
        counts = {name: 0 for name in self.tables}
        projected = [name for name, t in self.tables.items() if not t["per_record"]]
        distinct: dict[str, dict[tuple[Any, ...], None]] = {name: {} for name in projected}
        for cols in slices:
            encoded: dict[str, tuple[list[Any], list[int]]] = {}  # shared by the tables that bind the same column
            rows = {name: self.encode(name, cols, encoded) for name, t in self.tables.items() if t["per_record"]}
            for name in projected:
                distinct[name].update(dict.fromkeys(cols.distinct(self.tables[name]["columns"])))
            self._write_rows(rows)
            for name, (table_rows, _) in rows.items():
                counts[name] += len(table_rows)
        if distinct:
            rows = {}
            for name, unique in distinct.items():
                columns = list(zip(*unique, strict=True)) if unique else [[] for _ in self.tables[name]["columns"]]
                cols = _Columns(self.tables[name]["columns"], [list(c) for c in columns], [])
                rows[name] = self.encode(name, cols, {})
                counts[name] = len(unique)
            self._write_rows(rows)
        return counts

    def encode(
        self, name: str, cols: _Columns, encoded: dict[str, tuple[list[Any], list[int]]]
    ) -> tuple[list[tuple[Any, ...]], list[int]]:
        """Serialised bind values of table ``name`` for every row of ``cols``, and each row's size in bytes."""
        table = self.tables[name]
        for column in table["bound"]:
            if column not in encoded:
                encoded[column] = cols.encoded(column, table["types"][column], self.protocol)
        rows = list(zip(*(encoded[c][0] for c in table["bound"]), strict=True))
        sizes = list(map(sum, zip(*(encoded[c][1] for c in table["bound"]), strict=True)))
        return rows, sizes

    def _write_rows(self, encoded: dict[str, tuple[list[tuple[Any, ...]], list[int]]]) -> None:
        """Send every table's rows as partition batches; retry the failed batches until ``retry_for`` runs out."""
        plan: list[tuple[str, list[int]]] = []
        rows = {name: table_rows for name, (table_rows, _) in encoded.items()}
        for name, (table_rows, sizes) in encoded.items():
            key = itemgetter(*self.tables[name]["key"])
            batches = partition_batches(
                [key(r) for r in table_rows], sizes, max_rows=self.max_batch_rows, max_bytes=self.max_batch_bytes
            )
            plan.extend((name, b) for b in batches)
        deadline = time.monotonic() + self.retry_for
        delay = 1.0
        while plan:
            if _any_host_up(self.session):
                failed = self._execute(plan, rows)
            else:  # skip the calls: failing thousands of requests at once only floods the driver
                failed = [(item, "no Cassandra host up") for item in plan]
            if not failed:
                return
            by_table: dict[str, list[Any]] = {}
            for (name, batch), error in failed:
                entry = by_table.setdefault(name, [0, error])
                entry[0] += len(batch)
            if time.monotonic() > deadline:
                name, (n, error) = next(iter(by_table.items()))
                raise RuntimeError(f"{n} writes to {name} failed; first: {error!r}")
            for name, (n, error) in by_table.items():
                log.warning("cassandra: %d/%d writes to %s failed (%r); retry in %.0fs",
                            n, len(rows[name]), name, error, delay)  # fmt: skip
            time.sleep(delay)
            delay = min(delay * 2, 30.0)
            plan = [item for item, _ in failed]

    def _statement(self, name: str, batch: list[int], rows: list[tuple[Any, ...]]) -> Any:
        """One bound statement, or an UNLOGGED batch of them routed by its partition key.

        The values are already serialised (``encode_column``), so they are set as a bound statement's ``values``,
        which is what ``PreparedStatement.bind`` fills in and what the driver sends. ``BatchStatement.add`` keeps
        the values object it is given, so one ``BoundStatement`` per batch carries every row in turn (the batch
        takes its routing key from the first row; all its rows share that partition).
        """
        from cassandra.query import BatchStatement, BatchType, BoundStatement

        bound = BoundStatement(self.tables[name]["statement"])
        if len(batch) == 1:
            bound.values = rows[batch[0]]
            return bound
        statement = BatchStatement(batch_type=BatchType.UNLOGGED)
        for i in batch:
            bound.values = rows[i]
            statement.add(bound)
        return statement

    def _execute(
        self, plan: list[tuple[str, list[int]]], rows: dict[str, list[tuple[Any, ...]]]
    ) -> list[tuple[tuple[str, list[int]], Any]]:
        """Run the plan with at most ``concurrency`` requests in flight; returns (batch, error) of the failures.

        Statements are built here, in the caller's thread, while earlier ones are on the wire; the driver's IO
        thread only releases a slot when a response (or error) arrives.
        """
        window = threading.BoundedSemaphore(self.concurrency)
        lock = threading.Lock()
        failed: list[tuple[tuple[str, list[int]], Any]] = []
        pending: set[int] = set()

        def done(_result: Any, n: int) -> None:
            with lock:
                pending.discard(n)
            window.release()

        def error(exc: Any, n: int) -> None:
            with lock:
                if n in pending:  # not yet given up on (see the end)
                    pending.discard(n)
                    failed.append((plan[n], exc))
            window.release()

        for n, (name, batch) in enumerate(plan):
            statement = self._statement(name, batch, rows[name])
            window.acquire()
            with lock:
                pending.add(n)
            try:
                future = self.session.execute_async(statement)
                future.add_callbacks(done, error, callback_args=(n,), errback_args=(n,))
            except Exception as exc:  # the driver itself can trip over mass connection errors
                error(exc, n)
        # Every request has the driver's own timeout, so the slots come back; the bound is a last resort.
        for _ in range(self.concurrency):
            if not window.acquire(timeout=300):
                break
        with lock:
            failed.extend((plan[n], "no answer within 300 s") for n in sorted(pending))
            pending.clear()
            return list(failed)


def _last_per_id(table: Any) -> Any:
    """The table without repeated record ids (the last occurrence kept), as the dict path does."""
    ids = table.column("record_id").to_pylist()
    last = {rid: i for i, rid in enumerate(ids)}
    return table if len(last) == len(ids) else table.take(sorted(last.values()))
