"""``covidflow sources`` through click's CliRunner (no service needed)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from covidflow import PROJECT_ROOT
from covidflow.cli import cli

SPF = PROJECT_ROOT / "include/samples/spf_donnees_hospitalieres/donnees-hospitalieres-covid19_2020-04-01_2020-04-14.csv"


def invoke(*args: str):
    return CliRunner().invoke(cli, ["sources", *args], catch_exceptions=False)


def test_list() -> None:
    result = invoke("list")
    assert result.exit_code == 0
    line = next(x for x in result.output.splitlines() if x.startswith("spf_donnees_hospitalieres"))
    assert "csv" in line and "Licence Ouverte 2.0" in line and "spf/donnees-hospitalieres/" in line
    assert len(result.output.splitlines()) == 11


def test_validate_all_and_a_bad_one(tmp_path: Path) -> None:
    assert invoke("validate").exit_code == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: bad\ntitle: x\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["sources", "validate", str(bad)])
    assert result.exit_code == 1 and f"{bad}:1:" in result.output


def test_preview_table_and_summary() -> None:
    result = invoke("preview", "spf_donnees_hospitalieres", str(SPF), "--limit", "2")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0].split()[:4] == ["location_key", "date", "period", "metric"]
    # line 2 of the file: "01";0;"2020-04-01";92;28;43;12
    assert lines[1].split() == ["FR-D01", "2020-04-01", "day", "hospital_occupancy", "all", "all", "all", "-", "92.0"]
    assert "rows read: 4242" in result.output and "records out: 16968" in result.output
    assert "rejects: 0" in result.output


def test_preview_jsonl() -> None:
    result = invoke("preview", "spf_donnees_hospitalieres", str(SPF), "-n", "1", "--format", "jsonl")
    first = json.loads(result.output.splitlines()[0])
    assert first["location_key"] == "FR-D01" and first["value"] == 92 and first["date"] == "2020-04-01"


def test_preview_unknown_source() -> None:
    result = CliRunner().invoke(cli, ["sources", "preview", "nope", str(SPF)])
    assert result.exit_code != 0 and "no spec for source 'nope'" in result.output


def test_new_scaffolds_then_validates_after_edit(tmp_path: Path) -> None:
    sample = tmp_path / "weekly.csv"
    sample.write_text("country;week_end;new_cases\nFR;2022-10-02;310114\nDE;2022-10-02;1000\n", encoding="utf-8")
    out = tmp_path / "demo_weekly.yaml"
    result = invoke("new", str(sample), "--id", "demo_weekly", "-o", str(out))
    assert result.exit_code == 0 and "delimiter ';'" in result.output
    text = out.read_text(encoding="utf-8")
    assert 'reader: {delimiter: ";"}' in text and 'date: {column: "week_end"}' in text
    assert '"new_cases": TODO_metric' in text and 'location: {column: "country"' in text
    assert CliRunner().invoke(cli, ["sources", "validate", str(out)]).exit_code == 1  # TODOs left
    fixed = (
        text.replace("scheme: TODO", "scheme: iso2")
        .replace("TODO_metric", "cases_daily")
        .replace("TODO/demo_weekly/", "demo/weekly/")
        .replace("https://TODO", "https://example.org")
    )
    out.write_text(fixed, encoding="utf-8")
    assert invoke("validate", str(out)).exit_code == 0
