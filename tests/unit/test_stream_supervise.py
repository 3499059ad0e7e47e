"""Supervision logic without services: liveness verdict, lag from a checkpoint, progress metrics, bundle."""

from __future__ import annotations

import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from covidflow.normalise.stream_runtime import progress_metrics
from covidflow.normalise.supervise import (
    assess,
    build_bundle,
    committed_offsets,
    kafka_lag,
    kill_unhealthy,
    live_apps,
    submit_conf,
    supervision_limits,
    unhealthy_reason,
)

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


IN_BATCH = {**BEAT, "batch_in_progress": 42, "batch_started_at": "2026-01-20T11:40:00+00:00"}  # running 20 min


def test_assess_a_batch_running_past_the_limit_is_stuck_even_with_a_fresh_heartbeat() -> None:
    h = assess(MASTER, IN_BATCH, 3, now=NOW)  # default limit 15 min
    assert (h["alive"], h["hung"], h["stuck"]) == (False, False, True)
    assert (h["batch_in_progress"], h["batch_running_seconds"], h["heartbeat_age_seconds"]) == (42, 1200.0, 10.0)
    assert h["stuck_after_seconds"] == 900


def test_assess_a_batch_within_the_limit_is_alive() -> None:
    h = assess(MASTER, IN_BATCH, 3, now=NOW, stuck_after=1500)
    assert (h["alive"], h["stuck"], h["batch_running_seconds"]) == (True, False, 1200.0)
    h = assess(MASTER, {**IN_BATCH, "batch_started_at": "2026-01-20T11:59:55+00:00"}, 3, now=NOW, stuck_after=30)
    assert (h["alive"], h["stuck"], h["batch_running_seconds"]) == (True, False, 5.0)


def test_assess_between_batches_is_never_stuck() -> None:
    for beat in (BEAT, {**IN_BATCH, "batch_in_progress": None}):  # an old started_at without a batch is ignored
        h = assess(MASTER, beat, 0, now=NOW, stuck_after=1)
        assert (h["alive"], h["stuck"], h["batch_running_seconds"]) == (True, False, None)


def test_assess_batch_zero_counts_as_a_batch() -> None:
    assert assess(MASTER, {**IN_BATCH, "batch_in_progress": 0}, 0, now=NOW)["stuck"] is True


def test_assess_stuck_only_for_the_heartbeats_own_running_app() -> None:
    other = {**IN_BATCH, "app_id": "app-0"}  # a killed app's last heartbeat, before the new app writes its own
    h = assess(MASTER, other, 0, now=NOW)
    assert (h["alive"], h["stuck"], h["hung"]) == (True, False, False)
    assert assess({"activeapps": []}, IN_BATCH, 0, now=NOW)["stuck"] is False


def test_assess_stale_and_stuck_together() -> None:
    h = assess(MASTER, {**IN_BATCH, "updated_at": "2026-01-20T11:50:00+00:00"}, None, now=NOW)
    assert (h["alive"], h["hung"], h["stuck"]) == (False, True, True)
    reason = unhealthy_reason(h)
    assert "batch 42 has been running for 1200s" in reason and "limit 900s" in reason and "heartbeat stale" in reason


def test_unhealthy_reason_names_batch_duration_and_limit() -> None:
    h = assess(MASTER, IN_BATCH, 0, now=NOW, stuck_after=60)
    assert unhealthy_reason(h) == (
        "batch 42 has been running for 1200s (since 2026-01-20T11:40:00+00:00; limit 60s): stuck"
    )
    assert unhealthy_reason(assess(MASTER, BEAT, 0, now=NOW)) is None


def test_kill_unhealthy_kills_only_a_hung_or_stuck_app(monkeypatch: pytest.MonkeyPatch) -> None:
    import covidflow.normalise.supervise as supervise

    monkeypatch.setattr(supervise, "fetch_master_status", lambda: {"activeapps": []})  # gone at once
    killed: list[str] = []
    assert kill_unhealthy(assess(MASTER, BEAT, 0, now=NOW), killed.append) == [] and killed == []
    assert kill_unhealthy(assess(MASTER, IN_BATCH, 0, now=NOW), killed.append) == ["app-1"]
    assert killed == ["app-1"]


def test_supervision_limits_from_config_with_per_run_overrides(tmp_path: Path) -> None:
    assert supervision_limits() == {"stale_heartbeat_seconds": 180.0, "stuck_batch_seconds": 900.0}  # stream.yaml
    cfg = tmp_path / "stream.yaml"
    cfg.write_text("supervision:\n  stuck_batch_seconds: 600\n")
    assert supervision_limits(None, cfg) == {"stale_heartbeat_seconds": 180.0, "stuck_batch_seconds": 600.0}
    params = {"stuck_batch_seconds": 30, "stale_heartbeat_seconds": None, "other_param": 1}  # None keeps config
    assert supervision_limits(params, cfg) == {"stale_heartbeat_seconds": 180.0, "stuck_batch_seconds": 30.0}
    assert supervision_limits(None, tmp_path / "missing.yaml")["stuck_batch_seconds"] == 900.0
    for bad in (0, -5, "15m", True):
        with pytest.raises(ValueError, match="stuck_batch_seconds"):
            supervision_limits({"stuck_batch_seconds": bad}, cfg)


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
    conf = submit_conf(bundle, tmp_path / "env.tar.gz")
    assert conf["spark.archives"] == f"{bundle}#covidflow_bundle,{tmp_path / 'env.tar.gz'}#covidflow_env"
    assert conf["spark.pyspark.python"] == "./covidflow_env/bin/python"
    assert conf["spark.driver.memory"] == "768m" and conf["spark.cores.max"] == "1"
