"""Rebuild the Elasticsearch index from Cassandra, the system of record (e.g. after losing the cluster)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import Param, dag, get_current_context, task

from covidflow import settings
from covidflow.ops.callbacks import dag_defaults, on_failure

DOC = """
### covidflow Elasticsearch rebuild from Cassandra

Reads `observations_by_vintage` (`rebuild.source_table` in `include/config/maintenance.yaml`): like the
index it holds every vintage of every record (`_id = record_id`, and the id includes the vintage), while
`observations_latest` keeps only the newest vintage. The table is read one token range after the other, each
paged; rows are written through the stream's `EsWriter`, so the documents are the stream's and an id held by
an older index of a rolled-over alias is overwritten there. A second run overwrites instead of duplicating.
Progress (rows read, documents written, token range, rate) is logged every `rebuild.progress_every` rows; the
run **fails** unless the alias ends with exactly as many documents as rows read (one row per record id).

- `prepare`: installs the schema's template; creates `<alias>-000001` with the write alias if the alias is missing.
- `rebuild`: token-range CQL scan -> EsWriter, then refresh and count check.

Params: `alias`, `keyspace`, `source_table`. Run it while the stream is stopped, or the count check may see
documents the stream wrote meanwhile.
"""


@dag(
    dag_id="covidflow_es_rebuild",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    is_paused_upon_creation=False,  # ops and maintenance run on a fresh stack without a click
    max_active_runs=1,
    tags=["covidflow", "maintenance", "elasticsearch", "cassandra"],
    doc_md=DOC,
    on_failure_callback=on_failure,
    default_args=dag_defaults(retries=1, retry_delay=timedelta(minutes=1)),
    params={
        "alias": Param(None, type=["null", "string"], description="Write alias; default from maintenance.yaml"),
        "keyspace": Param(None, type=["null", "string"], description="Keyspace; default from maintenance.yaml"),
        "source_table": Param(None, type=["null", "string"], description="Override rebuild.source_table"),
    },
)
def covidflow_es_rebuild() -> None:
    def _cfg() -> tuple[dict[str, Any], dict[str, Any]]:
        from covidflow.store.maintenance import load_config

        return load_config(), get_current_context()["params"]

    @task
    def prepare() -> str:
        from covidflow.index import maintenance as m

        cfg, params = _cfg()
        alias = params.get("alias") or cfg["elasticsearch"]["write_alias"]
        es = m.client(settings.CONN_ELASTICSEARCH)
        problems = m.template_problems(m.live_template(es, alias), m.template_for(alias))
        if problems:
            print(f"(re)installing template {alias!r}: {problems}")
            m.put_template(es, alias)
        created = m.ensure_alias(es, alias)
        print(f"alias {alias!r}: " + (f"created {created}" if created else "exists"))
        return alias

    @task
    def rebuild(alias: str) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        from covidflow import clients
        from covidflow.index import maintenance as m
        from covidflow.index.rebuild import rebuild as rebuild_from

        cfg, params = _cfg()
        rb = cfg["elasticsearch"]["rebuild"]
        keyspace = params.get("keyspace") or cfg["cassandra"]["keyspace"]
        table = params.get("source_table") or rb["source_table"]
        es = m.client(settings.CONN_ELASTICSEARCH)
        sess = clients.cassandra_session(conn_id=settings.CONN_CASSANDRA, cached=False)
        try:
            result = rebuild_from(sess, es, keyspace, alias, table=table, ranges=rb["token_ranges"],
                                  page_size=rb["page_size"], batch_size=rb["batch_size"],
                                  progress_every=rb["progress_every"])  # fmt: skip
        finally:
            sess.cluster.shutdown()
        es.indices.refresh(index=alias)
        count = es.count(index=alias)["count"]
        print(f"rebuild check: {result['rows']} rows of {keyspace}.{table} (one per record id), {count} documents "
              f"behind {alias!r}")  # fmt: skip
        if count != result["rows"]:
            raise AirflowFailException(
                f"rebuild of {alias!r} from {keyspace}.{table}: {count} documents for {result['rows']} record ids"
            )
        return {"keyspace": keyspace, "table": table, "alias": alias, "rows": result["rows"], "documents": count}

    rebuild(prepare())


covidflow_es_rebuild()
