"""Friendlier ``covidflow sources`` tools: format sniffing in ``new``, landing warnings in ``preview``, ``validate``
prints each problem once."""

from __future__ import annotations

import gzip
import json
import shutil
import sys
import zipfile
from pathlib import Path

import openpyxl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner

from covidflow import PROJECT_ROOT
from covidflow.catalog.specs import SpecError, SpecProblem
from covidflow.cli import cli
from covidflow.cli.sources import code_like, scaffold, sniff

# The walkthrough's SPF shape: cl_age90 is an age class ("09"), pop a population: neither is a metric.
CSV = "dep;jour;P;T;cl_age90;pop\n75;2022-10-03;120;900;09;250000\n2A;2022-10-03;12;140;0;158507\n"
ROWS = [
    {"dep": "75", "jour": "2022-10-03", "P": 120, "T": 900, "cl_age90": "09", "pop": 250000},
    {"dep": "2A", "jour": "2022-10-03", "P": 12, "T": 140, "cl_age90": "0", "pop": 158507},
]
HEADER = list(ROWS[0])


def write_sample(directory: Path, kind: str) -> Path:
    """One sample per format the readers know, all with the same columns."""
    cells = [[str(r[h]) for h in HEADER] for r in ROWS]
    path = directory / {"gzip": "s.csv.gz", "zip": "s.zip", "markdown": "s.md"}.get(kind, f"s.{kind}")
    if kind == "csv":
        path.write_text(CSV, encoding="utf-8")
    elif kind == "json":
        path.write_text(json.dumps(ROWS), encoding="utf-8")
    elif kind == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    elif kind == "yaml":
        path.write_text(yaml.safe_dump(ROWS, sort_keys=False), encoding="utf-8")
    elif kind == "xlsx":
        book = openpyxl.Workbook()
        for row in [HEADER, *[[r[h] for h in HEADER] for r in ROWS]]:
            book.active.append(row)
        book.save(path)
    elif kind == "parquet":
        pq.write_table(pa.Table.from_pylist(ROWS), path)
    elif kind == "xml":
        items = "".join("<row>" + "".join(f"<{h}>{c}</{h}>" for h, c in zip(HEADER, row, strict=True)) + "</row>"
                        for row in cells)  # fmt: skip
        path.write_text(f"<?xml version='1.0'?><rows>{items}</rows>", encoding="utf-8")
    elif kind == "html":
        trs = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in cells)
        head = "".join(f"<th>{h}</th>" for h in HEADER)
        path.write_text(f"<html><body><table><tr>{head}</tr>{trs}</table></body></html>", encoding="utf-8")
    elif kind == "markdown":
        lines = [
            "| " + " | ".join(HEADER) + " |",
            "|" + "---|" * len(HEADER),
            *("| " + " | ".join(r) + " |" for r in cells),
        ]
        path.write_text("# Table\n\n" + "\n".join(lines) + "\n", encoding="utf-8")
    elif kind == "gzip":
        path.write_bytes(gzip.compress(CSV.encode()))
    elif kind == "zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("data/sp.csv", CSV)
    return path


@pytest.mark.parametrize(
    ("kind", "fmt", "reader"),
    [
        ("csv", "csv", {"delimiter": ";"}),
        ("json", "json", {}),
        ("jsonl", "jsonl", {}),
        ("yaml", "yaml", {}),
        ("xlsx", "xlsx", {}),
        ("parquet", "parquet", {}),
        ("xml", "xml", {"record_tag": "row"}),
        ("html", "html", {}),
        ("markdown", "markdown", {}),
        ("gzip", "csv", {"compression": "gzip", "delimiter": ";"}),
        ("zip", "csv", {"compression": "zip", "delimiter": ";"}),
    ],
)
def test_new_sniffs_the_format_and_leaves_codes_out_of_the_metrics(
    tmp_path: Path, kind: str, fmt: str, reader: dict
) -> None:
    sample = write_sample(tmp_path, kind)
    sniffed = sniff(sample)
    assert (sniffed["format"], sniffed["reader"]) == (fmt, reader)
    kinds = {c["name"]: c["kind"] for c in sniffed["columns"]}
    assert kinds == {"dep": "text", "jour": "date", "P": "number", "T": "number", "cl_age90": "code", "pop": "code"}
    text = scaffold("demo", sample, sniffed)
    assert f"format: {fmt}\n" in text and '"P": TODO_metric' in text and '"T": TODO_metric' in text
    assert "cl_age90" not in text.split("metrics:")[1].split("#")[0]  # not proposed as a metric...
    assert "# not proposed as metrics (codes, classes, coordinates, population): cl_age90, pop" in text  # ...said


def test_new_json_object_gets_its_records_path(tmp_path: Path) -> None:
    sample = tmp_path / "wrapped.json"
    sample.write_text(json.dumps({"meta": {"version": 1}, "data": ROWS}), encoding="utf-8")
    assert sniff(sample)["reader"] == {"records_path": "data"}


def test_code_like_names() -> None:
    assert all(map(code_like, ["cl_age90", "cl_age65", "Lat", "Long", "pop", "dep_id", "code_insee", "year"]))
    assert not any(map(code_like, ["P", "T", "hosp", "new_cases", "casConfirmes", "deces", "value"]))


def test_new_command_reports_the_format(tmp_path: Path) -> None:
    sample = write_sample(tmp_path, "xml")
    out = tmp_path / "demo_xml.yaml"
    result = CliRunner().invoke(cli, ["sources", "new", str(sample), "--id", "demo_xml", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "format xml, record_tag 'row', 6 columns" in result.output
    assert 'reader: {record_tag: "row"}' in out.read_text(encoding="utf-8")


def test_preview_warns_when_the_name_would_not_be_picked_up(tmp_path: Path) -> None:
    vacsi = PROJECT_ROOT / "include" / "samples" / "spf_vacsi" / "vacsi-dep.csv"
    wrong = tmp_path / "vaccinations.csv"
    shutil.copy(vacsi, wrong)
    result = CliRunner().invoke(cli, ["sources", "preview", "spf_vacsi", str(wrong), "-n", "1"])
    assert result.exit_code == 0, result.output
    assert "warning: vaccinations.csv matches none of spf_vacsi's landing patterns (vacsi-dep*.csv)" in result.output
    right = CliRunner().invoke(cli, ["sources", "preview", "spf_vacsi", str(vacsi), "-n", "1"])
    assert right.exit_code == 0 and "warning" not in right.output


def test_preview_warns_when_the_object_pattern_does_not_match(tmp_path: Path) -> None:
    jhu = PROJECT_ROOT / "include/samples/jhu_csse_time_series_global"
    other = tmp_path / "time_series_covid19_vaccines_global.csv"  # a landing pattern? no; object pattern? no
    shutil.copy(next(jhu.glob("*deaths*.csv")), other)
    result = CliRunner().invoke(cli, ["sources", "preview", "jhu_csse_time_series_global", str(other), "-n", "1"])
    assert "does not match object.pattern" in result.output and "matches none of" in result.output


def test_validate_prints_each_problem_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = tmp_path / "twice.yaml"
    spec.write_text("id: twice\n", encoding="utf-8")
    problem = SpecProblem(str(spec), 3, "metrics.cases", "'cases_per_day' is not a metric in include/metrics.yaml")

    def load_spec(path: Path) -> None:
        raise SpecError([problem, problem])  # the same problem found by two checks

    monkeypatch.setattr(sys.modules["covidflow.cli.sources"], "load_spec", load_spec)
    result = CliRunner().invoke(cli, ["sources", "validate", str(spec)])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines.count(f"INVALID {problem}") == 1 and "0 valid, 1 invalid" in lines
    assert not any(line.startswith("Error") for line in lines)
