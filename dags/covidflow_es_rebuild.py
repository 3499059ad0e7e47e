"""Rebuild the Elasticsearch index from Cassandra, the system of record (e.g. after losing the cluster)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import Param, dag, get_current_context, task

from covidflow import settings
from covidflow.ops.callbacks import dag_defaults, on_failure

DOC = """
### covidflow Elasticsearch rebuild from Cassandra

Reads the Cassandra table the index mirrors (`rebuild.source_table` in `include/config/maintenance.yaml`,
default `observations_latest`) page by page and bulk-writes every row through the write alias with
`_id = record_id`, so a second run overwrites instead of duplicating. Progress (rows, rate) is logged
every page; the run **fails** unless the alias ends with exactly as many documents as distinct record ids read.

- `prepare`: installs the schema's template; creates `<alias>-000001` with the write alias if the alias is missing.
- `rebuild`: paged CQL read -> bulk index, then refresh and count check.

Params: `alias`, `keyspace`, `source_table`. Meant for an empty or lost index; on a rolled-over alias a
record already in an older index would be written again to the write index (see docs/maintenance.md).
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
        import time

        from airflow.providers.apache.cassandra.hooks.cassandra import CassandraHook
        from airflow.sdk.exceptions import AirflowFailException
        from cassandra.query import SimpleStatement, dict_factory
        from elasticsearch import helpers

        from covidflow.catalog.schema import load_schema
        from covidflow.index import maintenance as m

        cfg, params = _cfg()
        rb = cfg["elasticsearch"]["rebuild"]
        keyspace = params.get("keyspace") or cfg["cassandra"]["keyspace"]
        table = params.get("source_table") or rb["source_table"]
        schema = load_schema()
        es = m.client(settings.CONN_ELASTICSEARCH)
        hook = CassandraHook(cassandra_conn_id=settings.CONN_CASSANDRA)
        try:
            session = hook.get_conn()
            session.row_factory = dict_factory
            live_columns = set(session.cluster.metadata.keyspaces[keyspace].tables[table].columns)
            columns = [f for f in schema.field_names if f in live_columns]
            if "record_id" not in columns:
                raise AirflowFailException(
                    f"{keyspace}.{table} has no record_id column: cannot rebuild with stable ids"
                )
            query = SimpleStatement(f"SELECT {', '.join(columns)} FROM {keyspace}.{table}", fetch_size=rb["page_size"])
            started, read, ids = time.monotonic(), 0, set()

            def actions():
                nonlocal read
                for row in session.execute(query, timeout=120):
                    read += 1
                    ids.add(row["record_id"])
                    if read % rb["page_size"] == 0:
                        rate = read / max(time.monotonic() - started, 1e-6)
                        print(f"rebuild {keyspace}.{table} -> {alias}: {read} rows read ({rate:.0f} rows/s)")
                    yield {"_op_type": "index", "_index": alias, "_id": row["record_id"],
                           "_source": m.row_to_doc(row, columns)}  # fmt: skip

            written, errors = helpers.bulk(es, actions(), chunk_size=rb["batch_size"], max_retries=3, stats_only=True)
        finally:
            hook.shutdown_cluster()
        es.indices.refresh(index=alias)
        count = es.count(index=alias)["count"]
        elapsed = time.monotonic() - started
        print(f"rebuild done: {read} rows read, {len(ids)} distinct record ids, {written} written, {errors} errors, "
              f"{count} documents behind {alias!r}, {elapsed:.1f} s")  # fmt: skip
        if errors or count != len(ids):
            raise AirflowFailException(
                f"rebuild of {alias!r} from {keyspace}.{table}: {count} documents for {len(ids)} record ids "
                f"({errors} bulk errors)"
            )
        return {"keyspace": keyspace, "table": table, "alias": alias, "rows": read, "documents": count}

    rebuild(prepare())


covidflow_es_rebuild()
