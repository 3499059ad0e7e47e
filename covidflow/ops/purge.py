"""Purge the records a re-run makes obsolete, in both stores (docs/decisions/0016, 0018).

A re-run publishes an object again at its vintage V with a new ingest time T (the envelopes' ``published_at``,
the records' ``ingested_at``), so its records carry the write version W = write_version(V, T). Every record of
that object and vintage ingested before T is then obsolete: either the re-run rewrites it (same id, version W)
or the fixed spec no longer produces it. The purge removes them, and is right in any order with the stream:

- the keys come from Elasticsearch, which holds every vintage with all key fields: a scroll over
  ``source_id`` + ``source_object_key`` + ``vintage`` with ``ingested_at < T``;
- Cassandra, both record tables: ``DELETE ... USING TIMESTAMP W - 1`` by full primary key. A row the re-run
  wrote (version W) survives whether the stream wrote it before or after the delete; an obsolete row goes; a
  newer vintage's row in ``observations_latest`` (a higher version) is untouched;
- Elasticsearch: a bulk delete of those documents in the concrete index holding each, guarded by
  ``if_seq_no``/``if_primary_term``: a document the stream rewrote meanwhile is kept (the minimal distribution
  has no ``_delete_by_query``).

Cassandra goes first, then Elasticsearch, chunk by chunk: a failure leaves the Elasticsearch documents in place,
so a retry finds the keys again (the purge is idempotent). Before purging, ``wait_for_stream`` waits (bounded)
until the stream has stored the re-run, so queries do not see the object's records disappear for the time the
stream takes to rewrite them; correctness does not depend on that wait.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from typing import Any

from covidflow.catalog.schema import ObservationSchema, load_schema, parse_instant, write_version

log = logging.getLogger(__name__)

RECORD_TABLES = ("observations_by_vintage", "observations_latest")
CHUNK = 2000  # documents per scroll page: their Cassandra deletes, then their Elasticsearch deletes
CONCURRENCY = 32  # Cassandra deletes in flight


# -- what to purge (pure) ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PurgeTarget:
    """The records of one object of a source at one vintage (None: every vintage, for per-row vintages) that were
    ingested before ``since``, the re-run's ingest time."""

    source_id: str
    key: str
    vintage: datetime | None
    since: datetime

    def describe(self) -> str:
        vintage = self.vintage.isoformat() if self.vintage else "every vintage"
        return f"{self.source_id} {self.key} vintage {vintage}, ingested before {self.since.isoformat()}"


def target_of(source_id: str, summary: Mapping[str, Any], spec: Mapping[str, Any] | None = None) -> PurgeTarget:
    """The purge after one publish, from its summary (the publish task's XCom): object, vintage, ``published_at``.

    A spec whose vintage comes from a column gives each row its own vintage: the purge then covers every vintage
    of the object.
    """
    if summary.get("status", "published") != "published":
        raise ValueError(f"{summary.get('object')} was {summary.get('status')}: nothing was re-published")
    if not summary.get("published_at"):
        raise ValueError(f"{summary.get('object')}: the publish summary has no published_at (an older publisher)")
    uri = str(summary["object"])
    if not uri.startswith("s3://") or "/" not in uri[5:]:
        raise ValueError(f"not an s3:// object URI: {uri!r}")
    key = uri[5:].split("/", 1)[1]
    per_row = ((spec or {}).get("vintage") or {}).get("from") == "column"
    vintage = None if per_row else parse_instant(summary["vintage"])
    return PurgeTarget(source_id, key, vintage, parse_instant(summary["published_at"]))


def _ms(instant: datetime) -> str:
    """ISO text at Elasticsearch's resolution (ms), truncated: ``lt`` then excludes the re-run's own documents."""
    return instant.astimezone(UTC).isoformat(timespec="milliseconds")


def obsolete_query(target: PurgeTarget, *, newer: bool = False) -> dict[str, Any]:
    """The Elasticsearch query of the target's documents ingested before ``since``.

    ``newer``: the re-run's progress instead, documents of the source and vintage ingested at or after ``since``,
    whatever their object: a record id names no object, so two objects of one vintage that yield the same records
    share documents, attributed to the object written last (the re-run's may end up under the other key).
    """
    filters: list[dict[str, Any]] = [
        {"term": {"source_id": target.source_id}},
        {"range": {"ingested_at": {"gte" if newer else "lt": _ms(target.since)}}},
    ]
    if not newer:
        filters.insert(1, {"term": {"source_object_key": target.key}})
    if target.vintage is not None:
        at = target.vintage.isoformat()
        filters.append({"range": {"vintage": {"gte": at, "lte": at}}})
    return {"bool": {"filter": filters}}


def tombstone_timestamp(vintage: datetime, since: datetime) -> int:
    """The write time of the purge's deletes: just below the re-run's write version, so its rows win."""
    return write_version(vintage, since) - 1


def key_columns(table: str, schema: ObservationSchema | None = None) -> list[str]:
    """The full primary key of a record table: partition key, then clustering columns."""
    schema = schema or load_schema()
    for spec in schema.cassandra["tables"]:
        if spec["name"] == table:
            return [*spec["partition_key"], *(column for column, _ in spec["clustering"])]
    raise KeyError(table)


def delete_cql(keyspace: str, table: str, columns: list[str]) -> str:
    where = " AND ".join(f"{column} = ?" for column in columns)
    return f"DELETE FROM {keyspace}.{table} USING TIMESTAMP ? WHERE {where}"


def key_values(doc: Mapping[str, Any], columns: list[str], schema: ObservationSchema | None = None) -> tuple[Any, ...]:
    """A document's primary-key values typed for the driver: dates and instants parsed from their ISO text."""
    schema = schema or load_schema()
    out: list[Any] = []
    for column in columns:
        value = doc[column]
        kind = schema.field(column).type
        if kind == "date":
            value = value if isinstance(value, date) else date.fromisoformat(str(value)[:10])
        elif kind == "timestamp":
            value = parse_instant(value)
        out.append(value)
    return tuple(out)


def delete_actions(hits: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Bulk deletes of search hits, each to its concrete index, each only if the document is unchanged."""
    return [
        {
            "_op_type": "delete",
            "_index": hit["_index"],
            "_id": hit["_id"],
            "if_seq_no": hit["_seq_no"],
            "if_primary_term": hit["_primary_term"],
        }
        for hit in hits
    ]


@dataclass
class PurgeResult:
    """What one purge did: documents found obsolete, Cassandra keys tombstoned per table, documents deleted, and
    documents kept because the stream rewrote them between the search and the delete."""

    source_id: str
    key: str
    vintage: str
    since: str
    found: int = 0
    cassandra: dict[str, int] | None = None
    es_deleted: int = 0
    es_kept: int = 0
    es_gone: int = 0
    waited_s: float = 0.0
    seconds: float = 0.0

    def line(self) -> str:
        tables = ", ".join(f"{t} {n}" for t, n in (self.cassandra or {}).items()) or "-"
        return (
            f"purged {self.source_id} {self.key} vintage={self.vintage} ingested before {self.since}: "
            f"{self.found} obsolete record(s); Cassandra keys deleted: {tables}; Elasticsearch documents deleted "
            f"{self.es_deleted}, kept (rewritten meanwhile) {self.es_kept}, already gone {self.es_gone}; "
            f"waited for the stream {self.waited_s:.0f}s; took {self.seconds:.1f}s"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- the purge (I/O) ----------------------------------------------------------------------------------------------


def count(es: Any, index: str, query: dict[str, Any]) -> int:
    return int(es.count(index=index, query=query, ignore_unavailable=True)["count"])


def wait_for_stream(
    es: Any, index: str, target: PurgeTarget, *, timeout: float, settle: float, poll: float = 2.0
) -> tuple[int, float]:
    """Wait until the stream has indexed the re-run: documents ingested at ``since`` exist and their number has
    not changed for ``settle`` seconds, or ``timeout`` passed. Returns (that number, seconds waited)."""
    started = time.monotonic()
    query = obsolete_query(target, newer=True)
    last, stable_since = -1, started
    while True:
        es.indices.refresh(index=index, ignore_unavailable=True)
        now_count, now = count(es, index, query), time.monotonic()
        if now_count != last:
            last, stable_since = now_count, now
        elif now_count > 0 and now - stable_since >= settle:
            return now_count, now - started
        if now - started >= timeout:
            log.warning(
                "%s: the stream has indexed %d record(s) of the re-run after %.0f s; purging anyway (records of "
                "the object may be missing from the stores until the stream writes them)",
                target.describe(),
                now_count,
                timeout,
            )
            return now_count, now - started
        time.sleep(poll)


def _obsolete_hits(es: Any, index: str, target: PurgeTarget, fields: list[str]) -> Iterator[list[dict[str, Any]]]:
    """Pages of the obsolete documents (hits with _index, _seq_no, _primary_term and the key fields)."""
    from elasticsearch import helpers

    page: list[dict[str, Any]] = []
    for hit in helpers.scan(
        es,
        index=index,
        query={"query": obsolete_query(target), "_source": fields, "seq_no_primary_term": True},
        size=CHUNK,
        scroll="5m",
        ignore_unavailable=True,
    ):
        page.append(hit)
        if len(page) >= CHUNK:
            yield page
            page = []
    if page:
        yield page


def _delete_rows(session: Any, statements: dict[str, Any], columns: dict[str, list[str]], docs: list[Any]) -> None:
    from cassandra.concurrent import execute_concurrent_with_args

    schema = load_schema()
    for table, stmt in statements.items():
        args = [
            (tombstone_timestamp(parse_instant(doc["vintage"]), since), *key_values(doc, columns[table], schema))
            for doc, since in docs
        ]
        execute_concurrent_with_args(session, stmt, args, concurrency=CONCURRENCY, raise_on_first_error=True)


def _no_document(result: Mapping[str, Any]) -> bool:
    error = result.get("error") or {}
    return result.get("status") == 409 and "no document was found" in str(error.get("reason", ""))


def _delete_docs(es: Any, hits: list[dict[str, Any]]) -> tuple[int, int, int]:
    """(deleted, kept because changed since the search, already gone); other errors raise."""
    from elasticsearch import helpers

    deleted = kept = gone = 0
    errors = []
    for ok, item in helpers.streaming_bulk(
        es, delete_actions(hits), chunk_size=CHUNK, raise_on_error=False, raise_on_exception=True, max_retries=3
    ):
        result = item.get("delete", {})
        status = result.get("status")
        if ok and result.get("result") == "deleted":
            deleted += 1
        elif status == 404 or result.get("result") == "not_found" or _no_document(result):
            gone += 1  # deleted since the search (a guarded delete of a missing document is a 409 too)
        elif status == 409:  # version conflict: the stream rewrote it (the re-run's record): keep it
            kept += 1
        else:
            errors.append(result)
    if errors:
        raise RuntimeError(f"Elasticsearch refused {len(errors)} delete(s), e.g. {errors[0]}")
    return deleted, kept, gone


def purge_object(
    target: PurgeTarget,
    *,
    es: Any,
    session: Any,
    schema: ObservationSchema | None = None,
    wait_timeout: float = 0.0,
    settle: float = 10.0,
) -> PurgeResult:
    """Delete the target's obsolete records from both Cassandra record tables and Elasticsearch (idempotent)."""
    schema = schema or load_schema()
    keyspace, index = schema.cassandra["keyspace"], schema.elasticsearch["write_alias"]
    started = time.monotonic()
    result = PurgeResult(
        target.source_id,
        target.key,
        target.vintage.isoformat() if target.vintage else "*",
        target.since.isoformat(),
        cassandra=dict.fromkeys(RECORD_TABLES, 0),
    )
    if wait_timeout > 0:
        _, result.waited_s = wait_for_stream(es, index, target, timeout=wait_timeout, settle=settle)
    columns = {table: key_columns(table, schema) for table in RECORD_TABLES}
    statements = {table: session.prepare(delete_cql(keyspace, table, cols)) for table, cols in columns.items()}
    fields = sorted({"vintage", *(c for cols in columns.values() for c in cols)})
    es.indices.refresh(index=index, ignore_unavailable=True)
    for hits in _obsolete_hits(es, index, target, fields):
        result.found += len(hits)
        _delete_rows(session, statements, columns, [(hit["_source"], target.since) for hit in hits])
        for table in RECORD_TABLES:
            result.cassandra[table] += len(hits)  # type: ignore[index]
        deleted, kept, gone = _delete_docs(es, hits)
        result.es_deleted += deleted
        result.es_kept += kept
        result.es_gone += gone
    es.indices.refresh(index=index, ignore_unavailable=True)
    result.seconds = round(time.monotonic() - started, 3)
    log.info("%s", result.line())
    return result


def purge_published(
    source_id: str,
    summaries: Iterable[Mapping[str, Any] | None],
    *,
    es: Any,
    session: Any,
    spec: Mapping[str, Any] | None = None,
    wait_timeout: float = 0.0,
    settle: float = 10.0,
) -> list[dict[str, Any]]:
    """Purge after each object a re-run published (the publish tasks' summaries; None for a failed publish)."""
    results = []
    for summary in summaries:
        if not summary:
            continue
        if summary.get("status", "published") != "published":
            log.info("%s was %s: nothing re-published, nothing purged", summary.get("object"), summary.get("status"))
            continue
        target = target_of(source_id, summary, spec)
        log.info("purging %s", target.describe())
        wait = wait_timeout if summary.get("records_out", 1) else 0.0  # nothing re-published: nothing to wait for
        result = purge_object(target, es=es, session=session, wait_timeout=wait, settle=settle)
        results.append(result.to_dict())
    return results


def purge_rerun(
    source_id: str, params: Mapping[str, Any], summaries: list[Mapping[str, Any] | None], config: Mapping[str, Any]
) -> list[dict[str, Any]] | None:
    """The ingest DAG's ``purge_obsolete`` task: None when the run is not a re-run, else one result per object.

    Clients come from the Airflow connections covidflow_cassandra and covidflow_elasticsearch.
    """
    from covidflow.catalog.specs import find_spec
    from covidflow.publish.rerun import parse_rerun

    rerun = parse_rerun(params)
    if rerun is None:
        log.info("not a re-run: nothing to purge")
        return None
    from covidflow.ops.report import client
    from covidflow.ops.tasks import cassandra_session

    log.info("re-run of %s: purging the obsolete records of %d published object(s)", rerun.describe(), len(summaries))
    session = cassandra_session()
    try:
        return purge_published(
            source_id,
            summaries,
            es=client(),
            session=session,
            spec=find_spec(source_id).data,
            wait_timeout=float(config["wait_for_stream_seconds"]),
            settle=float(config["settle_seconds"]),
        )
    finally:
        session.cluster.shutdown()
