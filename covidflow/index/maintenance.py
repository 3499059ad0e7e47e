"""Elasticsearch maintenance: template check, rollover, retention, reindex to a new mapping version, rebuild.

Everything goes through the write alias (``covid-observations`` by default, configurable so tests can use
a throwaway one). The pure helpers (names, retention, sample comparison, alias actions, Cassandra row to
document) are unit-tested; the rest takes an ``elasticsearch.Elasticsearch`` client.

Our local server is the minimal distribution: no ``reindex`` module, and ``GET /`` answers 405, so
nothing here calls ``ping()``/``info()``; cluster health is the liveness probe.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from covidflow.index.es_template import generate_template

RETIRED_AT = "covidflow_retired_at"  # mapping _meta key on an index taken out of the alias by a reindex
_GENERATION = re.compile(r"^(?P<prefix>.*)-(?P<n>\d{6})$")


# ---------------------------------------------------------------------------------------------------------------
# Pure helpers
# ---------------------------------------------------------------------------------------------------------------


def template_for(alias: str) -> dict[str, Any]:
    """The committed template, re-targeted at ``alias`` (identical to include/schemas/ for the real alias)."""
    body = generate_template()
    body["index_patterns"] = [f"{alias}-*"]
    body["_meta"]["write_alias"] = alias
    return body


def template_problems(live: Mapping[str, Any] | None, wanted: Mapping[str, Any]) -> list[str]:
    """Why the installed template does not match the schema (empty when it does)."""
    if live is None:
        return ["no index template installed"]
    problems = []
    live_version = (live.get("_meta") or {}).get("schema_version")
    if live_version != wanted["_meta"]["schema_version"]:
        problems.append(
            f"template schema_version {live_version}, observation.yaml is v{wanted['_meta']['schema_version']}"
        )
    if live.get("version") != wanted["version"]:
        problems.append(f"template version {live.get('version')}, expected {wanted['version']}")
    if list(live.get("index_patterns", [])) != list(wanted["index_patterns"]):
        problems.append(f"index_patterns {live.get('index_patterns')}, expected {wanted['index_patterns']}")
    live_props = ((live.get("template") or {}).get("mappings") or {}).get("properties", {})
    want_props = wanted["template"]["mappings"]["properties"]
    for field in sorted(set(live_props) | set(want_props)):
        if live_props.get(field) != want_props.get(field):
            problems.append(f"mapping of {field!r}: live {live_props.get(field)}, schema {want_props.get(field)}")
    return problems


def first_index(alias: str) -> str:
    """The index a fresh alias starts on (``<alias>-000001``), as es_template.first_index_body names it."""
    return f"{alias}-000001"


def versioned_index(alias: str, version: int) -> str:
    """First index of mapping version ``version``: still matches the template's ``<alias>-*`` pattern."""
    return f"{alias}-v{version}-000001"


def next_generation(index: str) -> str:
    """``x-000001`` -> ``x-000002``, the name ``_rollover`` gives the next index."""
    m = _GENERATION.match(index)
    if not m:
        raise ValueError(f"{index!r} does not end in a 6-digit generation")
    return f"{m['prefix']}-{int(m['n']) + 1:06d}"


def past_retention(indices: Mapping[str, Mapping[str, Any]], now: dt.datetime, days: float) -> list[tuple[str, float]]:
    """(index, age in days) for indices created more than ``days`` ago, never the write index."""
    out = []
    for name, info in sorted(indices.items()):
        if info.get("is_write_index"):
            continue
        created = dt.datetime.fromtimestamp(int(info["creation_date"]) / 1000, tz=dt.UTC)
        age = (now - created).total_seconds() / 86400
        if age > days:
            out.append((name, round(age, 3)))
    return out


def has_reindex_module(nodes_plugins: Mapping[str, Any]) -> bool:
    """True when every node of ``GET _nodes/plugins`` lists the ``reindex`` module (server-side _reindex works)."""
    nodes = nodes_plugins.get("nodes", {})
    return bool(nodes) and all(any(m.get("name") == "reindex" for m in n.get("modules", [])) for n in nodes.values())


def write_switch_actions(alias: str, old_indices: Sequence[str], new_index: str) -> list[dict[str, Any]]:
    """One ``_aliases`` body: new writes go to ``new_index``; old indices stay readable, no longer written."""
    actions: list[dict[str, Any]] = [
        {"add": {"index": old, "alias": alias, "is_write_index": False}} for old in sorted(old_indices)
    ]
    actions.append({"add": {"index": new_index, "alias": alias, "is_write_index": True}})
    return actions


def final_swap_actions(alias: str, old_indices: Sequence[str], new_index: str) -> list[dict[str, Any]]:
    """One ``_aliases`` body: readers and writers move to ``new_index`` alone, atomically."""
    actions: list[dict[str, Any]] = [{"remove": {"index": old, "alias": alias}} for old in sorted(old_indices)]
    actions.append({"add": {"index": new_index, "alias": alias, "is_write_index": True}})
    return actions


def compare_samples(old: Mapping[str, Mapping[str, Any]], new: Mapping[str, Mapping[str, Any] | None]) -> list[str]:
    """Differences between sampled old documents and their copies (_id -> _source).

    A copy may legitimately differ when a newer version of the record arrived during the reindex (it won
    over the copy): that is recognised by a later ``ingested_at`` and not reported.
    """
    problems = []
    for doc_id, source in sorted(old.items()):
        copy = new.get(doc_id)
        if copy is None:
            problems.append(f"{doc_id}: missing from the new index")
        elif copy != source and not str(copy.get("ingested_at", "")) > str(source.get("ingested_at", "")):
            fields = sorted(k for k in set(source) | set(copy) if source.get(k) != copy.get(k))
            problems.append(f"{doc_id}: differs in {fields}")
    return problems


def retired_before(mappings: Mapping[str, Mapping[str, Any]], now: dt.datetime, grace: dt.timedelta) -> list[str]:
    """Indices whose mapping ``_meta`` says they were retired by a reindex longer than ``grace`` ago."""
    out = []
    for index, body in sorted(mappings.items()):
        retired = ((body.get("mappings") or {}).get("_meta") or {}).get(RETIRED_AT)
        if retired and dt.datetime.fromisoformat(retired) + grace <= now:
            out.append(index)
    return out


def row_to_doc(row: Mapping[str, Any], fields: Sequence[str]) -> dict[str, Any]:
    """A Cassandra row as the index document: ISO dates/instants, geo_point as lat/lon, nulls left out."""
    doc: dict[str, Any] = {}
    for name in fields:
        value = row.get(name)
        if value is None:
            continue
        if isinstance(value, dt.datetime):
            value = (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).isoformat().replace("+00:00", "Z")
        elif isinstance(value, dt.date):
            value = value.isoformat()
        elif hasattr(value, "lat") and hasattr(value, "lon"):
            value = {"lat": value.lat, "lon": value.lon}
        elif type(value).__name__ == "Date":  # cassandra.util.Date (dates outside datetime's range too)
            value = str(value)
        doc[name] = value
    return doc


def batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


# ---------------------------------------------------------------------------------------------------------------
# Client-side operations
# ---------------------------------------------------------------------------------------------------------------


def client(conn_id: str) -> Any:
    """The Python client from the provider's ElasticsearchPythonHook, built from the Airflow connection.

    ElasticsearchPythonHook takes hosts rather than a conn id, so the connection is resolved here.
    """
    from airflow.providers.elasticsearch.hooks.elasticsearch import ElasticsearchPythonHook
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(conn_id)
    url = f"{conn.schema or 'http'}://{conn.host}:{conn.port or 9200}"
    args: dict[str, Any] = {"request_timeout": 120}
    if conn.login:
        args["basic_auth"] = (conn.login, conn.password)
    es = ElasticsearchPythonHook(hosts=[url], es_conn_args=args).get_conn
    health = es.cluster.health(timeout="30s")  # not ping(): GET / is 405 on the minimal distribution
    if health["status"] == "red":
        raise RuntimeError(f"Elasticsearch at {url} is red: {dict(health)}")
    return es


def live_template(es: Any, name: str) -> dict[str, Any] | None:
    from elasticsearch import NotFoundError

    try:
        found = es.indices.get_index_template(name=name)["index_templates"]
    except NotFoundError:
        return None
    return found[0]["index_template"] if found else None


def put_template(es: Any, alias: str) -> dict[str, Any]:
    """Install the schema's template for ``alias`` (same name as the alias); idempotent."""
    body = template_for(alias)
    es.indices.put_index_template(
        name=alias,
        index_patterns=body["index_patterns"],
        priority=body["priority"],
        version=body["version"],
        meta=body["_meta"],
        template=body["template"],
    )
    return body


def alias_indices(es: Any, alias: str) -> dict[str, dict[str, Any]]:
    """index -> {is_write_index, creation_date} for every index behind ``alias`` ({} when it does not exist)."""
    if not es.indices.exists_alias(name=alias):
        return {}
    aliases = es.indices.get_alias(name=alias)
    settings = es.indices.get_settings(index=list(aliases), name="index.creation_date")
    return {
        index: {
            "is_write_index": bool(body["aliases"][alias].get("is_write_index", len(aliases) == 1)),
            "creation_date": settings[index]["settings"]["index"]["creation_date"],
        }
        for index, body in sorted(aliases.items())
    }


def ensure_alias(es: Any, alias: str) -> str | None:
    """Create ``<alias>-000001`` carrying the write alias when the alias is missing; the created name or None."""
    from elasticsearch import BadRequestError

    if es.indices.exists_alias(name=alias):
        return None
    name = first_index(alias)
    try:
        es.indices.create(index=name, aliases={alias: {"is_write_index": True}})
    except BadRequestError as exc:
        if "resource_already_exists" not in str(exc):
            raise
        return None
    return name


def copy_client_side(es: Any, sources: Sequence[str], dest: str, batch_size: int, log: Any = print) -> dict[str, int]:
    """scan + bulk with op_type=create: a document already in ``dest`` (a newer write) is kept, not overwritten."""
    from elasticsearch import helpers

    copied = kept = 0
    actions = (
        {"_op_type": "create", "_index": dest, "_id": hit["_id"], "_source": hit["_source"]}
        for hit in helpers.scan(es, index=",".join(sources), size=batch_size, query={"query": {"match_all": {}}})
    )
    for ok, item in helpers.streaming_bulk(
        es, actions, chunk_size=batch_size, raise_on_error=False, raise_on_exception=True, max_retries=3
    ):
        result = item["create"]
        if ok:
            copied += 1
        elif result.get("status") == 409:
            kept += 1
        else:
            raise RuntimeError(f"bulk copy into {dest} failed for {result.get('_id')}: {result.get('error')}")
        if (copied + kept) % (batch_size * 10) == 0:
            log(f"client-side copy: {copied} copied, {kept} already newer in {dest}")
    return {"copied": copied, "kept_newer": kept}


def copy_server_side(es: Any, sources: Sequence[str], dest: str) -> dict[str, int]:
    """``_reindex`` with op_type=create and conflicts=proceed (full distribution only)."""
    result = es.reindex(
        source={"index": list(sources)},
        dest={"index": dest, "op_type": "create"},
        conflicts="proceed",
        wait_for_completion=True,
        refresh=True,
        request_timeout=3600,
    )
    if result.get("failures"):
        raise RuntimeError(f"_reindex into {dest} reported failures: {result['failures'][:3]}")
    return {"copied": int(result["created"]), "kept_newer": int(result["version_conflicts"])}


def missing_ids(es: Any, sources: Sequence[str], dest: str, batch_size: int) -> list[str]:
    """Ids present in a source index but not in ``dest``: the proof that nothing was lost."""
    from elasticsearch import helpers

    missing: list[str] = []
    hits = helpers.scan(es, index=",".join(sources), size=batch_size, query={"query": {"match_all": {}}}, _source=False)
    for batch in batched((h["_id"] for h in hits), batch_size):
        found = es.mget(index=dest, ids=batch, source=False)["docs"]
        missing += [d["_id"] for d in found if not d.get("found")]
    return missing


def sample_sources(es: Any, index: str | Sequence[str], size: int) -> dict[str, dict[str, Any]]:
    """Up to ``size`` documents, spread by a seeded random_score (no scripting needed)."""
    body = {"function_score": {"query": {"match_all": {}}, "random_score": {"seed": 42, "field": "_seq_no"}}}
    index = index if isinstance(index, str) else ",".join(index)
    hits = es.search(index=index, query=body, size=size)["hits"]["hits"]
    return {h["_id"]: h["_source"] for h in hits}


def get_sources(es: Any, index: str, ids: Sequence[str]) -> dict[str, dict[str, Any] | None]:
    docs = es.mget(index=index, ids=list(ids))["docs"] if ids else []
    return {d["_id"]: d.get("_source") if d.get("found") else None for d in docs}
