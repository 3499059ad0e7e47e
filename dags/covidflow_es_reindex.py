"""Elasticsearch reindex to a new mapping version, without losing documents written meanwhile."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import Param, dag, get_current_context, task

from covidflow import settings
from covidflow.ops.callbacks import dag_defaults, on_failure

DOC = """
### covidflow Elasticsearch reindex (mapping version change)

Run by hand after `observation.yaml` changes version. Steps, each idempotent so a failed run can be re-run:

- `cleanup`: deletes indices retired by an earlier reindex once their grace period is over.
- `plan`: target index `<alias>-v<version>-000001`; sources = every other index behind the alias.
- `switch_writes`: installs the schema's template, creates the target, then **one `_aliases` call** makes it
  the write index: new ids land there. The stream's `EsWriter` still writes ids an old index holds into
  that old index (a replay or correction overwrites in place), so the old indices keep changing.
- `copy`: stores per-shard `_seq_no` marks of the old indices in the target's `_meta`, copies a snapshot
  (server-side `_reindex` when every node has the `reindex` module, else client-side scan + bulk; the log
  says `COPY PATH: ...`; `op_type=create`, newest old index first), then copies again, round after round,
  what the old indices received above the marks.
- `verify`: **blocks writes** to the old indices (writes in flight finish first; the stream's retries wait),
  copies the last changes, then compares **every id and its value and `ingested_at`** of the old indices
  with the target (composite aggregations, no sampling); **fails** on any missing or different id and lifts
  the block again.
- `swap`: **one `_aliases` call**: the alias leaves the old indices (still write-blocked) and stays on the
  target as write index; the old indices get a `covidflow_retired_at` mark in their mapping `_meta`.

Params: `alias`, `path` (`auto`/`server`/`client`), `grace_period_hours` (override).
"""


@dag(
    dag_id="covidflow_es_reindex",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    is_paused_upon_creation=False,  # ops and maintenance run on a fresh stack without a click
    max_active_runs=1,
    tags=["covidflow", "maintenance", "elasticsearch"],
    doc_md=DOC,
    on_failure_callback=on_failure,
    default_args=dag_defaults(retries=1, retry_delay=timedelta(minutes=1)),
    params={
        "alias": Param(None, type=["null", "string"], description="Write alias; default from maintenance.yaml"),
        "path": Param("auto", enum=["auto", "server", "client"], description="Copy path; auto detects the module"),
        "grace_period_hours": Param(None, type=["null", "number"], description="Override reindex.grace_period_hours"),
    },
)
def covidflow_es_reindex() -> None:
    def _cfg() -> tuple[dict[str, Any], str, dict[str, Any]]:
        from covidflow.store.maintenance import load_config

        cfg = load_config()["elasticsearch"]
        params = get_current_context()["params"]
        return cfg, params.get("alias") or cfg["write_alias"], params

    @task
    def cleanup() -> list[str]:
        import datetime as dt

        from covidflow.index import maintenance as m

        cfg, alias, params = _cfg()
        hours = params.get("grace_period_hours")
        hours = cfg["reindex"]["grace_period_hours"] if hours is None else hours
        es = m.client(settings.CONN_ELASTICSEARCH)
        in_alias = set(m.alias_indices(es, alias))
        mappings = es.indices.get_mapping(index=f"{alias}-*", ignore_unavailable=True, allow_no_indices=True)
        due = [
            i
            for i in m.retired_before(dict(mappings), dt.datetime.now(dt.UTC), dt.timedelta(hours=hours))
            if i not in in_alias
        ]
        for index in due:
            es.indices.delete(index=index)
            print(f"DELETED retired index {index} (grace period {hours} h over)")
        if not due:
            print(f"no retired index of {alias!r} past its {hours} h grace period")
        return due

    @task
    def plan(_: list[str]) -> dict[str, Any]:
        from covidflow.catalog.schema import load_schema
        from covidflow.index import maintenance as m

        _, alias, _ = _cfg()
        es = m.client(settings.CONN_ELASTICSEARCH)
        version = load_schema().version
        target = m.versioned_index(alias, version)
        indices = m.alias_indices(es, alias)
        if not indices:
            raise RuntimeError(f"alias {alias!r} has no index: nothing to reindex (use covidflow_es_rebuild)")
        sources = sorted(i for i in indices if i != target)
        print(f"reindex {alias!r} to mapping v{version}: {sources or 'nothing'} -> {target}")
        return {"alias": alias, "target": target, "sources": sources, "version": version}

    @task
    def switch_writes(p: dict[str, Any]) -> dict[str, Any]:
        from covidflow.index import maintenance as m

        if not p["sources"]:
            print(f"{p['target']} already holds the alias alone: nothing to do")
            return p
        es = m.client(settings.CONN_ELASTICSEARCH)
        m.put_template(es, p["alias"])
        if not es.indices.exists(index=p["target"]):
            es.indices.create(index=p["target"])
            print(f"created {p['target']} from template {p['alias']!r} (schema v{p['version']})")
        es.indices.update_aliases(actions=m.write_switch_actions(p["alias"], p["sources"], p["target"]))
        print(f"write index of {p['alias']!r} is now {p['target']}; {p['sources']} stay readable")
        return p

    @task
    def copy(p: dict[str, Any]) -> dict[str, Any]:
        from covidflow.index import maintenance as m

        if not p["sources"]:
            return {**p, "path": "none", "copied": 0, "kept_newer": 0}
        cfg, _, params = _cfg()
        es = m.client(settings.CONN_ELASTICSEARCH)
        server = m.has_reindex_module(dict(es.nodes.info(metric="plugins")))
        path = params["path"] if params["path"] != "auto" else ("server" if server else "client")
        if path == "server" and not server:
            raise RuntimeError("path=server asked, but the cluster has no reindex module")
        print(f"COPY PATH: {path} ({'server-side _reindex' if path == 'server' else 'client-side scan + bulk'}; "
              f"reindex module {'present' if server else 'absent'})")  # fmt: skip
        result = m.copy_and_catch_up(es, p["sources"], p["target"], path, cfg["reindex"]["batch_size"])
        print(
            f"copied {result['copied']} documents ({result['kept_newer']} already in {p['target']}); "
            f"{result['caught_up']} changed meanwhile, copied again in {result['catch_up_rounds']} round(s)"
        )
        return {**p, "path": path, **result}

    @task
    def verify(p: dict[str, Any]) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        from covidflow.index import maintenance as m

        if not p["sources"]:
            return p
        cfg, _, _ = _cfg()
        es = m.client(settings.CONN_ELASTICSEARCH)
        rx = cfg["reindex"]
        report = m.finish_copy(es, p["sources"], p["target"], rx["batch_size"], rx["verify_page_size"])
        print(f"verify: sources {report['source_count']} docs / {report['source_ids']} ids, target "
              f"{report['target_count']} docs; {report['missing']} missing, {report['differ']} differ, "
              f"{report['newer_in_target']} newer in the target, {report['only_in_target']} written since the "
              f"switch; last changes copied: {report['final_catch_up']}")  # fmt: skip
        if report["problems"]:
            raise AirflowFailException(f"reindex into {p['target']} is incomplete: " + "; ".join(report["problems"]))
        keys = ("source_count", "target_count", "source_ids", "target_ids", "only_in_target", "newer_in_target")
        return {**p, **{k: report[k] for k in keys}}

    @task
    def swap(p: dict[str, Any]) -> dict[str, Any]:
        import datetime as dt

        from covidflow.index import maintenance as m

        if not p["sources"]:
            return p
        es = m.client(settings.CONN_ELASTICSEARCH)
        es.indices.update_aliases(actions=m.final_swap_actions(p["alias"], p["sources"], p["target"]))
        retired_at = dt.datetime.now(dt.UTC).isoformat()
        for index in p["sources"]:  # they keep their write block: nothing may land there any more
            es.indices.put_mapping(index=index, meta={m.RETIRED_AT: retired_at, "replaced_by": p["target"]})
        m.save_marks(es, p["target"], None)  # the reindex is over (the rollover DAG waits while marks are there)
        print(f"SWAPPED {p['alias']!r}: now only {p['target']} (read + write); retired {p['sources']} at {retired_at}")
        return {**p, "retired_at": retired_at}

    swap(verify(copy(switch_writes(plan(cleanup())))))


covidflow_es_reindex()
