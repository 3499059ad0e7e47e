"""Pure logic of the Cassandra maintenance check: thresholds, drift, nodetool parsing, report, targets."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from covidflow.store import maintenance as m

THRESHOLDS = {
    "sstable_count": {"max": 32, "severity": "fail"},
    "running_compactions": {"max": 4, "severity": "warn"},
    "pending_compactions": {"max": 10, "severity": "fail"},
    "dead_space_ratio": {"max": 0.5, "severity": "warn", "min_total_bytes": 1000},
}


def test_config_file_loads_and_every_threshold_is_valid() -> None:
    cfg = m.load_config()
    merged = m.merge_thresholds(cfg["cassandra"]["thresholds"], None)
    assert merged["sstable_count"] == {"max": 32, "severity": "fail"}
    assert cfg["cassandra"]["nodetool"]["jmx_port"] == 7199
    assert cfg["elasticsearch"]["write_alias"] == "covid-observations"


def test_overrides_accept_a_bare_number_and_keep_the_severity() -> None:
    merged = m.merge_thresholds(THRESHOLDS, {"sstable_count": 4, "running_compactions": {"severity": "fail"}})
    assert merged["sstable_count"] == {"max": 4, "severity": "fail"}
    assert merged["running_compactions"] == {"max": 4, "severity": "fail"}
    assert THRESHOLDS["sstable_count"]["max"] == 32  # the base is not mutated


@pytest.mark.parametrize("bad", [{"sstable_count": {"severity": "panic"}}, {"new_metric": {"severity": "warn"}}])
def test_invalid_thresholds_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError, match="threshold"):
        m.merge_thresholds(THRESHOLDS, bad)


def test_declared_compaction_comes_from_the_schema() -> None:
    assert m.declared_compaction() == {
        "observations_latest": {"class": "UnifiedCompactionStrategy", "scaling_parameters": "L4"},
        "observations_by_vintage": {"class": "UnifiedCompactionStrategy", "scaling_parameters": "T4"},
        "vintages_by_source": {"class": "UnifiedCompactionStrategy", "scaling_parameters": "T4"},
    }


def test_compaction_drift_compares_simple_class_names_and_declared_options_only() -> None:
    declared = {"class": "UnifiedCompactionStrategy", "scaling_parameters": "L4"}
    live = {"class": "org.apache.cassandra.db.compaction.UnifiedCompactionStrategy", "scaling_parameters": "L4",
            "max_sstables_to_compact": "32"}  # fmt: skip
    assert m.compaction_drift(declared, live) == []
    live_stcs = {"class": "org.apache.cassandra.db.compaction.SizeTieredCompactionStrategy"}
    assert m.compaction_drift(declared, live_stcs) == [
        "class: declared 'UnifiedCompactionStrategy', live 'SizeTieredCompactionStrategy'",
        "scaling_parameters: declared 'L4', live None",
    ]


def test_parse_tablestats_skips_log_lines_and_derives_dead_space() -> None:
    def table(count: int, live: str, total: str, droppable: str) -> dict:
        return {"sstable_count": count, "space_used_live": live, "space_used_total": total,
                "droppable_tombstone_ratio": droppable}  # fmt: skip

    stats = {"ks": {"tables": {"t1": table(7, "600", "1000", "0.25000"), "t2": table(0, "0", "0", "0.00000")}}}
    text = "WARN something\n" + json.dumps(stats)
    assert m.parse_tablestats(text, "ks") == {
        "t1": {"sstable_count": 7, "space_used_live_bytes": 600, "space_used_total_bytes": 1000,
               "dead_space_ratio": 0.4, "droppable_tombstone_ratio": 0.25},
        "t2": {"sstable_count": 0, "space_used_live_bytes": 0, "space_used_total_bytes": 0,
               "dead_space_ratio": 0.0, "droppable_tombstone_ratio": 0.0},
    }  # fmt: skip
    with pytest.raises(ValueError, match="no JSON"):
        m.parse_tablestats("error: connection refused", "ks")


def test_history_is_summarised_per_table_within_the_window() -> None:
    rows = [
        {"columnfamily_name": "t1", "compacted_at": datetime(2024, 5, 30), "bytes_in": 100, "bytes_out": 60},
        {"columnfamily_name": "t1", "compacted_at": datetime(2024, 5, 31, 12), "bytes_in": 50, "bytes_out": 50},
        {"columnfamily_name": "t2", "compacted_at": datetime(2024, 5, 1), "bytes_in": 9, "bytes_out": 9},
    ]
    assert m.summarise_history(rows, datetime(2024, 5, 25, tzinfo=UTC)) == {
        "t1": {"compactions": 2, "bytes_in": 150, "bytes_out": 110, "last_compacted_at": "2024-05-31T12:00:00+00:00"}
    }


def nodes(**tables: dict) -> dict:
    return {"10.0.0.1": {"node": {"pending_compactions": 2}, "tables": tables}}


def test_evaluate_reports_each_crossing_with_node_table_metric_value_and_threshold() -> None:
    found = m.evaluate(
        nodes(
            t1={"sstable_count": 40, "running_compactions": 5, "compaction_drift": []},
            t2={"sstable_count": 32, "dead_space_ratio": 0.9, "space_used_total_bytes": 999},  # below the floor
            t3={"missing": True},
        ),
        THRESHOLDS,
    )
    assert [f["message"] for f in found] == [
        "[FAIL] node 10.0.0.1 table t1: sstable_count = 40 > threshold 32",
        "[WARN] node 10.0.0.1 table t1: running_compactions = 5 > threshold 4",
        "[FAIL] node 10.0.0.1 table t3: table_missing = declared but not in the keyspace",
    ]
    assert found[0] | {} == {"node": "10.0.0.1", "table": "t1", "metric": "sstable_count", "value": 40,
                             "threshold": 32, "severity": "fail", "message": found[0]["message"]}  # fmt: skip


def test_node_level_metrics_and_drift_are_findings_too() -> None:
    data = {"n1": {"node": {"pending_compactions": 11}, "tables": {"t": {"compaction_drift": ["class: x"]}}}}
    assert [f["message"] for f in m.evaluate(data, THRESHOLDS, drift_severity="warn")] == [
        "[FAIL] node n1 table *: pending_compactions = 11 > threshold 10",
        "[WARN] node n1 table t: compaction_settings = class: x",
    ]


def test_report_status_and_failure_message() -> None:
    at = datetime(2024, 6, 1, tzinfo=UTC)
    ok = m.build_report("ks", nodes(t1={"sstable_count": 3}), THRESHOLDS, collected_at=at)
    assert (ok["status"], ok["findings"], m.failure_message(ok)) == ("ok", [], None)
    assert json.loads(json.dumps(ok)) == ok  # XCom-safe
    warn = m.build_report("ks", nodes(t1={"running_compactions": 9}), THRESHOLDS, collected_at=at)
    assert (warn["status"], m.failure_message(warn)) == ("warn", None)
    bad = m.build_report("ks", nodes(t1={"sstable_count": 33}), THRESHOLDS, collected_at=at)
    assert bad["status"] == "fail"
    assert m.failure_message(bad) == (
        "Cassandra maintenance check failed for keyspace ks: "
        "[FAIL] node 10.0.0.1 table t1: sstable_count = 33 > threshold 32"
    )
    text = m.format_report(bad)
    assert "t1: sstables=33" in text and "status: FAIL (1 finding(s))" in text


def test_not_observed_lists_metrics_without_values_and_warns() -> None:
    tables = {"t1": {"sstable_count": None, "running_compactions": 0}, "t2": {"missing": True}}
    assert m.not_observed(tables, THRESHOLDS) == ["t1.dead_space_ratio", "t1.sstable_count"]
    data = {"n1": {"node": {}, "tables": {}, "not_observed": ["t1.sstable_count"]}}
    assert [f["message"] for f in m.evaluate(data, THRESHOLDS)] == [
        "[WARN] node n1 table *: not_observed = t1.sstable_count"
    ]


def test_compaction_targets() -> None:
    report = m.build_report("ks", nodes(t1={"sstable_count": 40}, t2={"sstable_count": 2}, t3={"missing": True}),
                            THRESHOLDS)  # fmt: skip
    assert m.compaction_targets(report, None, only_over_threshold=True) == {"10.0.0.1": ["t1"]}
    assert m.compaction_targets(report, None, only_over_threshold=False) == {"10.0.0.1": ["t1", "t2"]}
    assert m.compaction_targets(report, ["t2"], only_over_threshold=True) == {"10.0.0.1": ["t2"]}
    with pytest.raises(ValueError, match="unknown table"):
        m.compaction_targets(report, ["nope"], only_over_threshold=True)
    assert m.sstable_counts(report) == {"10.0.0.1": {"t1": 40, "t2": 2}}


def test_nodetool_command_can_be_configured() -> None:
    assert m.nodetool_command({"command": ["/opt/cassandra/bin/nodetool"]}) == ["/opt/cassandra/bin/nodetool"]
    assert m.nodetool_command({"command": "nodetool"}) == ["nodetool"]
