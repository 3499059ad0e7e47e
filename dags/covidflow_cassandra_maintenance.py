"""Cassandra maintenance: per-node compaction and table health check, with an opt-in major compaction."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import Param, dag, get_current_context, task

from covidflow import settings
from covidflow.ops.callbacks import dag_defaults, on_failure

DOC = """
### covidflow Cassandra maintenance

For every table of the keyspace, **on every up node** (virtual tables are per node), the run reports:
compaction strategy/options against `include/schemas/observation.yaml`; running compactions
(`system_views.sstable_tasks`) and the node's pending ones (`system_views.thread_pools`); sstable count,
live/total bytes and droppable-tombstone ratio (JMX via `nodetool tablestats`: not in CQL on 5.0);
disk use, largest partition and tombstones per read (`system_views`); recent `system.compaction_history`.

- `inspect`: collects the report (log + XCom); never fails on thresholds.
- `compact`: only with `compact=true`: `nodetool compact <keyspace> <table>` on the chosen tables
  (`compact_tables`, else those over their `sstable_count` limit); `dry_run` (default **true**) only logs.
- `check`: re-collects after a real compaction, logs the report, pushes it to XCom (key `report`) and
  **fails** when a `fail` threshold is crossed (message: node, table, metric, value, threshold).

Thresholds: `include/config/maintenance.yaml` (`cassandra.thresholds`); params `keyspace` and
`thresholds` (overrides, e.g. `{"sstable_count": 8}`) change one run only. See docs/maintenance.md.
Safe to run twice: it reads, and a second major compaction of a compacted table is a no-op in effect.
"""


@dag(
    dag_id="covidflow_cassandra_maintenance",
    schedule="30 2 * * *",
    start_date=datetime(2024, 1, 1),
    catchup=False,
    is_paused_upon_creation=False,  # ops and maintenance run on a fresh stack without a click
    max_active_runs=1,
    tags=["covidflow", "maintenance", "cassandra"],
    doc_md=DOC,
    on_failure_callback=on_failure,
    default_args=dag_defaults(retries=1, retry_delay=timedelta(minutes=2)),
    params={
        "keyspace": Param(None, type=["null", "string"], description="Keyspace; default from maintenance.yaml"),
        "thresholds": Param({}, type="object", description="Per-run threshold overrides: metric -> max or rule"),
        "compact": Param(False, type="boolean", description="Trigger a major compaction (see dry_run)"),
        "dry_run": Param(True, type="boolean", description="With compact: only log what would be compacted"),
        "compact_tables": Param([], type="array", description="Tables to compact; default: those over sstable_count"),
    },
)
def covidflow_cassandra_maintenance() -> None:
    def _settings() -> tuple[dict[str, Any], str, dict[str, Any]]:
        from covidflow.store import maintenance as m

        params = get_current_context()["params"]
        cfg = m.load_config()["cassandra"]
        thresholds = m.merge_thresholds(cfg["thresholds"], params.get("thresholds"))
        return cfg, params.get("keyspace") or cfg["keyspace"], thresholds

    def _collect() -> dict[str, Any]:
        from covidflow import clients
        from covidflow.store import maintenance as m

        cfg, keyspace, thresholds = _settings()
        sess = clients.cassandra_session(conn_id=settings.CONN_CASSANDRA, cached=False)
        try:
            nodes = m.collect(
                sess,
                keyspace,
                history_days=cfg["compaction_history_days"],
                nodetool=cfg.get("nodetool"),
                thresholds=thresholds,
            )
        finally:
            sess.cluster.shutdown()
        if not nodes:
            raise RuntimeError(f"no Cassandra node is up for keyspace {keyspace}")
        return m.build_report(keyspace, nodes, thresholds, drift_severity=cfg.get("compaction_drift_severity", "fail"))

    @task
    def inspect() -> dict[str, Any]:
        from covidflow.store import maintenance as m

        report = _collect()
        print(m.format_report(report))
        return report

    @task
    def compact(report: dict[str, Any]) -> dict[str, Any]:
        from covidflow.store import maintenance as m

        params = get_current_context()["params"]
        if not params["compact"]:
            print("compact=false: no compaction requested")
            return {"ran": False, "targets": {}}
        cfg, keyspace, _ = _settings()
        only_over = cfg.get("compaction", {}).get("only_over_threshold", True)
        targets = m.compaction_targets(report, params.get("compact_tables") or None, only_over)
        before = m.sstable_counts(report)
        if not targets:
            print(f"compact=true but no table qualifies (requested={params.get('compact_tables')}, over={only_over})")
            return {"ran": False, "targets": {}}
        for node, tables in targets.items():
            for table in tables:
                command = f"nodetool -h {node} compact {keyspace} {table}"
                if params["dry_run"]:
                    print(f"DRY RUN (dry_run=true): would run `{command}`; sstables now {before[node][table]}")
                    continue
                print(f"running `{command}` (sstables before: {before[node][table]})")
                m.run_nodetool(cfg["nodetool"], node, "compact", keyspace, table)
        return {"ran": not params["dry_run"], "targets": targets, "sstables_before": before}

    @task
    def check(report: dict[str, Any], compaction: dict[str, Any]) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        from covidflow.store import maintenance as m

        if compaction["ran"]:
            report = _collect()
            after = m.sstable_counts(report)
            for node, tables in compaction["targets"].items():
                for table in tables:
                    print(f"compacted {node} {table}: sstables {compaction['sstables_before'][node][table]} "
                          f"-> {after[node][table]}")  # fmt: skip
            report["compaction"] = {**compaction, "sstables_after": after}
        print(m.format_report(report))
        get_current_context()["ti"].xcom_push(key="report", value=report)
        message = m.failure_message(report)
        if message:
            raise AirflowFailException(message)  # a finding, not a flake: retrying would not change it
        return report

    first = inspect()
    check(first, compact(first))


covidflow_cassandra_maintenance()
