"""The location registry: CSV files in include/locations/ -> one key per real place (docs/locations.md).

Specs say what a column holds (a ``scheme``: ISO code, INSEE department code, a name...); the
registry turns the value into a key, or into a reject reason that names the value.
"""

from __future__ import annotations

import csv
import re
import unicodedata
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from covidflow import PROJECT_ROOT

LOCATIONS_DIR = PROJECT_ROOT / "include" / "locations"
SCHEMES = ("key", "iso2", "iso3", "fr_department", "fr_region", "fr_collectivity", "name")


@dataclass(frozen=True)
class Location:
    key: str
    level: str  # country | region | department | collectivity | subdivision | aggregate
    name: str
    parent_key: str | None


def normalise_name(value: str) -> str:
    """Case, accents, punctuation and spacing do not matter when matching names ("Korea, South")."""
    text = unicodedata.normalize("NFKD", value)
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return re.sub(r"[^0-9a-z\ufffd]+", " ", text.casefold()).strip()


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


class LocationRegistry:
    """Lookups over the registry CSVs; build it once with :func:`load_registry`."""

    def __init__(self, directory: Path = LOCATIONS_DIR) -> None:
        self._places: dict[str, Location] = {}
        self._subdivisions_path: Path | None = directory / "subdivisions.csv"
        self._codes: dict[str, dict[str, str]] = {s: {} for s in SCHEMES}
        names: dict[str, str] = {}
        # country key -> normalised subdivision name -> key: names are only unique within a country
        # ("Victoria" is a state of Australia and a region of Malta), so they resolve with the row's country.
        self._subdivision_names: dict[str, dict[str, str]] = {}

        def add_name(name: str, key: str) -> None:
            if name:
                names.setdefault(normalise_name(name), key)  # first writer wins: see the order below

        countries = _rows(directory / "countries.csv")
        regions = _rows(directory / "fr_regions.csv")
        departments = _rows(directory / "fr_departments.csv")
        collectivities = _rows(directory / "fr_collectivities.csv")
        for r in regions:
            self._places[r["key"]] = Location(r["key"], "region", r["name"], r["parent_key"] or None)
            self._codes["fr_region"][r["insee_code"]] = r["key"]
        for r in departments:
            self._places[r["key"]] = Location(r["key"], "department", r["name"], r["parent_key"] or None)
            self._codes["fr_department"][r["insee_code"]] = r["key"]
        for r in collectivities:
            self._places[r["key"]] = Location(r["key"], "collectivity", r["name"], r["parent_key"] or None)
            self._codes["fr_collectivity"][r["insee_code"]] = r["key"]
        for r in countries:
            if r["key"] == r["alpha2"]:
                self._places[r["key"]] = Location(r["key"], "country", r["common_name"] or r["name"], None)
            self._codes["iso2"][r["alpha2"]] = r["key"]
            self._codes["iso3"][r["alpha3"]] = r["key"]
        for r in _rows(directory / "aggregates.csv"):
            self._places[r["key"]] = Location(r["key"], "aggregate", r["name"], None)
        # Name precedence: explicit aliases, then countries, collectivities, departments, regions
        # (so "Guadeloupe" is the department FR-D971; its region is reached by code, FR-R01).
        self.aliases = _rows(directory / "aliases.csv")
        for r in self.aliases:
            if r["key"] not in self._places:
                raise ValueError(
                    f"{directory / 'aliases.csv'}: alias {r['alias']!r} points to unknown key {r['key']!r}"
                )
            add_name(r["alias"], r["key"])
        for r in countries:
            for col in ("common_name", "name", "official_name", "name_fr"):
                add_name(r[col], r["key"])
        for rows in (collectivities, departments, regions):
            for r in rows:
                add_name(r["name"], r["key"])
        for key, place in self._places.items():
            add_name(place.name, key)
            self._codes["key"][key] = key
        self._codes["name"] = names
        # ISO 3166-2 subdivisions (~5,000 rows) are read on first use only: most commands never need them.

    @property
    def places(self) -> dict[str, Location]:
        """Every place by key, subdivisions included (reads them if not done yet)."""
        self._load_subdivisions()
        return self._places

    def _load_subdivisions(self) -> None:
        """ISO 3166-2 subdivisions (generated from pycountry): keys and names scoped by country. Idempotent.

        ~5,000 rows, read only when a command needs them; the generator stores the names already normalised
        (``match_names``) and this loop does no Unicode work (docs/locations.md has the measured cost).
        """
        path, self._subdivisions_path = self._subdivisions_path, None
        if path is None or not path.exists():
            return
        keys = self._codes["key"]
        with path.open(encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh)
            next(reader)
            for key, _iso, name, _type, country_key, parent_key, match_names in reader:
                if key not in self._places:  # rows keyed by a country (NL-SX -> SX) only add a scoped name
                    self._places[key] = Location(key, "subdivision", name, parent_key or country_key)
                    keys[key] = key
                scoped = self._subdivision_names.setdefault(country_key, {})
                for match in match_names.split("|"):  # already normalise_name()d by the generator
                    scoped.setdefault(match, key)

    def get(self, key: str) -> Location:
        place = self._places.get(key)
        return place if place is not None else self.places[key]

    def knows(self, key: str) -> bool:
        """Whether ``key`` is a registry key (reads the subdivisions only for keys not among the others)."""
        return key in self._places or key in self.places

    def country_key(self, value: str) -> str | None:
        """The key of the country a row names (name, alpha-2 or alpha-3), for scoping subdivision names."""
        value = value.strip()
        return (
            self._codes["iso2"].get(value.upper())
            or self._codes["iso3"].get(value.upper())
            or self._codes["name"].get(normalise_name(value))
        )

    def resolve(self, value: str, scheme: str, *, country: str | None = None) -> Location | None:
        """``value`` read as ``scheme`` -> the place, or None when the registry does not know it.

        With ``country`` (the raw country of the same row, e.g. JHU's Country/Region), a ``name`` is first looked
        up among that country's ISO 3166-2 subdivisions (``Ontario`` + ``Canada`` -> ``CA-ON``), then as usual.
        """
        value = value.strip()
        if scheme == "name" and country and country.strip():
            self._load_subdivisions()
            scope = self.country_key(country)
            key = self._subdivision_names.get(scope, {}).get(normalise_name(value)) if scope else None
            if key:
                return self._places[key]
        if scheme == "name":
            key = self._codes["name"].get(normalise_name(value))
        elif scheme == "fr_department":
            # SPF files put overseas collectivities (975, 977, 978) in their department column.
            key = self._codes["fr_department"].get(value) or self._codes["fr_collectivity"].get(value)
        elif scheme in ("iso2", "iso3"):
            key = self._codes[scheme].get(value.upper())
        elif scheme == "key":
            key = value if self.knows(value) else None
        elif scheme in self._codes:
            key = self._codes[scheme].get(value)
        else:
            raise ValueError(f"unknown location scheme {scheme!r} (known: {', '.join(SCHEMES)})")
        return self.get(key) if key else None

    def parent(self, place: Location) -> Location | None:
        if not place.parent_key:
            return None
        return self._places.get(place.parent_key) or self.places.get(place.parent_key)


@cache
def load_registry(directory: Path = LOCATIONS_DIR) -> LocationRegistry:
    """The registry, read once per process (it is immutable data)."""
    return LocationRegistry(Path(directory))
