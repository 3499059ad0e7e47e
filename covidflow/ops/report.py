"""Freshness verdicts and quality findings as documents in one Elasticsearch index (the dashboard's panel).

One document per (run, source, check, finding) with a deterministic id, so a retried task overwrites instead of
duplicating. Plain index + bulk: the local Elasticsearch has no ingest pipelines or painless.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from covidflow import settings

MAPPING: dict[str, Any] = {
    "dynamic": True,
    "properties": {
        "@timestamp": {"type": "date"},
        "kind": {"type": "keyword"},  # freshness | quality
        "dag_id": {"type": "keyword"},
        "run_id": {"type": "keyword"},
        "source_id": {"type": "keyword"},
        "check": {"type": "keyword"},
        "status": {"type": "keyword"},  # ok | late | not_judged | blocking | warning
        "severity": {"type": "keyword"},
        "series": {"type": "keyword"},
        "message": {"type": "text"},
        "reference_time": {"type": "date"},
        "last_vintage": {"type": "date"},
        "due": {"type": "date"},
        "vintage": {"type": "date"},
        "count": {"type": "long"},
        "signals": {"type": "object", "enabled": False},
        "details": {"type": "object", "enabled": False},
    },
}


def client(conn_id: str = settings.CONN_ELASTICSEARCH) -> Any:
    """The report's Elasticsearch client (covidflow.clients: the Airflow connection, credentials when set)."""
    from covidflow import clients

    return clients.elasticsearch(conn_id=conn_id, request_timeout=30, max_retries=2)


def doc_id(*parts: Any) -> str:
    return hashlib.sha1("|".join(str(p) for p in parts).encode()).hexdigest()


def ensure_index(es: Any, index: str) -> None:
    """Create the report index if missing, with the configured replicas (include/config/replication.yaml)."""
    from covidflow.replication import elasticsearch_settings

    if not es.indices.exists(index=index):
        replicas = elasticsearch_settings()["number_of_replicas"]
        es.indices.create(index=index, mappings=MAPPING, settings={"number_of_replicas": replicas}, timeout="30s")


def write(es: Any, index: str, docs: Iterable[Mapping[str, Any]], *, refresh: bool = True) -> int:
    """Index the documents (``_id`` key taken out as the id); raise if any one failed. Returns the count."""
    from elasticsearch.helpers import bulk

    ensure_index(es, index)
    now = datetime.now(UTC).isoformat()
    actions = []
    for doc in docs:
        body = {k: v for k, v in doc.items() if k != "_id"}
        body.setdefault("@timestamp", now)
        actions.append({"_index": index, "_id": doc["_id"], "_source": body})
    if not actions:
        return 0
    ok, errors = bulk(es, actions, refresh=refresh, raise_on_error=False, stats_only=False)
    if errors:
        raise RuntimeError(f"{len(errors)} of {len(actions)} report documents not indexed in {index}: {errors[:3]}")
    return ok
