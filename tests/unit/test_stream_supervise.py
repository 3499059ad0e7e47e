"""Supervision logic without services: liveness verdict, lag from a checkpoint, progress metrics, bundle."""

from __future__ import annotations

import zipfile
from datetime import UTC, datetime
from pathlib import Path

from covidflow.normalise.stream_runtime import progress_metrics
from covidflow.normalise.supervise import assess, build_bundle, committed_offsets, kafka_lag, live_apps, submit_conf

NOW = datetime(2026, 1, 20, 12, 0, 0, tzinfo=UTC)
MASTER = {
    "status": "ALIVE",
    "activeapps": [
        {"id": "app-1", "name": "covidflow-normalise", "state": "RUNNING"},
        {"id": "app-2", "name": "covidflow-normalise-e2e", "state": "RUNNING"},
        {"id": "app-3", "name": "covidflow-normalise", "state": "FINISHED"},
    ],
}
BEAT = {
    "app_id": "app-1",
    "updated_at": "2026-01-20T11:59:50+00:00",
    "last_batch_id": 41,
    "last_batch_at": "2026-01-20T11:58:00+00:00",
    "input_rows_per_second": 12.5,
    "processed_rows_per_second": 250.0,
    "offsets_behind_latest": 0.0,
    "totals": {"batches": 42},
}


def test_live_apps_matches_name_and_live_state_only() -> None:
    assert [a["id"] for a in live_apps(MASTER)] == ["app-1"]
    assert live_apps(None) == []


def test_assess_alive_with_health_figures() -> None:
    h = assess(MASTER, BEAT, 7, now=NOW)
    assert (h["alive"], h["hung"], h["running_apps"]) == (True, False, ["app-1"])
    assert (h["heartbeat_age_seconds"], h["last_batch_age_seconds"]) == (10.0, 120.0)
    assert (h["last_batch_id"], h["input_rows_per_second"], h["lag_messages"]) == (41, 12.5, 7)


def test_assess_stale_heartbeat_of_the_running_app_is_hung() -> None:
    h = assess(MASTER, {**BEAT, "updated_at": "2026-01-20T11:50:00+00:00"}, None, now=NOW)
    assert (h["alive"], h["hung"], h["heartbeat_age_seconds"]) == (False, True, 600.0)


def test_assess_dead_when_master_has_no_app() -> None:
    h = assess({"activeapps": []}, BEAT, 0, now=NOW)
    assert (h["alive"], h["hung"], h["master_reachable"]) == (False, False, True)
    assert assess(None, None, None, now=NOW)["master_reachable"] is False


def test_committed_offsets_reads_the_last_committed_batch(tmp_path: Path) -> None:
    (tmp_path / "offsets").mkdir()
    (tmp_path / "commits").mkdir()
    meta = '{"batchWatermarkMs":0,"batchTimestampMs":1,"conf":{}}'
    (tmp_path / "offsets" / "0").write_text(f'v1\n{meta}\n{{"covid.raw.v1":{{"1":5,"0":6}}}}\n')
    (tmp_path / "offsets" / "1").write_text(f'v1\n{meta}\n{{"covid.raw.v1":{{"1":9,"0":10}}}}\n')
    (tmp_path / "commits" / "0").write_text('v1\n{"nextBatchWatermarkMs":0}\n')
    assert committed_offsets(tmp_path) == {"covid.raw.v1": {"0": 6, "1": 5}}  # batch 1 planned, not committed
    assert committed_offsets(tmp_path / "missing") == {}


def test_kafka_lag() -> None:
    committed = {"covid.raw.v1": {"0": 6, "1": 5}}
    assert kafka_lag(committed, {"covid.raw.v1": {"0": 10, "1": 5}}) == 4
    assert kafka_lag({}, {"covid.raw.v1": {"0": 3, "1": 2}}) == 5
    assert kafka_lag(committed, {}) is None


def test_progress_metrics_from_streaming_progress() -> None:
    metrics = {"maxOffsetsBehindLatest": "12", "avgOffsetsBehindLatest": "6.0"}
    progress = {"inputRowsPerSecond": 100.0, "processedRowsPerSecond": 80.0, "sources": [{"metrics": metrics}]}
    assert progress_metrics(progress) == {
        "input_rows_per_second": 100.0,
        "processed_rows_per_second": 80.0,
        "offsets_behind_latest": 12.0,
    }
    assert progress_metrics(None)["offsets_behind_latest"] is None


def test_bundle_has_code_and_specs_but_no_samples(tmp_path: Path) -> None:
    bundle = build_bundle(tmp_path / "b.zip")
    names = set(zipfile.ZipFile(bundle).namelist())
    assert "covidflow/normalise/core.py" in names
    assert "include/sources/spf_donnees_hospitalieres.yaml" in names
    assert "include/schemas/observation.yaml" in names
    assert not any(n.startswith("include/samples/") for n in names)
    assert not any("__pycache__" in n for n in names)
    conf = submit_conf(bundle)
    assert conf["spark.archives"] == f"{bundle}#covidflow_bundle"
    assert conf["spark.driver.memory"] == "768m" and conf["spark.cores.max"] == "1"
