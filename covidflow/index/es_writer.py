"""Index canonical records into Elasticsearch through the write alias, idempotently (``_id = record_id``).

The template and the first index carrying the write alias are created at job start if missing. Bulk
errors fail the write after bounded retries, so Spark does not commit the batch and replays it later.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from covidflow import settings
from covidflow.catalog.schema import ObservationSchema, load_schema
from covidflow.index.es_template import TEMPLATE_NAME, first_index_body, generate_template
from covidflow.normalise.stream import es_actions

log = logging.getLogger(__name__)
_CLIENTS: dict[str, Any] = {}
ID_LOOKUP_CHUNK = 5000  # ids per lookup, well under the default max_result_window (10,000)


def client(url: str | None = None) -> Any:
    """A cached client; the minimal server answers 405 on ``GET /``, so never ping()/info() it."""
    url = url or settings.ELASTICSEARCH_URL
    if url not in _CLIENTS:
        from elasticsearch import Elasticsearch

        _CLIENTS[url] = Elasticsearch(url, request_timeout=60, retry_on_timeout=True, max_retries=3)
    return _CLIENTS[url]


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


class EsWriter:
    def __init__(
        self, es: Any, schema: ObservationSchema | None = None, *, retry_for: float = 600.0, alias: str | None = None
    ) -> None:
        self.es = es
        self.alias = alias or write_alias(schema)
        self.retry_for = retry_for

    def already_in_older_indices(self, ids: list[str]) -> set[str]:
        """Ids already held by an index the alias no longer writes to: a batch replayed after a rollover.

        ``_id = record_id`` makes a replay overwrite in place, but only within one index: after a rollover the
        write alias points at a new index, and indexing the same id there would make a second copy. A record id
        is a hash of the record's identity and vintage, so the copy already indexed is the same record.
        """
        indices = self.es.indices.get_alias(name=self.alias)
        older = [name for name, body in indices.items() if not body["aliases"][self.alias].get("is_write_index")]
        if len(indices) < 2 or not older:
            return set()
        # Documents written just before the rollover may not be searchable yet; the older indices take no more
        # writes through the alias, so this refresh is a no-op except right after a rollover.
        self.es.indices.refresh(index=",".join(sorted(older)))
        found: set[str] = set()
        for start in range(0, len(ids), ID_LOOKUP_CHUNK):
            chunk = ids[start : start + ID_LOOKUP_CHUNK]
            resp = self.es.search(index=",".join(sorted(older)), query={"ids": {"values": chunk}}, size=len(chunk),
                                  source=False, track_total_hits=False)  # fmt: skip
            found.update(hit["_id"] for hit in resp["hits"]["hits"])
        return found

    def write(self, records: Iterable[dict[str, Any]]) -> int:
        """Documents indexed; retries failed items (and connection errors) until ``retry_for`` runs out."""
        from elasticsearch import helpers

        actions = es_actions(records, self.alias)
        total = len(actions)
        deadline = time.monotonic() + self.retry_for
        delay = 1.0
        checked_older = False
        while actions:
            failed_ids: set[str] = set()
            first_error: Any = None
            try:
                if not checked_older:
                    known = self.already_in_older_indices([a["_id"] for a in actions])
                    checked_older = True
                    if known:
                        log.info("elasticsearch: %d of %d records already in an older index of %s (a replay after "
                                 "a rollover): not indexed again", len(known), len(actions), self.alias)  # fmt: skip
                        actions = [a for a in actions if a["_id"] not in known]
                for ok, item in helpers.streaming_bulk(
                    self.es, actions, chunk_size=1000, raise_on_error=False, raise_on_exception=False
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
            actions = [a for a in actions if a["_id"] in failed_ids]
        return total
