"""Cassandra maintenance: collect per-node table health, judge it against thresholds, trigger compaction.

Cassandra 5.0 exposes most of what an on-call engineer needs over CQL (``system_views.*``,
``system.compaction_history``, ``system_schema.tables``), but those are *per node*: every query here is
pinned to one host and the report is keyed by node. The sstable count, live/total space and the
droppable-tombstone ratio are JMX-only in 5.0, so they come from ``nodetool tablestats`` (JMX), which is
also the only route to a compaction: CQL has no compaction command.

The evaluation and report functions are pure (unit-tested); the collectors take a driver session.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from covidflow import PROJECT_ROOT

CONFIG_PATH = PROJECT_ROOT / "include" / "config" / "maintenance.yaml"
SEVERITIES = ("warn", "fail")


def load_config(path: Path = CONFIG_PATH) -> dict[str, Any]:
    """The whole maintenance.yaml (safe YAML); read at every task run so edits apply without a deploy."""
    return yaml.safe_load(Path(path).read_text(encoding="utf-8"))


def merge_thresholds(base: Mapping[str, Any], overrides: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Thresholds from config with per-run overrides; an override may be a bare number (the new max)."""
    merged = {metric: dict(rule) for metric, rule in base.items()}
    for metric, rule in (overrides or {}).items():
        current = merged.setdefault(metric, {"severity": "fail"})
        current.update(rule if isinstance(rule, Mapping) else {"max": rule})
    for metric, rule in merged.items():
        if rule.get("severity", "fail") not in SEVERITIES or not isinstance(rule.get("max"), int | float):
            raise ValueError(f"threshold {metric!r} needs a numeric max and severity in {SEVERITIES}: {rule}")
    return merged


def declared_compaction() -> dict[str, dict[str, str]]:
    """table -> compaction options as observation.yaml declares them (what cassandra.cql is generated from)."""
    from covidflow.catalog.schema import load_schema

    return {t["name"]: {k: str(v) for k, v in t["compaction"].items()} for t in load_schema().cassandra["tables"]}


def compaction_drift(declared: Mapping[str, str], actual: Mapping[str, str]) -> list[str]:
    """Differences between declared and live compaction options; the class compares by its simple name."""
    problems = []
    for key, want in declared.items():
        have = actual.get(key)
        if key == "class" and have is not None:
            have = have.rsplit(".", 1)[-1]
            want = want.rsplit(".", 1)[-1]
        if have != want:
            problems.append(f"{key}: declared {want!r}, live {have!r}")
    return problems


def parse_tablestats(text: str, keyspace: str) -> dict[str, dict[str, Any]]:
    """Per-table JMX figures from ``nodetool tablestats -F json`` output (log lines before the JSON ignored)."""
    start = text.find("{")
    if start < 0:
        raise ValueError(f"no JSON in nodetool tablestats output: {text[:200]!r}")
    data = json.loads(text[start:])
    tables = data.get(keyspace, {}).get("tables", {})
    out: dict[str, dict[str, Any]] = {}
    for name, stats in tables.items():
        live, total = int(stats["space_used_live"]), int(stats["space_used_total"])
        out[name] = {
            "sstable_count": int(stats["sstable_count"]),
            "space_used_live_bytes": live,
            "space_used_total_bytes": total,
            "dead_space_ratio": round(1 - live / total, 4) if total else 0.0,
            "droppable_tombstone_ratio": float(stats["droppable_tombstone_ratio"]),
        }
    return out


def summarise_history(rows: Iterable[Mapping[str, Any]], since: datetime) -> dict[str, dict[str, Any]]:
    """table -> compactions since ``since`` from system.compaction_history rows (naive datetimes are UTC)."""
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        at = row["compacted_at"]
        at = at if at.tzinfo else at.replace(tzinfo=UTC)
        if at < since:
            continue
        entry = out.setdefault(
            row["columnfamily_name"], {"compactions": 0, "bytes_in": 0, "bytes_out": 0, "last_compacted_at": None}
        )
        entry["compactions"] += 1
        entry["bytes_in"] += int(row["bytes_in"] or 0)
        entry["bytes_out"] += int(row["bytes_out"] or 0)
        if entry["last_compacted_at"] is None or at.isoformat() > entry["last_compacted_at"]:
            entry["last_compacted_at"] = at.isoformat()
    return out


def _finding(node: str, subject: str, metric: str, value: Any, threshold: Any, severity: str) -> dict[str, Any]:
    comparison = f"{value} > threshold {threshold}" if isinstance(threshold, int | float) else f"{value}"
    return {
        "node": node,
        "table": subject,
        "metric": metric,
        "value": value,
        "threshold": threshold,
        "severity": severity,
        "message": f"[{severity.upper()}] node {node} table {subject}: {metric} = {comparison}",
    }


def evaluate(
    nodes: Mapping[str, Mapping[str, Any]], thresholds: Mapping[str, Mapping[str, Any]], drift_severity: str = "fail"
) -> list[dict[str, Any]]:
    """Findings for every (node, table) metric strictly above its threshold, plus schema drift and missing tables.

    ``nodes`` is the ``nodes`` part of a report: node -> {"node": {metric: v}, "tables": {table: {metric: v}}}.
    A metric that is absent or None was not observed and produces no finding (the report lists it).
    """
    findings = []
    for node, data in sorted(nodes.items()):
        if data.get("not_observed"):  # unobserved is not healthy: say so, without failing the run
            findings.append(_finding(node, "*", "not_observed", ", ".join(data["not_observed"]), None, "warn"))
        subjects = [("*", data.get("node", {})), *sorted(data.get("tables", {}).items())]
        for subject, metrics in subjects:
            if metrics.get("missing"):
                findings.append(
                    _finding(node, subject, "table_missing", "declared but not in the keyspace", None, "fail")
                )
                continue
            for problem in metrics.get("compaction_drift") or []:
                findings.append(_finding(node, subject, "compaction_settings", problem, None, drift_severity))
            for metric, rule in thresholds.items():
                value = metrics.get(metric)
                if value is None:
                    continue
                floor = rule.get("min_total_bytes")
                if floor is not None and (metrics.get("space_used_total_bytes") or 0) < floor:
                    continue
                if value > rule["max"]:
                    findings.append(_finding(node, subject, metric, value, rule["max"], rule.get("severity", "fail")))
    return findings


def status_of(findings: Sequence[Mapping[str, Any]]) -> str:
    """ok, warn or fail: the worst severity found."""
    severities = {f["severity"] for f in findings}
    return "fail" if "fail" in severities else "warn" if "warn" in severities else "ok"


def not_observed(tables: Mapping[str, Mapping[str, Any]], thresholds: Iterable[str]) -> list[str]:
    """``table.metric`` pairs that have a threshold but no value: said out loud, never counted as passing."""
    return sorted(
        f"{t}.{m}"
        for t, metrics in tables.items()
        if not metrics.get("missing")
        for m in thresholds
        if m != "pending_compactions" and metrics.get(m) is None
    )


def build_report(
    keyspace: str,
    nodes: Mapping[str, Mapping[str, Any]],
    thresholds: Mapping[str, Mapping[str, Any]],
    *,
    drift_severity: str = "fail",
    collected_at: datetime | None = None,
) -> dict[str, Any]:
    """The JSON-serialisable report the check logs and pushes to XCom."""
    findings = evaluate(nodes, thresholds, drift_severity)
    return {
        "keyspace": keyspace,
        "collected_at": (collected_at or datetime.now(UTC)).isoformat(),
        "thresholds": {k: dict(v) for k, v in thresholds.items()},
        "nodes": {n: dict(d) for n, d in nodes.items()},
        "findings": findings,
        "status": status_of(findings),
    }


def format_report(report: Mapping[str, Any]) -> str:
    """A human summary for the task log: one line per node/table, then the findings."""
    lines = [f"Cassandra maintenance report: keyspace {report['keyspace']} at {report['collected_at']}"]
    for node, data in sorted(report["nodes"].items()):
        n = data.get("node", {})
        lines.append(
            f"node {node}: pending_compactions={n.get('pending_compactions')} "
            f"active_compactions={n.get('active_compactions')} nodetool={data.get('nodetool', 'n/a')}"
        )
        for table, m in sorted(data.get("tables", {}).items()):
            if m.get("missing"):
                lines.append(f"  {table}: MISSING")
                continue
            hist = m.get("compaction_history") or {}
            lines.append(
                f"  {table}: sstables={m.get('sstable_count')} live={m.get('space_used_live_bytes')}B "
                f"total={m.get('space_used_total_bytes')}B disk={m.get('disk_mib')}MiB "
                f"running={m.get('running_compactions')} tombstones_p99={m.get('tombstones_per_read_p99')} "
                f"droppable_tombstones={m.get('droppable_tombstone_ratio')} "
                f"compactions_recent={hist.get('compactions', 0)} last={hist.get('last_compacted_at')} "
                f"strategy={m.get('compaction_class')} {m.get('compaction_options')}"
            )
        for item in data.get("not_observed", []):
            lines.append(f"  not observed: {item}")
    lines.append(f"status: {report['status'].upper()} ({len(report['findings'])} finding(s))")
    lines += [f"  {f['message']}" for f in report["findings"]]
    return "\n".join(lines)


def failure_message(report: Mapping[str, Any]) -> str | None:
    """The exception text when a fail-severity finding exists, else None."""
    fails = [f["message"] for f in report["findings"] if f["severity"] == "fail"]
    if not fails:
        return None
    return f"Cassandra maintenance check failed for keyspace {report['keyspace']}: " + "; ".join(fails)


def compaction_targets(
    report: Mapping[str, Any], requested: Sequence[str] | None, only_over_threshold: bool
) -> dict[str, list[str]]:
    """node -> tables to compact: the requested ones, else those whose sstable_count crossed its threshold."""
    targets: dict[str, list[str]] = {}
    over = {(f["node"], f["table"]) for f in report["findings"] if f["metric"] == "sstable_count"}
    for node, data in sorted(report["nodes"].items()):
        present = [t for t, m in sorted(data.get("tables", {}).items()) if not m.get("missing")]
        if requested:
            unknown = sorted(set(requested) - set(present))
            if unknown:
                raise ValueError(f"cannot compact unknown table(s) {unknown} of {report['keyspace']} on {node}")
            chosen = [t for t in present if t in requested]
        elif only_over_threshold:
            chosen = [t for t in present if (node, t) in over]
        else:
            chosen = present
        if chosen:
            targets[node] = chosen
    return targets


# ---------------------------------------------------------------------------------------------------------------
# Collection (needs a live cluster)
# ---------------------------------------------------------------------------------------------------------------

_LOGBACK = """<configuration><appender name="ERR" class="ch.qos.logback.core.ConsoleAppender">
<target>System.err</target><encoder><pattern>%-5level %msg%n</pattern></encoder></appender>
<root level="WARN"><appender-ref ref="ERR"/></root></configuration>
"""


def nodetool_command(cfg: Mapping[str, Any]) -> list[str]:
    """argv prefix for nodetool: the configured command, or Cassandra's NodeTool class from the stack's cache.

    The stack runs cassandra-all from a Maven classpath without the tarball's bin/nodetool; the same jars
    and the same Java 17 module flags as the server give a working nodetool (JMX on loopback).
    """
    command = cfg.get("command", "auto")
    if command != "auto":
        return [command] if isinstance(command, str) else list(command)
    from covidflow.stack.home import StackHome
    from covidflow.stack.service import java_home
    from covidflow.stack.services.cassandra import JVM17_FLAGS, VERSION

    jars = StackHome.from_env().cache / "maven" / f"cassandra-{VERSION}"
    if not any(jars.glob("cassandra-all-*.jar")):
        raise RuntimeError(
            f"no cassandra-all jar under {jars}: run `covidflow stack up cassandra` or set nodetool.command"
        )
    logback = Path(tempfile.gettempdir()) / "covidflow-nodetool-logback.xml"
    if not logback.exists() or logback.read_text() != _LOGBACK:
        logback.write_text(_LOGBACK)
    java = str(java_home(17) / "bin" / "java")
    return [java, "-Xmx256m", *JVM17_FLAGS, f"-Dlogback.configurationFile={logback}", "-cp", f"{jars}/*",
            "org.apache.cassandra.tools.NodeTool"]  # fmt: skip


def run_nodetool(cfg: Mapping[str, Any], host: str, *args: str) -> str:
    """Run one nodetool command against ``host``'s JMX port; stdout, or RuntimeError with stderr's tail."""
    argv = [*nodetool_command(cfg), "-h", host, "-p", str(cfg.get("jmx_port", 7199)), *args]
    env = {**os.environ, "HOME": os.environ.get("HOME", tempfile.gettempdir())}
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=cfg.get("timeout_seconds", 300), env=env)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"nodetool {' '.join(args)} on {host} exited {proc.returncode}: {' | '.join(tail)}")
    return proc.stdout


def _rows(session: Any, query: str, params: Sequence[Any], host: Any) -> list[Any]:
    """Run ``query`` on exactly ``host``: virtual and system.* local tables answer for the coordinator only."""
    return list(session.execute(query, params, host=host))


def collect_node(
    session: Any,
    host: Any,
    keyspace: str,
    declared: Mapping[str, Mapping[str, str]],
    *,
    history_days: int,
    nodetool: Mapping[str, Any] | None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """One node's view of every table of ``keyspace``: CQL virtual tables, compaction history, nodetool figures."""
    now = now or datetime.now(UTC)
    address = str(host.address)
    live = {
        r.table_name: dict(r.compaction)
        for r in _rows(
            session,
            "SELECT table_name, compaction FROM system_schema.tables WHERE keyspace_name = %s",
            [keyspace],
            host,
        )
    }
    tables: dict[str, dict[str, Any]] = {}
    for name in sorted(set(live) | set(declared)):
        if name not in live:
            tables[name] = {"missing": True}
            continue
        options = live[name]
        tables[name] = {
            "compaction_class": options.get("class", "").rsplit(".", 1)[-1],
            "compaction_options": {k: v for k, v in sorted(options.items()) if k != "class"},
            "compaction_drift": compaction_drift(declared[name], options) if name in declared else [],
            "running_compactions": 0,
            "running_compaction_kinds": [],
        }
    present = {n for n, m in tables.items() if not m.get("missing")}
    q = "SELECT table_name, {cols} FROM system_views.{view} WHERE keyspace_name = %s"
    for r in _rows(session, q.format(cols="mebibytes", view="disk_usage"), [keyspace], host):
        if r.table_name in present:
            tables[r.table_name]["disk_mib"] = r.mebibytes
    for r in _rows(session, q.format(cols="mebibytes", view="max_partition_size"), [keyspace], host):
        if r.table_name in present:
            tables[r.table_name]["max_partition_mib"] = r.mebibytes
    for r in _rows(session, q.format(cols="count, max, p99th", view="tombstones_per_read"), [keyspace], host):
        if r.table_name in present:
            tables[r.table_name].update(tombstones_per_read_p99=r.p99th, tombstones_per_read_max=r.max)
    for r in _rows(session, q.format(cols="kind, progress, total, unit", view="sstable_tasks"), [keyspace], host):
        if r.table_name in present:
            tables[r.table_name]["running_compactions"] += 1
            tables[r.table_name]["running_compaction_kinds"].append(f"{r.kind} {r.progress}/{r.total} {r.unit}")
    pool = _rows(session, "SELECT active_tasks, pending_tasks FROM system_views.thread_pools WHERE name = %s",
                 ["CompactionExecutor"], host)  # fmt: skip
    node_metrics = {
        "pending_compactions": pool[0].pending_tasks if pool else None,
        "active_compactions": pool[0].active_tasks if pool else None,
    }
    history = summarise_history(
        (
            r._asdict()
            for r in _rows(
                session,
                "SELECT columnfamily_name, compacted_at, bytes_in, bytes_out FROM system.compaction_history "
                "WHERE keyspace_name = %s ALLOW FILTERING",
                [keyspace],
                host,
            )
        ),
        now - timedelta(days=history_days),
    )
    for name in present:
        tables[name]["compaction_history"] = history.get(
            name, {"compactions": 0, "bytes_in": 0, "bytes_out": 0, "last_compacted_at": None}
        )
    result: dict[str, Any] = {"node": node_metrics, "tables": tables, "nodetool": "not configured"}
    if nodetool is not None and present:
        try:
            stats = parse_tablestats(run_nodetool(nodetool, address, "tablestats", "-F", "json", keyspace), keyspace)
            for name in present:
                tables[name].update(stats.get(name, {}))
            result["nodetool"] = "ok"
        except (RuntimeError, OSError, ValueError, subprocess.TimeoutExpired) as exc:
            result["nodetool"] = f"unavailable: {exc}"
    return result


def collect(
    session: Any,
    keyspace: str,
    *,
    history_days: int,
    nodetool: Mapping[str, Any] | None,
    thresholds: Iterable[str] = (),
) -> dict[str, dict[str, Any]]:
    """Every up node's view (``nodes`` part of a report); each node answers for itself only."""
    declared = declared_compaction()
    hosts = sorted((h for h in session.cluster.metadata.all_hosts() if h.is_up), key=lambda h: str(h.address))
    nodes = {}
    for host in hosts:
        data = collect_node(session, host, keyspace, declared, history_days=history_days, nodetool=nodetool)
        data["not_observed"] = not_observed(data["tables"], thresholds)
        nodes[str(host.address)] = data
    return nodes


def sstable_counts(report: Mapping[str, Any]) -> dict[str, dict[str, int | None]]:
    """node -> table -> sstable_count, for before/after comparisons in the log."""
    return {
        node: {t: m.get("sstable_count") for t, m in sorted(d["tables"].items()) if not m.get("missing")}
        for node, d in sorted(report["nodes"].items())
    }
