"""Index canonical records into Elasticsearch through the write alias, idempotently (``_id = record_id``).

The template and the first index carrying the write alias are created at job start if missing. Documents go
in bulk requests bounded by count and bytes, several in flight (``helpers.parallel_bulk``): one request at a
time left Elasticsearch idle while the client serialised the next one (docs/decisions/0009). Bulk errors fail
the write after bounded retries, so Spark does not commit the batch and replays it later. Input is a list of
canonical record dicts or a ``pyarrow.Table`` of ``arrow_schema()`` (documents then built column-wise).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from datetime import UTC, date, datetime
from functools import cache
from typing import Any

from covidflow import clients
from covidflow.catalog.schema import ObservationSchema, load_schema
from covidflow.index.es_template import TEMPLATE_NAME, first_index_body, generate_template
from covidflow.store.cassandra_writer import canonical_table

log = logging.getLogger(__name__)
ID_LOOKUP_CHUNK = 5000  # ids per mget request
#: Bulk requests: at most this many documents and bytes each (~1 KB per document: ~2 MB requests), and this many
#: in flight. Measured in bench/store_writers.py on the local 2-core stack.
BULK_DOCS = 2000
BULK_BYTES = 8 * 1024 * 1024
BULK_THREADS = 2


#: The Elasticsearch factory (covidflow.clients): connection or settings, cached per endpoint; ``url`` replaces the
#: address only.
client = clients.elasticsearch


def write_alias(schema: ObservationSchema | None = None) -> str:
    return (schema or load_schema()).elasticsearch["write_alias"]


def ensure_index(es: Any, schema: ObservationSchema | None = None) -> str:
    """Put the template (idempotent) and create the first index with the write alias unless the alias exists."""
    schema = schema or load_schema()
    es.indices.put_index_template(name=TEMPLATE_NAME, **generate_template(schema))
    alias = write_alias(schema)
    if not es.indices.exists_alias(name=alias):
        name, body = first_index_body(schema)
        try:
            es.indices.create(index=name, **body)
        except Exception as exc:  # two starters racing: the other one created it
            if "resource_already_exists" not in str(exc):
                raise
    es.cluster.health(index=alias, wait_for_status="yellow", timeout="60s")
    return alias


# -- documents (pure) -------------------------------------------------------------------------------------


@cache
def _temporal_fields() -> tuple[str, ...]:
    """The canonical fields es_document formats (dates and instants); the others are JSON-ready as they are."""
    return tuple(f.name for f in load_schema().fields if f.type in ("date", "timestamp"))


def es_document(record: dict[str, Any]) -> dict[str, Any]:
    """JSON-ready document: dates as yyyy-MM-dd, instants as ISO-8601 UTC."""
    doc = {}
    for name, value in record.items():
        if isinstance(value, datetime):
            value = value.astimezone(UTC).isoformat()
        elif isinstance(value, date):
            value = value.isoformat()
        doc[name] = value
    return doc


def es_actions(records: Iterable[dict[str, Any]], index: str) -> list[dict[str, Any]]:
    """Bulk ``index`` actions with ``_id = record_id``: a replay overwrites the same document.

    The documents are ``es_document``'s, built by formatting only the schema's date and timestamp fields, each
    distinct value once (a batch repeats a few days and vintages): ``es_document`` per record cost as much as the
    JSON encoding itself.
    """
    text: dict[tuple[type, Any], str] = {}
    actions = []
    for record in records:
        doc = dict(record)
        for name in _temporal_fields():
            value = doc.get(name)
            if value is not None:
                key = (type(value), value)
                formatted = text.get(key)
                if formatted is None:
                    formatted = text[key] = es_document({name: value})[name]
                doc[name] = formatted
        actions.append({"_op_type": "index", "_index": index, "_id": record["record_id"], "_source": doc})
    return actions


def _iso_column(column: Any, kind: type) -> list[str | None]:
    """A date or timestamp column as the strings ``es_document`` makes, each distinct value formatted once."""
    import pyarrow as pa

    encoded = column.combine_chunks().dictionary_encode()
    values = encoded.dictionary.to_pylist()
    text = [v.astimezone(UTC).isoformat() if kind is datetime else v.isoformat() for v in values]
    return pa.array(text, pa.string()).take(encoded.indices).to_pylist()


def arrow_documents(table: Any) -> list[dict[str, Any]]:
    """``es_document`` of every row of a canonical Arrow table, built from whole columns."""
    import pyarrow as pa

    names = table.column_names
    columns = []
    for field in table.schema:
        column = table.column(field.name)
        if pa.types.is_timestamp(field.type):
            columns.append(_iso_column(column, datetime))
        elif pa.types.is_date(field.type):
            columns.append(_iso_column(column, date))
        else:
            columns.append(column.to_pylist())
    return [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]


def arrow_actions(table: Any, index: str) -> list[dict[str, Any]]:
    """``es_actions`` of a canonical Arrow table."""
    ids = table.column("record_id").to_pylist()
    return [
        {"_op_type": "index", "_index": index, "_id": rid, "_source": doc}
        for rid, doc in zip(ids, arrow_documents(table), strict=True)
    ]


class EsWriter:
    def __init__(
        self,
        es: Any,
        schema: ObservationSchema | None = None,
        *,
        retry_for: float = 600.0,
        alias: str | None = None,
        bulk_docs: int = BULK_DOCS,
        bulk_bytes: int = BULK_BYTES,
        threads: int = BULK_THREADS,
    ) -> None:
        self.es = es
        self.schema = schema or load_schema()
        self.alias = alias or write_alias(self.schema)
        self.retry_for = retry_for
        self.bulk_docs = bulk_docs
        self.bulk_bytes = bulk_bytes
        self.threads = threads

    def held_by_older_indices(self, ids: list[str]) -> dict[str, str]:
        """id -> the older index (no longer the alias's write index) that already holds it: a replay after a rollover.

        ``_id = record_id`` makes a replay overwrite in place, but only within one index: after a rollover the write
        alias points at a new index, and indexing the same id there would make a second copy. Those ids are sent to
        the index that holds them instead, so a replay with a corrected value still overwrites. ``mget`` reads in
        real time: documents written just before the rollover are found even before a refresh.
        """
        indices = self.es.indices.get_alias(name=self.alias)
        older = sorted(name for name, body in indices.items()
                       if not body["aliases"][self.alias].get("is_write_index"))  # fmt: skip
        if len(indices) < 2:
            return {}
        held: dict[str, str] = {}
        for index in older:  # oldest first: a copy left by the old behaviour goes to the newest older index
            for start in range(0, len(ids), ID_LOOKUP_CHUNK):
                resp = self.es.mget(index=index, ids=ids[start : start + ID_LOOKUP_CHUNK], source=False)
                held.update((doc["_id"], index) for doc in resp["docs"] if doc.get("found"))
        return held

    def write(self, records: Iterable[dict[str, Any]] | Any) -> int:
        """Documents indexed; retries failed items (and connection errors) until ``retry_for`` runs out.

        ``records``: canonical record dicts or a ``pyarrow.Table`` with exactly ``arrow_schema()``.
        """
        from elasticsearch import helpers

        table = canonical_table(records, self.schema)
        actions = arrow_actions(table, self.alias) if table is not None else es_actions(records, self.alias)
        total = len(actions)
        deadline = time.monotonic() + self.retry_for
        delay = 1.0
        while actions:
            failed_ids: set[str] = set()
            first_error: Any = None
            try:
                # Looked up on every attempt, so a rollover during the retries is seen too.
                held = self.held_by_older_indices([a["_id"] for a in actions])
                if held:
                    log.info("elasticsearch: %d of %d records already in an older index of %s (a replay after "
                             "a rollover): overwritten there", len(held), len(actions), self.alias)  # fmt: skip
                    actions = [{**a, "_index": held.get(a["_id"], a["_index"])} for a in actions]
                for ok, item in helpers.parallel_bulk(
                    self.es,
                    actions,
                    thread_count=self.threads,
                    queue_size=self.threads,
                    chunk_size=self.bulk_docs,
                    max_chunk_bytes=self.bulk_bytes,
                    raise_on_error=False,
                    raise_on_exception=False,
                ):
                    if not ok:
                        info = next(iter(item.values()))
                        failed_ids.add(info.get("_id"))
                        first_error = first_error or info.get("error") or info
            except Exception as exc:  # connection refused etc.: retry everything
                failed_ids = {a["_id"] for a in actions}
                first_error = exc
            if not failed_ids:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(failed_ids)} Elasticsearch writes failed; first: {first_error!r}")
            log.warning("elasticsearch: %d/%d items failed (%r); retry in %.0fs",
                        len(failed_ids), len(actions), first_error, delay)  # fmt: skip
            time.sleep(delay)
            delay = min(delay * 2, 30.0)
            actions = [{**a, "_index": self.alias} for a in actions if a["_id"] in failed_ids]
        return total
