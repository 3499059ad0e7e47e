"""The work of the freshness and quality DAGs' tasks (I/O through Airflow connections); imported inside tasks."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from covidflow import settings
from covidflow.ops import report
from covidflow.ops.config import freshness_config
from covidflow.ops.freshness import Verdict, judge_all, late_summary, manifest_vintage, parse_time, store_vintage

log = logging.getLogger(__name__)


def s3_client() -> Any:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    return S3Hook(aws_conn_id=settings.CONN_S3).get_conn()


def cassandra_session() -> Any:
    """A session of its own (covidflow.clients, connection covidflow_cassandra): the caller shuts its cluster down."""
    from covidflow import clients

    return clients.cassandra_session(conn_id=settings.CONN_CASSANDRA, cached=False)


def freshness_docs(verdicts: list[Verdict], dag_id: str, run_id: str) -> list[dict[str, Any]]:
    return [
        {"_id": report.doc_id("freshness", run_id, v.source_id), "kind": "freshness", "check": "freshness",
         "dag_id": dag_id, "run_id": run_id, "message": v.line(), **v.to_dict()}
        for v in verdicts
    ]  # fmt: skip


def check_freshness(
    *,
    reference_time: str | None,
    bucket: str,
    keyspace: str | None,
    index: str | None,
    signals: list[str] | None,
    sources: list[str] | None,
    dag_id: str,
    run_id: str,
) -> tuple[list[dict[str, Any]], str]:
    """Read the signals, judge every source, write the report; returns (verdicts as dicts, failure summary)."""
    from covidflow.catalog.specs import load_all

    cfg = freshness_config()
    ref = parse_time(reference_time) if reference_time else datetime.now(UTC)
    specs = {sid: spec.data for sid, spec in load_all().items() if not sources or sid in sources}
    signals = list(signals or cfg["signals"])
    found: dict[str, dict[str, datetime | None]] = {sid: {} for sid in specs}
    if "manifest" in signals:
        client, prefix = s3_client(), cfg["manifest"]["prefix"]
        for sid in specs:
            found[sid]["manifest"] = manifest_vintage(client, bucket, prefix, sid, cfg["manifest"]["max_markers_read"])
    if "store" in signals:
        session = cassandra_session()
        try:
            for sid in specs:
                found[sid]["store"] = store_vintage(session, keyspace or cfg["store"]["keyspace"], sid)
        finally:
            session.cluster.shutdown()
    verdicts = judge_all(specs, found, ref, never_seen=cfg["never_seen"], missing_rule=cfg["missing_rule"])
    for v in verdicts:
        (log.error if v.late else log.info)("%s", v.line())
    target = index or cfg["elasticsearch"]["index"]
    written = report.write(report.client(), target, freshness_docs(verdicts, dag_id, run_id))
    log.info("freshness report: %d document(s) in Elasticsearch index %s", written, target)
    return [v.to_dict() for v in verdicts], late_summary(verdicts)


_QUALITY_COLUMNS = "location_key, metric, metric_kind, date, value, period, sex, age_group, variant, upstream"


def stored_records(session: Any, keyspace: str, source_id: str, vintage: datetime) -> list[dict[str, Any]]:
    """One vintage of one source, from observations_by_vintage.

    The partition key is (source_id, vintage, location_key, metric), so this is a filtered scan: fine for our
    volumes (thousands of rows per vintage); a per-(source, vintage) index table would make it a read.
    """
    if not keyspace.replace("_", "").isalnum():
        raise ValueError(f"keyspace {keyspace!r} is not a plain CQL identifier")
    rows = session.execute(
        f"SELECT {_QUALITY_COLUMNS} FROM {keyspace}.observations_by_vintage "
        "WHERE source_id = %s AND vintage = %s ALLOW FILTERING",
        (source_id, vintage),
        timeout=120,
    )
    return [row._asdict() for row in rows]


def quality_docs(source_id: str, findings: list[Any], summary: dict[str, Any], dag_id: str, run_id: str,
                 vintage: str | None, limit: int) -> list[dict[str, Any]]:  # fmt: skip
    """One summary document per source and run, plus up to ``limit`` findings per check."""
    docs = [{"_id": report.doc_id("quality", run_id, source_id, "summary"), "kind": "quality", "check": "summary",
             "dag_id": dag_id, "run_id": run_id, "source_id": source_id, "vintage": vintage,
             "status": "blocking" if summary["blocking"] else ("warning" if summary["warnings"] else "ok"),
             "severity": "blocking" if summary["blocking"] else "info", "count": summary["records"],
             "message": f"{summary['blocking']} blocking, {summary['warnings']} warning(s) over "
                        f"{summary['records']} records", "details": summary["by_check"]}]  # fmt: skip
    shown: dict[str, int] = {}
    for i, f in enumerate(findings):
        shown[f.check] = shown.get(f.check, 0) + 1
        if shown[f.check] > limit:
            continue
        docs.append({"_id": report.doc_id("quality", run_id, source_id, f.check, i), "kind": "quality",
                     "dag_id": dag_id, "run_id": run_id, "vintage": vintage, "status": f.severity, **f.to_dict(),
                     "message": f.line()})  # fmt: skip
    return docs


def report_drift(source_id: str, object_uri: str, error: Exception, dag_id: str, run_id: str) -> int:
    """The drift that stopped an ingest, as a quality report the dashboard's panel shows; never raises.

    ``error`` is a ``SchemaDrift``: the task fails with its message anyway, so a report that cannot be written is
    logged, not raised over it. Ids include the object, so two drifting files of one run are two reports.
    """
    try:
        from covidflow.ops.config import quality_config
        from covidflow.store.quality import summarise

        cfg = quality_config()
        target = cfg["elasticsearch"]["index"]
        findings = getattr(error, "findings", [])
        docs = quality_docs(source_id, findings, summarise(source_id, findings, 0), dag_id, run_id, None,
                            cfg["max_findings_per_check"])  # fmt: skip
        docs[0].update(message=str(error), object=object_uri)  # the summary line on-call sees on the panel
        for doc in docs:
            doc["_id"] = report.doc_id("drift", object_uri, doc["_id"])
        written = report.write(report.client(), target, docs)
    except Exception as exc:
        log.error("schema drift of %s NOT reported: %s: %s", object_uri, type(exc).__name__, exc)
        return 0
    log.info("schema drift of %s: %d document(s) in Elasticsearch index %s", object_uri, written, target)
    return written


def check_quality(
    *,
    source_id: str,
    vintage: str | None,
    reference_time: str | None,
    keyspace: str | None,
    index: str | None,
    dag_id: str,
    run_id: str,
) -> dict[str, Any]:
    """Run every stored-data check on one source's vintage (default: the newest); report; return the summary."""
    from covidflow.ops.config import quality_config
    from covidflow.store.quality import check_records, summarise

    cfg = quality_config()
    ks = keyspace or cfg["keyspace"]
    ref = parse_time(reference_time) if reference_time else datetime.now(UTC)
    session = cassandra_session()
    try:
        when = parse_time(vintage) if vintage else store_vintage(session, ks, source_id)
        records = stored_records(session, ks, source_id, when) if when else []
    finally:
        session.cluster.shutdown()
    findings = check_records(source_id, records, ref.date(), cfg)
    summary = summarise(source_id, findings, len(records))
    summary["vintage"] = when.isoformat() if when else None
    for line in summary["lines"] or [f"OK {source_id}: no finding over {len(records)} records"]:
        (log.error if line.startswith("BLOCKING") else log.warning if line.startswith("WARNING") else log.info)(line)
    target = index or cfg["elasticsearch"]["index"]
    docs = quality_docs(source_id, findings, summary, dag_id, run_id, summary["vintage"], cfg["max_findings_per_check"])
    log.info("quality report: %d document(s) in Elasticsearch index %s", report.write(report.client(), target, docs),
             target)  # fmt: skip
    return summary
