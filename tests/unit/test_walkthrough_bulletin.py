"""The nested-document section of docs/adding-a-source.md is executable: its spec (no hook) maps the bundled
OpenCOVID19-fr bulletins, YAML and JSON, and previews exactly as documented."""

from __future__ import annotations

import re
import shutil
from datetime import date
from pathlib import Path

import pytest
from click.testing import CliRunner

from covidflow import PROJECT_ROOT
from covidflow.catalog.specs import load_spec
from covidflow.cli import cli
from covidflow.normalise.preview import run_file

DOC = PROJECT_ROOT / "docs" / "adding-a-source.md"
SAMPLES = PROJECT_ROOT / "include" / "samples" / "opencovid19fr_bulletins"
SPF = "sante-publique-france_2020-03-02"


def blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


def bulletin_spec(tmp_path: Path, fmt: str) -> Path:
    text = blocks("yaml")[1]
    assert "hook" not in text and "format: yaml" in text
    if fmt == "json":
        text = text.replace("format: yaml", "format: json").replace('"*.yaml"', '"*.json"')
    path = tmp_path / fmt / "opencovid19fr_bulletins.yaml"
    path.parent.mkdir()
    path.write_text(text, encoding="utf-8")
    return path


def test_the_documented_preview_is_what_the_cli_prints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = bulletin_spec(tmp_path, "yaml")
    shutil.copy(spec, tmp_path / spec.name)
    sample = tmp_path / "include" / "samples" / "opencovid19fr_bulletins" / f"{SPF}.yaml"
    sample.parent.mkdir(parents=True)
    shutil.copy(SAMPLES / sample.name, sample)
    monkeypatch.chdir(tmp_path)  # the page's command uses relative paths
    [command] = [b for b in blocks("bash") if "opencovid19fr_bulletins" in b]
    args = command.split()[1:]
    assert args[:3] == ["sources", "preview", "opencovid19fr_bulletins.yaml"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == blocks("text")[3].strip()


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_bulletins_map_with_the_spec_alone(tmp_path: Path, fmt: str) -> None:
    spec = load_spec(bulletin_spec(tmp_path, fmt))
    records, summary = run_file(spec, SAMPLES / f"{SPF}.{fmt}")
    recs = list(records)
    by = {(r["location_key"], r["metric"]): r for r in recs}
    # donneesNationales: casConfirmes 178, deces 3 -> the national block, keyed FR by `set`
    assert by[("FR", "cases_cumulative")]["value"] == 178 and by[("FR", "deaths_cumulative")]["value"] == 3
    # - nom: Ile-de-France, code: REG-11, casConfirmes: 34 ; - nom: Saint-Barthélemy, code: COM-977, casConfirmes: 1
    assert by[("FR-R11", "cases_cumulative")]["value"] == 34
    assert by[("FR-C977", "cases_cumulative")]["value"] == 1
    r = by[("FR-R84", "cases_cumulative")]
    assert r["date"] == date(2020, 3, 2) and r["upstream"] == "Santé publique France" and r["value"] == 37
    assert r["vintage_basis"] == "file_name"
    assert (summary.rows_read, summary.records_out, summary.reject_count) == (21, 22, 0)
    assert summary.skips[("victimes", "individual victims (sex, age), not an aggregate (3 items)")] == 1

    records, summary = run_file(spec, SAMPLES / f"ars-bretagne_2020-03-20.{fmt}")
    by = {(r["location_key"], r["metric"]): r["value"] for r in records}
    # donneesRegionales (a mapping): REG-53 casConfirmes 306, deces 12, reanimation 27, hospitalises 96
    assert by[("FR-R53", "icu_occupancy")] == 27 and by[("FR-R53", "hospital_occupancy")] == 96
    assert by[("FR-D56", "cases_cumulative")] == 134  # - nom: Morbihan, code: DEP-56, casConfirmes: 134
    assert (summary.rows_read, summary.records_out, summary.reject_count) == (5, 8, 0)
