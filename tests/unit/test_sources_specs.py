"""Spec validation: every bundled spec is valid; errors name the file, the line and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from covidflow.catalog.specs import SOURCES_DIR, SpecError, load_spec, spec_paths

ORDINARY = """\
id: demo
title: Demo source
publisher: Someone
licence: CC BY 4.0
home_page: https://example.org
landing: {prefix: demo/, patterns: ["*.csv"]}
format: csv
location: {column: country, scheme: iso2}
date: {column: day}
metrics: {cases: cases_daily}
vintage: {from: landed_at}
"""


def write(tmp_path: Path, text: str, name: str = "demo.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems(path: Path) -> list:
    with pytest.raises(SpecError) as info:
        load_spec(path)
    return info.value.problems


def test_all_bundled_specs_are_valid_and_ordinary_csv_specs_are_short() -> None:
    paths = spec_paths()
    assert len(paths) == 10
    for path in paths:
        load_spec(path)
    for name in ("spf_vacsi", "who_covid19_global_weekly", "ecdc_weekly_cases_deaths", "spf_donnees_hospitalieres"):
        assert len((SOURCES_DIR / f"{name}.yaml").read_text(encoding="utf-8").splitlines()) <= 30, name


def test_ordinary_spec_is_valid(tmp_path: Path) -> None:
    assert load_spec(write(tmp_path, ORDINARY)).id == "demo"


def test_unknown_metric_names_file_line_and_field(tmp_path: Path) -> None:
    path = write(tmp_path, ORDINARY.replace("cases_daily", "cases_per_day"))
    (p,) = problems(path)
    assert (p.file, p.line, p.field) == (str(path), 10, "metrics.cases")
    assert "'cases_per_day' is not a metric" in p.message
    assert str(p).startswith(f"{path}:10: metrics.cases:")


def test_schema_error_wrong_enum(tmp_path: Path) -> None:
    path = write(tmp_path, ORDINARY.replace("scheme: iso2", "scheme: insee"))
    (p,) = problems(path)
    assert (p.line, p.field) == (8, "location.scheme") and "'insee'" in p.message


def test_missing_required_field(tmp_path: Path) -> None:
    path = write(tmp_path, ORDINARY.replace("licence: CC BY 4.0\n", ""))
    (p,) = problems(path)
    assert p.field == "" and "'licence' is a required property" in p.message and p.line == 1


def test_unknown_reader_option(tmp_path: Path) -> None:
    path = write(tmp_path, ORDINARY + 'reader: {separator: ";"}\n')
    (p,) = problems(path)
    assert (p.line, p.field) == (12, "reader.separator") and "not accepted by format csv" in p.message


def test_hook_outside_package_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, ORDINARY + "hook: os.system\n")
    (p,) = problems(path)
    assert (p.line, p.field) == (12, "hook")


def test_id_must_match_file_name(tmp_path: Path) -> None:
    (p,) = problems(write(tmp_path, ORDINARY, name="other.yaml"))
    assert (p.line, p.field) == (1, "id")


def test_yaml_syntax_error_has_line(tmp_path: Path) -> None:
    (p,) = problems(write(tmp_path, ORDINARY + "date: {column: [\n"))
    assert p.line is not None and p.line >= 12 and "YAML syntax" in p.message


def test_unsafe_yaml_tag_is_refused(tmp_path: Path) -> None:
    (p,) = problems(write(tmp_path, ORDINARY + "title: !!python/object/apply:os.system ['true']\n"))
    assert p.message.startswith("YAML tag refused (specs are plain data): could not determine a constructor")


def test_a_constructor_error_that_is_not_a_tag_is_reported_as_syntax(tmp_path: Path) -> None:
    (p,) = problems(write(tmp_path, ORDINARY + "quirks: {[1, 2]: unhashable}\n"))
    assert p.message.startswith("YAML syntax: found unhashable key")


def test_bad_regex(tmp_path: Path) -> None:
    text = ORDINARY.replace("vintage: {from: landed_at}", "vintage: {from: file_name, pattern: '(?P<date>['}")
    (p,) = problems(write(tmp_path, text))
    assert p.field == "vintage.pattern" and "invalid regular expression" in p.message
