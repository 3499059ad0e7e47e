"""Write canonical records into every table of the Cassandra data model, idempotently.

Prepared statements, ``execute_concurrent_with_args``, deterministic primary keys: a replayed batch
rewrites the same cells. observations_latest is written ``USING TIMESTAMP <vintage µs>`` so the newest
vintage wins regardless of arrival order. One session per Python worker process (reused across batches).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from covidflow import settings
from covidflow.catalog.schema import ObservationSchema, load_schema
from covidflow.normalise.stream import cassandra_values, vintage_rows, write_timestamp
from covidflow.store.cassandra_schema import generate_cql, statements

log = logging.getLogger(__name__)
CONCURRENCY = 64
_SESSIONS: dict[tuple[str, int], Any] = {}


def session(host: str | None = None, port: int | None = None) -> Any:
    """A cached cassandra-driver session (creating a Cluster per batch would cost ~1 s each time)."""
    key = (host or settings.CASSANDRA_HOST, port or settings.CASSANDRA_PORT)
    if key not in _SESSIONS:
        from cassandra.cluster import Cluster
        from cassandra.policies import ExponentialReconnectionPolicy, RoundRobinPolicy

        cluster = Cluster(
            [key[0]],
            port=key[1],
            load_balancing_policy=RoundRobinPolicy(),
            protocol_version=5,
            # Reconnect within seconds after an outage (the default backs off to 10 minutes).
            reconnection_policy=ExponentialReconnectionPolicy(1.0, 10.0),
        )
        _SESSIONS[key] = cluster.connect()
    return _SESSIONS[key]


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


def ensure_schema(sess: Any, replication: dict[str, str | int] | None = None) -> int:
    """Run the generated CQL (all IF NOT EXISTS): safe at every job start. Returns statements run."""
    stmts = statements(generate_cql(replication=replication))
    for stmt in stmts:
        sess.execute(stmt, timeout=60)
    return len(stmts)


def _unset_nulls(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A bound null writes a tombstone; an unset value writes nothing. Nullable columns are stable per key
    (a place's parent and point, a source's object version), so leaving them unset never keeps a stale value."""
    from cassandra.query import UNSET_VALUE

    return tuple(UNSET_VALUE if v is None else v for v in row)


class CassandraWriter:
    """Upserts canonical records into observations_latest, observations_by_vintage and vintages_by_source."""

    def __init__(self, sess: Any, schema: ObservationSchema | None = None, *, retry_for: float = 600.0) -> None:
        self.session = sess
        self.schema = schema or load_schema()
        self.retry_for = retry_for
        ks = self.schema.cassandra["keyspace"]
        self.inserts: dict[str, tuple[Any, list[str]]] = {}
        for table in self.schema.cassandra["tables"]:
            cols = self.schema.field_names if table["columns"] == "all" else list(table["columns"])
            marks = ", ".join("?" for _ in cols)
            using = " USING TIMESTAMP ?" if table["name"] == "observations_latest" else ""
            cql = f"INSERT INTO {ks}.{table['name']} ({', '.join(cols)}) VALUES ({marks}){using}"
            self.inserts[table["name"]] = (sess.prepare(cql), cols)

    def _params(self, table: str, records: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        _, cols = self.inserts[table]
        if table == "observations_latest":
            rows = [(*cassandra_values(r, cols), write_timestamp(r)) for r in records]
        elif set(cols) == set(self.schema.field_names):
            rows = [cassandra_values(r, cols) for r in records]
        else:
            rows = vintage_rows(records, cols)
        return [_unset_nulls(row) for row in rows]

    def write(self, records: Iterable[dict[str, Any]]) -> dict[str, int]:
        """Rows written per table; retries the whole (idempotent) write while Cassandra is unreachable."""
        from cassandra.concurrent import execute_concurrent_with_args

        batch = list(records)
        counts: dict[str, int] = {}
        for table, (stmt, _) in self.inserts.items():
            params = self._params(table, batch)
            counts[table] = len(params)
            deadline = time.monotonic() + self.retry_for
            delay = 1.0
            while True:
                if _any_host_up(self.session):
                    try:
                        results = execute_concurrent_with_args(
                            self.session, stmt, params, concurrency=CONCURRENCY, raise_on_first_error=False
                        )
                        failed = [(p, r) for p, (ok, r) in zip(params, results, strict=True) if not ok]
                    except Exception as exc:  # the driver itself can trip over mass connection errors
                        failed = [(p, exc) for p in params]
                else:  # skip the call: failing thousands of requests at once recurses in the driver
                    failed = [(p, "no Cassandra host up") for p in params]
                if not failed:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{len(failed)} writes to {table} failed; first: {failed[0][1]!r}")
                log.warning("cassandra: %d/%d writes to %s failed (%r); retry in %.0fs",
                            len(failed), len(params), table, failed[0][1], delay)  # fmt: skip
                time.sleep(delay)
                delay = min(delay * 2, 30.0)
                params = [p for p, _ in failed]
        return counts
