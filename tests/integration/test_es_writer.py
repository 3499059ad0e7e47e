"""The stream's Elasticsearch writer on the real server: a batch replayed after a rollover overwrites, never copies;
record dicts and Arrow tables give the same documents."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from itertools import islice
from typing import Any

import pytest

from covidflow import clients
from covidflow.catalog.schema import arrow_schema
from covidflow.catalog.specs import find_spec
from covidflow.index.es_template import generate_template
from covidflow.index.es_writer import EsWriter
from covidflow.normalise.preview import run_file

pytestmark = pytest.mark.integration


@pytest.fixture
def alias() -> Iterator[tuple[Any, str]]:
    """A write alias over a first index built from the project's template; all its indices deleted afterwards."""

    es = clients.elasticsearch(cached=False, request_timeout=60)
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


def shaped(records: list[dict[str, Any]], shape: str) -> Any:
    """The records as the stream hands them: dicts, or an Arrow table of the canonical schema."""
    import pyarrow as pa

    return pa.Table.from_pylist(records, schema=arrow_schema()) if shape == "arrow" else records


class ShapedWriter(EsWriter):
    def __init__(self, es: Any, alias: str, shape: str) -> None:
        super().__init__(es, alias=alias, retry_for=30)
        self.shape = shape

    def write(self, records: Any) -> int:
        return super().write(shaped(records, self.shape))


@pytest.mark.parametrize("shape", ["dicts", "arrow"])
def test_a_batch_replayed_after_a_rollover_overwrites_in_place_and_makes_no_copy(
    alias: tuple[Any, str], shape: str
) -> None:
    es, name = alias
    spec = find_spec("spf_donnees_hospitalieres")
    records, _ = run_file(spec, spec.sample_path)
    batch = list(islice(records, 300))
    writer = ShapedWriter(es, name, shape)

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


def test_arrow_and_dicts_index_the_same_documents(alias: tuple[Any, str]) -> None:
    """Every field as stored, from both shapes: dates yyyy-MM-dd, instants ISO-8601 UTC, points, nulls."""
    es, name = alias
    picked = []
    for source in ("spf_donnees_hospitalieres", "jhu_csse_time_series_global"):
        spec = find_spec(source)
        picked += list(islice(run_file(spec, spec.sample_path)[0], 150))
    # Requests of 40 documents, 3 in flight: the 300 documents take several parallel requests.
    writer = EsWriter(es, alias=name, retry_for=30, bulk_docs=40, threads=3)
    assert writer.write(picked) == 300
    from_dicts = {d["_id"]: d["_source"] for d in es.mget(index=name, ids=[r["record_id"] for r in picked])["docs"]}
    from elasticsearch import helpers

    helpers.bulk(es, ({"_op_type": "delete", "_index": f"{name}-000001", "_id": r["record_id"]} for r in picked))
    assert count_by_index(es, name) == {f"{name}-000001": 0}
    assert writer.write(shaped(picked, "arrow")) == 300
    docs = es.mget(index=name, ids=[r["record_id"] for r in picked])["docs"]
    assert {d["_id"]: d["_source"] for d in docs} == from_dicts
    jhu = from_dicts[picked[-1]["record_id"]]
    assert jhu["location_point"] == picked[-1]["location_point"] and jhu["location_parent_key"] is None
    assert jhu["date"] == picked[-1]["date"].isoformat()
    assert jhu["vintage"] == picked[-1]["vintage"].isoformat() and jhu["vintage"].endswith("+00:00")
    assert count_by_index(es, name) == {f"{name}-000001": 300}
