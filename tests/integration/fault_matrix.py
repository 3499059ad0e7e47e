"""The fault matrix of issue 14: each fault test counts what it sent, what each store holds, what is duplicated and
what is lost, asserts 0 lost and 0 duplicated, and records its row here. `python scripts/fault_matrix.py` prints
the rows of the last run as the README's table.

Counted over the records the test expects (record ids with their values):
- Cassandra: rows of ``observations_by_vintage`` in the expected partitions, by record id and value;
- Elasticsearch: every hit for the expected (source, vintage) pairs through the read alias, so a document held
  by two indices (a reindex gone wrong) counts twice;
- duplicated: hits beyond one per record id, plus rows or hits with an id nobody sent;
- lost: expected records missing, or holding another value, in either store.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from covidflow.stack.home import StackHome


def matrix_path() -> Path:
    return StackHome.from_env().root / "reports" / "fault-matrix.json"


def store_figures(expected: dict[str, dict[str, Any]]) -> dict[str, int]:
    """What the stores hold of ``expected`` (record id -> canonical record)."""
    from elasticsearch import helpers
    from test_e2e import cassandra_by_vintage

    from covidflow.index.es_writer import client

    want = {rid: r["value"] for rid, r in expected.items()}
    cassandra = cassandra_by_vintage(expected)
    es = client()
    es.indices.refresh(index="covid-observations")
    hits: list[tuple[str, float]] = []
    for source, vintage in sorted({(r["source_id"], r["vintage"].isoformat()) for r in expected.values()}):
        query = {"query": {"bool": {"filter": [{"term": {"source_id": source}}, {"term": {"vintage": vintage}}]}}}
        hits += [(h["_id"], h["_source"]["value"]) for h in helpers.scan(es, index="covid-observations",
                                                                          query=query, _source=["value"])]  # fmt: skip
    es_ids = {rid for rid, _ in hits}
    stray = len(set(cassandra) - set(want)) + len(es_ids - set(want))
    right_in_es = {rid for rid, value in hits if want.get(rid) == value}
    right_in_cassandra = {rid for rid, value in cassandra.items() if want.get(rid) == value}
    return {
        "sent": len(want),
        "stored_cassandra": len(right_in_cassandra),
        "stored_elasticsearch": len(right_in_es),
        "duplicated": len(hits) - len(es_ids) + stray,
        "lost": len(set(want) - (right_in_cassandra & right_in_es)),
    }


def record(row: str, figures: dict[str, int], **details: Any) -> dict[str, int]:
    """Add (or replace) this fault's row in the matrix of the current stack, then return the figures."""
    path = matrix_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = json.loads(path.read_text()) if path.exists() else {}
    rows[row] = {**figures, **details, "measured_at": datetime.now(UTC).isoformat(timespec="seconds")}
    path.write_text(json.dumps(rows, indent=2, sort_keys=True))
    return figures


def assert_clean(row: str, expected: dict[str, dict[str, Any]], **details: Any) -> None:
    """Record the row, then require 0 lost, 0 duplicated and every record in both stores."""
    figures = record(row, store_figures(expected), **details)
    assert figures["lost"] == 0 and figures["duplicated"] == 0, (row, figures)
    assert figures["stored_cassandra"] == figures["stored_elasticsearch"] == figures["sent"], (row, figures)
