"""The stream's Elasticsearch writer on the real server: a batch replayed after a rollover overwrites, never copies."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from itertools import islice
from typing import Any

import pytest

from covidflow.catalog.specs import find_spec
from covidflow.index.es_template import generate_template
from covidflow.index.es_writer import EsWriter
from covidflow.normalise.preview import run_file
from covidflow.settings import ELASTICSEARCH_URL

pytestmark = pytest.mark.integration


@pytest.fixture
def alias() -> Iterator[tuple[Any, str]]:
    """A write alias over a first index built from the project's template; all its indices deleted afterwards."""
    from elasticsearch import Elasticsearch

    es = Elasticsearch(ELASTICSEARCH_URL, request_timeout=60)
    name = f"cf-it-writer-{uuid.uuid4().hex[:8]}"
    tpl = generate_template()["template"]
    es.indices.create(index=f"{name}-000001", settings=tpl["settings"], mappings=tpl["mappings"],
                      aliases={name: {"is_write_index": True}})  # fmt: skip
    yield es, name
    es.indices.delete(index=",".join(es.indices.get(index=f"{name}-*")))
    es.close()


def count_by_index(es: Any, alias: str) -> dict[str, int]:
    es.indices.refresh(index=alias)
    return {name: es.count(index=name)["count"] for name in sorted(es.indices.get_alias(name=alias))}


def test_a_batch_replayed_after_a_rollover_overwrites_in_place_and_makes_no_copy(alias: tuple[Any, str]) -> None:
    es, name = alias
    spec = find_spec("spf_donnees_hospitalieres")
    records, _ = run_file(spec, spec.sample_path)
    batch = list(islice(records, 300))
    writer = EsWriter(es, alias=name, retry_for=30)

    assert writer.write(batch[:100]) == 100
    writer.write(batch[:100])  # a replay before any rollover: overwritten in place
    assert count_by_index(es, name) == {f"{name}-000001": 100}
    writer.write(batch[100:200])  # not refreshed yet when the rollover comes: the lookup must still see them

    rolled = es.indices.rollover(alias=name, settings={"number_of_replicas": 0})
    assert rolled["rolled_over"] and rolled["new_index"] == f"{name}-000002"
    held = writer.held_by_older_indices([r["record_id"] for r in batch])
    assert held == {r["record_id"]: f"{name}-000001" for r in batch[:200]}

    # The same 200 again (a replayed micro-batch, one value corrected by a spec fix) plus 100 new: the 200 are
    # overwritten where they are, only the new ones go to the new index.
    ain = next(r for r in batch[:200] if r["location_key"] == "FR-D01" and r["metric"] == "hospital_occupancy")
    replay = [{**r, "value": r["value"] + 1000} if r is ain else r for r in batch]
    assert writer.write(replay) == 300
    assert count_by_index(es, name) == {f"{name}-000001": 200, f"{name}-000002": 100}
    found = es.search(index=name, query={"ids": {"values": [r["record_id"] for r in batch]}}, size=1000)
    ids = [hit["_id"] for hit in found["hits"]["hits"]]
    assert len(ids) == len(set(ids)) == 300
    assert es.get(index=f"{name}-000001", id=ain["record_id"])["_source"]["value"] == ain["value"] + 1000
