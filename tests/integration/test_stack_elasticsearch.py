"""The local stack's Elasticsearch, through the official 8.x client: health, index/search, rollover, templates.

Assumes `covidflow stack up elasticsearch` ran first; an unreachable node fails the tests (never skips).
The integ-test-zip distribution has no ``rest-root`` module, so ``GET /`` (``client.info()``/``ping()``)
is not used here: the cluster health API is the reachability check.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from elasticsearch import ConnectionError as ESConnectionError
from elasticsearch import Elasticsearch

from covidflow import clients
from covidflow.settings import ELASTICSEARCH_URL

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def es() -> Iterator[Elasticsearch]:
    client = clients.elasticsearch(cached=False, request_timeout=30, max_retries=0)
    try:
        client.cluster.health(timeout="5s")
    except ESConnectionError as exc:
        client.close()
        error = exc
    else:
        error = None
    if error is not None:  # outside the except block, so the failure shows only our message
        pytest.fail(
            f"Elasticsearch is not reachable at {ELASTICSEARCH_URL} ({error}); "
            "start it with `covidflow stack up elasticsearch`",
            pytrace=False,
        )
    yield client
    client.close()


@pytest.fixture
def prefix(es: Elasticsearch) -> Iterator[str]:
    """A unique name prefix; every index and template under it is deleted afterwards."""
    name = f"cf-it-{uuid.uuid4().hex[:10]}"
    yield name
    # Deletes need exact names (action.destructive_requires_name is true by default): list, then delete.
    indices = list(es.indices.get(index=f"{name}*", allow_no_indices=True))
    if indices:
        es.indices.delete(index=",".join(indices))
    templates = es.options(ignore_status=404).indices.get_index_template(name=f"{name}*").get("index_templates", [])
    for template in templates:
        es.indices.delete_index_template(name=template["name"])
    assert not list(es.indices.get(index=f"{name}*", allow_no_indices=True))


def test_cluster_health_green_or_yellow(es: Elasticsearch) -> None:
    health = es.cluster.health(wait_for_status="yellow", timeout="10s")
    assert health["status"] in ("green", "yellow")
    assert health["cluster_name"] == "covidflow"
    assert health["number_of_nodes"] == 1


def test_index_refresh_search_exact_values(es: Elasticsearch, prefix: str) -> None:
    index = f"{prefix}-cases"
    es.indices.create(
        index=index,
        settings={"number_of_shards": 1, "number_of_replicas": 0},
        mappings={
            "properties": {
                "region": {"type": "keyword"},
                "day": {"type": "date"},
                "confirmed": {"type": "long"},
                "rate": {"type": "double"},
            }
        },
    )
    doc = {"region": "FR-IDF", "day": "2020-03-01", "confirmed": 9_876_543_210, "rate": 0.125}
    es.index(index=index, id="FR-IDF|2020-03-01", document=doc)
    es.index(index=index, id="DE-BY|2020-03-01", document={**doc, "region": "DE-BY", "confirmed": 3})
    es.indices.refresh(index=index)

    found = es.search(index=index, query={"term": {"region": "FR-IDF"}})

    assert found["hits"]["total"]["value"] == 1
    hit = found["hits"]["hits"][0]
    assert hit["_id"] == "FR-IDF|2020-03-01"
    assert hit["_source"] == doc
    total = es.search(index=index, size=0, aggs={"confirmed": {"sum": {"field": "confirmed"}}})
    assert total["aggregations"]["confirmed"]["value"] == 9_876_543_213


def test_rollover_on_alias(es: Elasticsearch, prefix: str) -> None:
    alias = f"{prefix}-write"
    first, second = f"{prefix}-000001", f"{prefix}-000002"
    es.indices.create(index=first, aliases={alias: {"is_write_index": True}}, settings={"number_of_replicas": 0})
    es.index(index=alias, id="1", document={"n": 1}, refresh=True)

    not_yet = es.indices.rollover(alias=alias, conditions={"max_docs": 2})
    assert not_yet["rolled_over"] is False
    rolled = es.indices.rollover(alias=alias, conditions={"max_docs": 1}, settings={"number_of_replicas": 0})
    assert rolled["rolled_over"] is True
    assert (rolled["old_index"], rolled["new_index"]) == (first, second)

    es.index(index=alias, id="2", document={"n": 2}, refresh=True)
    assert es.get(index=second, id="2")["_source"] == {"n": 2}
    aliases = es.indices.get_alias(name=alias)
    assert aliases[second]["aliases"][alias]["is_write_index"] is True
    assert aliases[first]["aliases"][alias]["is_write_index"] is False


def test_composable_index_template_applies(es: Elasticsearch, prefix: str) -> None:
    template = f"{prefix}-template"
    es.indices.put_index_template(
        name=template,
        index_patterns=[f"{prefix}-daily-*"],
        priority=500,
        template={
            "settings": {"number_of_shards": 1, "number_of_replicas": 0},
            "mappings": {"properties": {"region": {"type": "keyword"}, "confirmed": {"type": "long"}}},
        },
    )
    index = f"{prefix}-daily-2020.03.01"
    es.index(index=index, id="1", document={"region": "FR-IDF", "confirmed": "12"}, refresh=True)

    mapping = es.indices.get_mapping(index=index)[index]["mappings"]["properties"]
    assert mapping["region"] == {"type": "keyword"}
    assert mapping["confirmed"] == {"type": "long"}
    assert es.indices.get_settings(index=index)[index]["settings"]["index"]["number_of_replicas"] == "0"
    stored = es.indices.get_index_template(name=template)["index_templates"][0]
    assert stored["index_template"]["index_patterns"] == [f"{prefix}-daily-*"]


def test_security_is_on_every_request_needs_the_login(es: Elasticsearch, monkeypatch: pytest.MonkeyPatch) -> None:
    """Security is on: no answer without the login or with a wrong password; the connection's login is a superuser."""
    import json
    import os
    import urllib.error
    import urllib.request

    from elasticsearch import AuthenticationException

    from covidflow import settings

    with pytest.raises(urllib.error.HTTPError) as anonymous:
        urllib.request.urlopen(f"{ELASTICSEARCH_URL}/_cluster/health", timeout=10)
    assert anonymous.value.code == 401
    me = es.security.authenticate()
    assert (me["username"], me["roles"], me["authentication_realm"]["type"]) == ("covidflow", ["superuser"], "file")
    name = f"AIRFLOW_CONN_{settings.CONN_ELASTICSEARCH.upper()}"
    conn = json.loads(os.environ[name])
    monkeypatch.setenv(name, json.dumps({**conn, "password": conn["password"] + "-wrong"}))
    with pytest.raises(AuthenticationException):
        clients.elasticsearch(cached=False, max_retries=0).cluster.health()
