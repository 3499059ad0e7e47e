"""ISO 3166-2 subdivisions in the location registry (include/locations/subdivisions.csv, from pycountry)."""

from __future__ import annotations

import pytest

from covidflow.catalog._build_locations import subdivisions_csv
from covidflow.catalog.locations import LOCATIONS_DIR, LocationRegistry


@pytest.fixture(scope="module")
def registry() -> LocationRegistry:
    return LocationRegistry()


def test_committed_file_is_the_generators_output() -> None:
    # Regenerate with `python -m covidflow.catalog._build_locations subdivisions` after a pycountry upgrade.
    committed = (LOCATIONS_DIR / "subdivisions.csv").read_text(encoding="utf-8")
    assert committed == subdivisions_csv()


def test_keys_follow_adr_0003_and_are_children_of_their_country(registry: LocationRegistry) -> None:
    act, ontario = registry.get("AU-ACT"), registry.get("CA-ON")
    assert (act.name, act.level, act.parent_key) == ("Australian Capital Territory", "subdivision", "AU")
    assert (ontario.name, ontario.level, ontario.parent_key) == ("Ontario", "subdivision", "CA")
    # ISO's own hierarchy is kept: the City of London is in England, England in the United Kingdom
    assert registry.get("GB-LND").parent_key == "GB-ENG" and registry.get("GB-ENG").parent_key == "GB"
    # Wallis and Futuna's precincts hang under its French key, not under an ISO code
    assert registry.get("WF-AL").parent_key == "FR-C986"
    levels = [p.level for p in registry.places.values()]
    assert levels.count("subdivision") == 4906  # 5,046 in pycountry 26.2.16, less France's 124 and 16 countries


def test_french_keys_are_untouched(registry: LocationRegistry) -> None:
    french = {k: (p.level, p.parent_key) for k, p in registry.places.items() if k == "FR" or k.startswith("FR-")}
    assert not any(level == "subdivision" for level, _ in french.values())
    assert french["FR-D69"] == ("department", "FR-R84") and french["FR-C977"] == ("collectivity", "FR")
    assert len(french) == 1 + 18 + 101 + 9 - 1  # FR, regions, departments, collectivities (fr_*.csv rows)


@pytest.mark.parametrize(
    ("name", "country", "key"),
    [
        ("Ontario", "Canada", "CA-ON"),
        ("Quebec", "Canada", "CA-QC"),
        ("Australian Capital Territory", "Australia", "AU-ACT"),
        ("Victoria", "Australia", "AU-VIC"),
        ("Sint Maarten", "Netherlands", "SX"),  # NL-SX is the country SX: one key per real place
        ("Hong Kong", "China", "HK"),
        ("Guangdong", "China", "CN-GD"),  # ISO writes "Guangdong Sheng"
        ("Channel Islands", "United Kingdom", "AGG-CHANNEL-ISLANDS"),
        ("Pitcairn Islands", "United Kingdom", "PN"),
        ("Isle of Man", "United Kingdom", "IM"),
        ("Reunion", "France", "FR-D974"),  # French places keep their INSEE keys
        ("United Kingdom", "United Kingdom", "GB"),
    ],
)
def test_names_resolve_with_the_country_of_the_row(
    registry: LocationRegistry, name: str, country: str, key: str
) -> None:
    place = registry.resolve(name, "name", country=country)
    assert place is not None and place.key == key


def test_subdivision_names_need_the_country_and_non_places_stay_unknown(registry: LocationRegistry) -> None:
    assert registry.resolve("Victoria", "name") is None  # a state of Australia, a region of Malta...
    assert registry.resolve("Diamond Princess", "name", country="Canada") is None
    assert registry.resolve("Repatriated Travellers", "name", country="Canada") is None
    assert registry.resolve("AU-ACT", "key").name == "Australian Capital Territory"


def test_subdivisions_are_read_only_when_needed() -> None:
    fresh = LocationRegistry()
    assert fresh.resolve("69", "fr_department").key == "FR-D69" and fresh.knows("FR-R84")
    assert fresh._subdivisions_path is not None  # not read yet: French and country lookups do not need them
    assert fresh.resolve("Ontario", "name", country="CA").key == "CA-ON"
    assert fresh._subdivisions_path is None
