"""Elasticsearch rollover and retention for the observations write alias (no ILM needed)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import Param, dag, get_current_context, task

from covidflow import settings
from covidflow.ops.callbacks import dag_defaults, on_failure

DOC = """
### covidflow Elasticsearch rollover

ILM and data streams are not available on every server we run (the local minimal distribution has
neither), so this DAG does their job with plain APIs:

- `verify_template`: the index template for the alias matches `observation.yaml` (schema version,
  patterns, mappings); installs it when missing, **fails** on a mismatch (that needs `covidflow_es_reindex`).
- `rollover`: `POST <alias>/_rollover` with the conditions of `include/config/maintenance.yaml`
  (`max_age`, `max_docs`, `max_primary_shard_size`; any one rolls over); creates `<alias>-000001` first
  if the alias does not exist yet. Skipped while a `covidflow_es_reindex` run has not swapped yet.
- `retention`: indices behind the alias created more than `retention.days` ago (never the write index)
  are **closed or deleted only with `apply_retention=true`**; otherwise only listed.

Params: `alias`, `conditions` (override), `retention_days`, `retention_action`, `apply_retention`.
Safe to run twice: a fresh write index meets no condition, and retention acts on what is left.
"""


@dag(
    dag_id="covidflow_es_rollover",
    schedule="0 3 * * *",
    start_date=datetime(2024, 1, 1),
    catchup=False,
    is_paused_upon_creation=False,  # ops and maintenance run on a fresh stack without a click
    max_active_runs=1,
    tags=["covidflow", "maintenance", "elasticsearch"],
    doc_md=DOC,
    on_failure_callback=on_failure,
    default_args=dag_defaults(retries=2, retry_delay=timedelta(minutes=1)),
    params={
        "alias": Param(None, type=["null", "string"], description="Write alias; default from maintenance.yaml"),
        "conditions": Param({}, type="object", description="Rollover condition overrides, e.g. {'max_docs': 5}"),
        "retention_days": Param(None, type=["null", "number"], description="Override retention.days"),
        "retention_action": Param(None, type=["null", "string"], enum=[None, "close", "delete"]),
        "apply_retention": Param(False, type="boolean", description="Really close/delete (default: list only)"),
    },
)
def covidflow_es_rollover() -> None:
    def _cfg() -> tuple[dict[str, Any], str, dict[str, Any]]:
        from covidflow.store.maintenance import load_config

        cfg = load_config()["elasticsearch"]
        params = get_current_context()["params"]
        return cfg, params.get("alias") or cfg["write_alias"], params

    @task
    def verify_template() -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        from covidflow.index import maintenance as m

        _, alias, _ = _cfg()
        es = m.client(settings.CONN_ELASTICSEARCH)
        wanted = m.template_for(alias)
        problems = m.template_problems(m.live_template(es, alias), wanted)
        if problems == ["no index template installed"]:
            m.put_template(es, alias)
            print(f"template {alias!r} was missing: installed schema v{wanted['_meta']['schema_version']}")
            problems = m.template_problems(m.live_template(es, alias), wanted)
        if problems:
            raise AirflowFailException(f"index template {alias!r} does not match the schema: " + "; ".join(problems))
        print(f"template {alias!r} matches observation.yaml v{wanted['_meta']['schema_version']}")
        return {"template": alias, "schema_version": wanted["_meta"]["schema_version"]}

    @task
    def rollover(_: dict[str, Any]) -> dict[str, Any]:
        from covidflow.index import maintenance as m

        cfg, alias, params = _cfg()
        es = m.client(settings.CONN_ELASTICSEARCH)
        created = m.ensure_alias(es, alias)
        if created:
            print(f"alias {alias!r} did not exist: created {created} as its write index")
        conditions = {**cfg["rollover"]["conditions"], **(params.get("conditions") or {})}
        reindexing = m.reindex_in_progress(es, alias)
        if reindexing:  # a new write index now would leave the reindex target behind, still being caught up
            print(f"no rollover for {alias}: a reindex into {reindexing} has not swapped yet (run it to its end)")
            return {"old_index": reindexing, "new_index": None, "rolled_over": False, "conditions": {}}
        result = dict(es.indices.rollover(alias=alias, conditions=conditions))
        met = sorted(k for k, v in result.get("conditions", {}).items() if v)
        if result["rolled_over"]:
            print(f"ROLLED OVER {alias}: {result['old_index']} -> {result['new_index']} (met: {met})")
        else:
            print(f"no rollover for {alias}: write index {result['old_index']} meets none of {conditions}")
        return {k: result[k] for k in ("old_index", "new_index", "rolled_over", "conditions")}

    @task
    def retention(_: dict[str, Any]) -> dict[str, Any]:
        import datetime as dt

        from covidflow.index import maintenance as m

        cfg, alias, params = _cfg()
        days = params.get("retention_days")
        days = cfg["retention"]["days"] if days is None else days
        action = params.get("retention_action") or cfg["retention"]["action"]
        es = m.client(settings.CONN_ELASTICSEARCH)
        expired = m.past_retention(m.alias_indices(es, alias), dt.datetime.now(dt.UTC), days)
        done = []
        for index, age in expired:
            if not params["apply_retention"]:
                print(f"DRY RUN (apply_retention=false): would {action} {index} (age {age} d > {days} d)")
                continue
            if action == "delete":
                es.indices.delete(index=index)
            else:
                # A closed index cannot stay in the alias: searches over the alias would fail on it.
                es.indices.update_aliases(actions=[{"remove": {"index": index, "alias": alias}}])
                es.indices.close(index=index)
            done.append(index)
            print(f"{action.upper()}D {index} (age {age} d > {days} d)")
        return {"expired": [i for i, _ in expired], "applied": done, "action": action, "days": days}

    checked = verify_template()
    retention(rollover(checked))


covidflow_es_rollover()
