"""The 'adding a source' walkthrough is executable: its spec validates and its preview output is what we print."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from covidflow import PROJECT_ROOT
from covidflow.cli import cli

DOC = PROJECT_ROOT / "docs" / "adding-a-source.md"


def blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


def test_the_walkthrough_spec_is_short_validates_and_previews_exactly_as_documented(tmp_path: Path) -> None:
    spec_text = blocks("yaml")[0]  # the walkthrough's; later sections have their own (test_walkthrough_bulletin)
    sample_text, preview_text = blocks("text")[0], blocks("text")[1]
    assert len(spec_text.strip().splitlines()) <= 30, "an ordinary CSV source must fit in about 30 lines"

    spec = tmp_path / "spf_sp_pos_quot_dep.yaml"
    spec.write_text(spec_text, encoding="utf-8")
    sample = tmp_path / "sp-pos-quot-dep-2022-10-04-19h06.csv"
    sample.write_text(sample_text, encoding="utf-8")

    runner = CliRunner()
    validated = runner.invoke(cli, ["sources", "validate", str(spec)])
    assert validated.exit_code == 0, validated.output

    previewed = runner.invoke(cli, ["sources", "preview", str(spec), str(sample)])
    assert previewed.exit_code == 0, previewed.output
    expected = preview_text.replace("sp-pos-quot-dep-2022-10-04-19h06.csv", str(sample))
    assert previewed.output.strip() == expected.strip()
