"""The location registry and metric vocabulary are complete and resolve the values real files use."""

from __future__ import annotations

import csv

import pytest
import yaml

from covidflow.catalog.locations import LOCATIONS_DIR, load_registry
from covidflow.catalog.metrics import KINDS, METRICS_PATH, load_metrics


def rows(name: str) -> list[dict[str, str]]:
    with (LOCATIONS_DIR / name).open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def test_101_departments_18_regions() -> None:
    deps, regs = rows("fr_departments.csv"), rows("fr_regions.csv")
    assert len(deps) == 101 and len(regs) == 18
    codes = {d["insee_code"] for d in deps}
    assert {"2A", "2B", "971", "972", "973", "974", "976"} <= codes and "20" not in codes
    region_keys = {r["key"] for r in regs}
    assert all(d["parent_key"] in region_keys for d in deps)
    assert len({d["key"] for d in deps}) == 101


@pytest.mark.parametrize(
    ("value", "scheme", "key"),
    [
        ("75", "fr_department", "FR-D75"),
        ("2A", "fr_department", "FR-D2A"),
        ("976", "fr_department", "FR-D976"),
        ("977", "fr_department", "FR-C977"),
        ("84", "fr_region", "FR-R84"),
        ("94", "fr_region", "FR-R94"),
        ("FR", "iso2", "FR"),
        ("FRA", "iso3", "FR"),
        ("RE", "iso2", "FR-D974"),
        ("Korea, South", "name", "KR"),
        ("South Korea", "name", "KR"),
        ("Allemagne", "name", "DE"),
        ("Royaume-Uni", "name", "GB"),
        ("R\ufffdunion", "name", "FR-D974"),
        ("C\ufffdte d'Ivoire", "name", "CI"),
        ("Saint Barthelemy", "name", "FR-C977"),
        ("St Martin", "name", "FR-C978"),
        ("EU/EEA", "name", "AGG-EUEEA"),
        ("Île-de-France", "name", "FR-R11"),
    ],
)
def test_resolve(value: str, scheme: str, key: str) -> None:
    place = load_registry().resolve(value, scheme)
    assert place is not None and place.key == key


def test_unknown_is_none() -> None:
    reg = load_registry()
    assert reg.resolve("99", "fr_department") is None and reg.resolve("Atlantis", "name") is None


def test_parents() -> None:
    reg = load_registry()
    lyon = reg.get("FR-D69")
    assert lyon.parent_key == "FR-R84" and reg.parent(lyon).name == "Auvergne-Rhône-Alpes"
    assert reg.get("FR-R84").parent_key == "FR" and reg.get("FR").parent_key is None


def test_metric_vocabulary() -> None:
    raw = yaml.safe_load(METRICS_PATH.read_text(encoding="utf-8"))["metrics"]
    metrics = load_metrics()
    assert set(metrics) == set(raw)
    assert {m.kind for m in metrics.values()} == set(KINDS)
    for name in ("hospital_occupancy", "icu_occupancy", "hospital_admissions_daily", "icu_admissions_daily",
                 "hospital_discharges_cumulative", "tests_daily", "test_positivity", "vaccine_doses_daily",
                 "people_vaccinated_first_dose_cumulative", "people_fully_vaccinated_cumulative",
                 "variant_detections_weekly", "variant_share", "cases_daily", "deaths_weekly"):  # fmt: skip
        assert name in metrics, name
    assert not any("bf" in name.lower() for name in metrics)  # lineages are a dimension
    assert metrics["variant_share"].kind == "share" and metrics["hospital_occupancy"].kind == "stock"
