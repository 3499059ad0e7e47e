"""Elasticsearch maintenance: template check, rollover, retention, reindex to a new mapping version.

Everything goes through the write alias (``covid-observations`` by default, configurable so tests can use
a throwaway one). The pure helpers (names, retention, alias actions, the id-by-id comparison of a reindex)
are unit-tested; the rest takes an ``elasticsearch.Elasticsearch`` client. The rebuild from Cassandra is in
``covidflow/index/rebuild.py``.

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


def is_newer(a: Any, b: Any) -> bool:
    """True when instant ``a`` is strictly later than ``b`` (ISO strings or epoch millis; None is never newer)."""
    a, b = _instant(a), _instant(b)
    return a is not None and (b is None or a > b)


def _instant(value: Any) -> dt.datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        return dt.datetime.fromtimestamp(value / 1000, tz=dt.UTC)
    parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


#: One id of an index (or set of indices), as the composite aggregation gives it:
#: (record_id, index or None, value, ingested_at in epoch millis, documents).
IdValue = tuple[str, str | None, Any, Any, int]


def _last_per_id(rows: Iterable[IdValue]) -> Iterator[tuple[IdValue, int]]:
    """Consecutive rows of one id collapsed to the last one (the newest index by name) and how many indices hold it."""
    last: IdValue | None = None
    held = 0
    for row in rows:
        if last is not None and row[0] != last[0]:
            yield last, held
            held = 0
        last, held = row, held + row[4]
    if last is not None:
        yield last, held


def compare_id_values(old: Iterable[IdValue], new: Iterable[IdValue], examples: int = 10) -> dict[str, Any]:
    """Merge-join of two id-sorted streams: every id of the old indices must be in the new one with the same value.

    An id held by several old indices counts as the copy in the last of them by name: EsWriter writes to the newest
    older index holding an id, so that copy is current. A different value (or ``ingested_at``) in the new index is
    accepted only when the new ``ingested_at`` is later (a newer version written straight to the new index).
    Ids only in the new index are writes made since the write switch. Pure: unit-tested.
    """
    report: dict[str, Any] = {"source_docs": 0, "source_ids": 0, "target_ids": 0, "only_in_target": 0,
                              "newer_in_target": 0, "held_by_several_sources": 0, "missing": 0, "differ": 0,
                              "missing_examples": [], "differ_examples": []}  # fmt: skip
    targets = iter(new)
    cur = next(targets, None)
    for (rid, index, value, ingested, _), held in _last_per_id(old):
        report["source_docs"] += held
        report["source_ids"] += 1
        report["held_by_several_sources"] += held > 1
        while cur is not None and cur[0] < rid:
            report["target_ids"] += 1
            report["only_in_target"] += 1
            cur = next(targets, None)
        if cur is None or cur[0] != rid:
            report["missing"] += 1
            if len(report["missing_examples"]) < examples:
                report["missing_examples"].append(f"{rid} (in {index})")
            continue
        report["target_ids"] += 1
        if (cur[2], cur[3]) != (value, ingested):
            if is_newer(cur[3], ingested):
                report["newer_in_target"] += 1
            else:
                report["differ"] += 1
                if len(report["differ_examples"]) < examples:
                    report["differ_examples"].append(f"{rid}: {index} value={value} ingested_at={ingested}, "
                                                     f"target value={cur[2]} ingested_at={cur[3]}")  # fmt: skip
        cur = next(targets, None)
    while cur is not None:
        report["target_ids"] += 1
        report["only_in_target"] += 1
        cur = next(targets, None)
    return report


def retired_before(mappings: Mapping[str, Mapping[str, Any]], now: dt.datetime, grace: dt.timedelta) -> list[str]:
    """Indices whose mapping ``_meta`` says they were retired by a reindex longer than ``grace`` ago."""
    out = []
    for index, body in sorted(mappings.items()):
        retired = ((body.get("mappings") or {}).get("_meta") or {}).get(RETIRED_AT)
        if retired and dt.datetime.fromisoformat(retired) + grace <= now:
            out.append(index)
    return out


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
    """The client of the connection ``conn_id`` (covidflow.clients), checked not red.

    Not ping(): GET / is 405 on the minimal distribution.
    """
    from covidflow import clients

    es = clients.elasticsearch(conn_id=conn_id, request_timeout=120)
    health = es.cluster.health(timeout="30s")
    if health["status"] == "red":
        raise RuntimeError(f"Elasticsearch of connection {conn_id} is red: {dict(health)}")
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


# ---------------------------------------------------------------------------------------------------------------
# Reindex under live writes: snapshot copy, catch-up by sequence number, full verification
# ---------------------------------------------------------------------------------------------------------------
#
# After the write switch EsWriter still writes ids the old indices hold into those indices (a replay or a
# correction must overwrite in place), so the old indices keep changing during the copy. The copy therefore
# starts from per-shard sequence-number marks, and every later round copies what changed above them.

REINDEX_MARKS = "covidflow_reindex_marks"  # target mapping _meta: {source index: {shard: seq_no}} copied up to


def get_sources(es: Any, index: str, ids: Sequence[str]) -> dict[str, dict[str, Any] | None]:
    """id -> ``_source`` in ``index`` (None when absent), read in real time."""
    docs = es.mget(index=index, ids=list(ids))["docs"] if ids else []
    return {d["_id"]: d.get("_source") if d.get("found") else None for d in docs}


def shard_checkpoints(es: Any, indices: Sequence[str]) -> dict[str, dict[str, int]]:
    """index -> shard -> local checkpoint of its primary: every operation at or below it is applied."""
    stats = es.indices.stats(index=list(indices), level="shards", metric="docs")["indices"]
    return {
        index: {
            shard: next(c["seq_no"]["local_checkpoint"] for c in copies if c["routing"]["primary"])
            for shard, copies in sorted(stats[index]["shards"].items())
        }
        for index in sorted(indices)
    }


def _meta(es: Any, index: str) -> dict[str, Any]:
    return dict(es.indices.get_mapping(index=index)[index]["mappings"].get("_meta") or {})


def saved_marks(es: Any, target: str) -> dict[str, dict[str, int]] | None:
    """The marks a (possibly failed) earlier run stored in the target, or None."""
    return _meta(es, target).get(REINDEX_MARKS)


def save_marks(es: Any, target: str, marks: dict[str, dict[str, int]] | None) -> None:
    """Store (None: drop) the marks in the target's mapping ``_meta``; put_mapping replaces ``_meta`` as a whole."""
    meta = _meta(es, target)
    if marks is None:
        meta.pop(REINDEX_MARKS, None)
    else:
        meta[REINDEX_MARKS] = marks
    es.indices.put_mapping(index=target, meta=meta)


def reindex_in_progress(es: Any, alias: str) -> str | None:
    """The target of a reindex of ``alias`` that has not swapped yet (its write index carries marks), or None."""
    indices = alias_indices(es, alias)
    writes = [index for index, info in indices.items() if info["is_write_index"]]
    if len(indices) > 1 and writes and saved_marks(es, writes[0]) is not None:
        return writes[0]
    return None


def block_writes(es: Any, indices: Sequence[str]) -> None:
    """Refuse writes to ``indices``; returns once writes in flight are done (``_block`` waits for them)."""
    es.indices.add_block(index=",".join(indices), block="write")


def unblock_writes(es: Any, indices: Sequence[str]) -> None:
    es.indices.put_settings(index=",".join(indices), settings={"index.blocks.write": False})


def copy_snapshot(
    es: Any, sources: Sequence[str], dest: str, path: str, batch_size: int, log: Any = print
) -> dict[str, int]:
    """Copy every source (``op_type=create``), newest index first: for an id held by two old indices the newest
    copy is the current one (EsWriter writes there), and the older one then meets a 409."""
    total = {"copied": 0, "kept_newer": 0}
    for source in sorted(sources, reverse=True):
        if path == "server":
            result = copy_server_side(es, [source], dest)
        else:
            result = copy_client_side(es, [source], dest, batch_size, log)
        log(f"copied {source} -> {dest}: {result['copied']} created, {result['kept_newer']} already there")
        total = {k: total[k] + result[k] for k in total}
    return total


def copy_changes(
    es: Any, sources: Sequence[str], dest: str, marks: Mapping[str, Mapping[str, int]], batch_size: int
) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    """Documents of the sources written above ``marks`` (their ``_seq_no``), copied over their copy in ``dest``.

    Returns the counts and the marks to resume from, taken before reading (a write after them is the next
    round's). Sources are read oldest first, so for an id in two of them the newest index's version is written
    last. The copy in ``dest`` is overwritten: EsWriter writes an id an old index holds only there, so a change
    above the marks is the id's latest version.
    """
    from elasticsearch import helpers

    resume = shard_checkpoints(es, sources)
    es.indices.refresh(index=",".join(sources))
    changed = written = 0
    for index in sorted(sources):
        for shard, mark in sorted(marks[index].items()):
            hits = helpers.scan(es, index=index, preference=f"_shards:{shard}", size=batch_size,
                                query={"query": {"range": {"_seq_no": {"gt": mark}}}})  # fmt: skip
            for batch in batched(hits, batch_size):
                changed += len(batch)
                actions = [{"_index": dest, "_id": h["_id"], "_source": h["_source"]} for h in batch]  # op: index
                ok, errors = helpers.bulk(es, actions, max_retries=3, raise_on_error=False)
                if errors:
                    raise RuntimeError(f"catch-up copy into {dest} failed: {errors[:3]}")
                written += ok
    return {"changed": changed, "written": written}, resume


def catch_up(
    es: Any, sources: Sequence[str], dest: str, batch_size: int, log: Any = print, *, until: int = 0, rounds: int = 5
) -> dict[str, int]:
    """Copy what changed in the sources since the stored marks, round after round, until a round finds at most
    ``until`` changes (or ``rounds`` ran); the marks advance in the target after each round."""
    totals = {"rounds": 0, "changed": 0, "written": 0}
    for _ in range(rounds):
        marks = saved_marks(es, dest)
        if marks is None:
            raise RuntimeError(f"{dest} has no {REINDEX_MARKS}: run the copy first")
        result, resume = copy_changes(es, sources, dest, marks, batch_size)
        save_marks(es, dest, resume)
        totals = {"rounds": totals["rounds"] + 1, **{k: totals[k] + result[k] for k in result}}
        log(
            f"catch-up round {totals['rounds']}: {result['changed']} documents changed in {list(sources)} since "
            f"the last round, {result['written']} written to {dest}"
        )
        if result["changed"] <= until:
            break
    return totals


def id_values(es: Any, indices: Sequence[str], page_size: int, *, by_index: bool = False) -> Iterator[IdValue]:
    """Every id of ``indices`` in id order with its value and ``ingested_at``: a composite aggregation over the
    ``record_id`` doc values, page by page (no documents fetched)."""
    sources: list[dict[str, Any]] = [{"id": {"terms": {"field": "record_id"}}}]
    if by_index:
        sources.append({"index": {"terms": {"field": "_index"}}})
    subs = {"value": {"max": {"field": "value"}}, "ingested_at": {"max": {"field": "ingested_at"}}}
    after = None
    while True:
        composite: dict[str, Any] = {"size": page_size, "sources": sources}
        if after:
            composite["after"] = after
        aggs = {"ids": {"composite": composite, "aggs": subs}}
        resp = es.options(request_timeout=300).search(index=",".join(indices), size=0, aggs=aggs)
        found = resp["aggregations"]["ids"]
        for b in found["buckets"]:
            yield b["key"]["id"], b["key"].get("index"), b["value"]["value"], b["ingested_at"]["value"], b["doc_count"]
        after = found.get("after_key")
        if not found["buckets"] or after is None:
            return


def verify_copy(es: Any, sources: Sequence[str], dest: str, page_size: int) -> dict[str, Any]:
    """The full id set and values of the sources against ``dest`` (compare_id_values), plus counts.

    ``problems`` lists why the copy is not complete: an id missing, a value differing, or source documents
    without a ``record_id`` (the aggregation could not see them).
    """
    es.indices.refresh(index=",".join([*sources, dest]))
    report = compare_id_values(id_values(es, sources, page_size, by_index=True), id_values(es, [dest], page_size))
    report["source_count"] = es.count(index=",".join(sources))["count"]
    report["target_count"] = es.count(index=dest)["count"]
    problems = []
    if report["missing"]:
        problems.append(f"{report['missing']} ids missing from {dest}, e.g. {report['missing_examples']}")
    if report["differ"]:
        problems.append(f"{report['differ']} ids with another value in {dest}, e.g. {report['differ_examples']}")
    if report["source_count"] > report["source_docs"]:  # documents the aggregation saw through their record_id
        problems.append(f"{report['source_count'] - report['source_docs']} source documents have no record_id")
    report["problems"] = problems
    return report


def copy_and_catch_up(
    es: Any, sources: Sequence[str], dest: str, path: str, batch_size: int, log: Any = print
) -> dict[str, Any]:
    """Steps 3-4 of the reindex (ADR 0011): marks, snapshot copy, then catch-up rounds while the old indices are
    still written. A re-run keeps the marks an earlier run stored: it only copies more, never less."""
    marks = saved_marks(es, dest)
    if marks is None or sorted(marks) != sorted(sources):
        marks = shard_checkpoints(es, sources)  # before the refresh: the scan sees everything at or below them
        save_marks(es, dest, marks)
        log(f"marks of {list(sources)} stored in {dest}: {marks}")
    else:
        log(f"resuming from the marks an earlier run stored in {dest}: {marks}")
    es.indices.refresh(index=",".join(sources))
    result = copy_snapshot(es, sources, dest, path, batch_size, log)
    caught = catch_up(es, sources, dest, batch_size, log, until=batch_size)
    es.indices.refresh(index=dest)
    return {**result, "caught_up": caught["written"], "catch_up_rounds": caught["rounds"]}


def finish_copy(
    es: Any, sources: Sequence[str], dest: str, batch_size: int, page_size: int, log: Any = print
) -> dict[str, Any]:
    """Steps 5-6 of the reindex: block writes to the old indices, copy the last changes, verify every id and value.

    While blocked, EsWriter's writes of ids the old indices hold fail and are retried; after the swap they go to
    the new index. When the verification fails (or anything raises) the block is lifted again, so the stream
    keeps writing until a re-run.
    """
    block_writes(es, sources)
    log(f"writes to {list(sources)} blocked (writes in flight finished)")
    try:
        caught = catch_up(es, sources, dest, batch_size, log, rounds=1)
        report = verify_copy(es, sources, dest, page_size)
    except BaseException:
        unblock_writes(es, sources)
        raise
    if report["problems"]:
        unblock_writes(es, sources)
        log(f"verification failed: writes to {list(sources)} unblocked again")
    return {**report, "final_catch_up": caught["written"]}
