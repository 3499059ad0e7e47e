"""Generators of the registry's data files in include/locations/ (docs/locations.md).

- ``countries.csv`` and ``fr_departments.csv``: one-off, from Debian's iso-codes (``apt-get install iso-codes``;
  ``python -m covidflow.catalog._build_locations``). iso-codes is LGPL-2.1+ data from ISO 3166-1/-2
  (https://salsa.debian.org/iso-codes-team/iso-codes); French names come from its fr translation.
- ``subdivisions.csv``: the ISO 3166-2 subdivisions of every country but France, from the pinned ``pycountry``
  package (``python -m covidflow.catalog._build_locations subdivisions``). A unit test checks that the committed
  file equals :func:`subdivision_rows`, so a pycountry upgrade shows up as a test failure, not a silent drift.

The project reads only the committed CSVs at run time (pycountry is needed by this script and that test only).
Regions, collectivities, aggregates and aliases are written by hand.
"""

from __future__ import annotations

import csv
import gettext
import io
import json
import re
import sys
from pathlib import Path

from covidflow import PROJECT_ROOT
from covidflow.catalog.locations import normalise_name

ISO = Path("/usr/share/iso-codes/json")
OUT = PROJECT_ROOT / "include" / "locations"
# ISO 3166-2 region code -> INSEE region code (the key uses INSEE: it is what French files carry).
ISO_REGION_TO_INSEE = {
    "GP": "01", "MQ": "02", "GF": "03", "RE": "04", "YT": "06", "IDF": "11", "CVL": "24", "BFC": "27",
    "NOR": "28", "HDF": "32", "GES": "44", "PDL": "52", "BRE": "53", "NAQ": "75", "OCC": "76", "ARA": "84",
    "PAC": "93", "20R": "94",
}  # fmt: skip
# ISO 3166-1 codes of French overseas places that have their own registry key (one key per real place).
FRENCH_OVERSEAS = {
    "GP": "FR-D971", "MQ": "FR-D972", "GF": "FR-D973", "RE": "FR-D974", "YT": "FR-D976", "PM": "FR-C975",
    "BL": "FR-C977", "MF": "FR-C978", "TF": "FR-C984", "WF": "FR-C986", "PF": "FR-C987", "NC": "FR-C988",
}  # fmt: skip
NAME_FIXES = {"FR-973": "Guyane"}  # INSEE spelling instead of ISO's "Guyane (française)"


def build() -> None:
    fr = gettext.translation("iso_3166-1", localedir="/usr/share/locale", languages=["fr"])
    countries = json.loads((ISO / "iso_3166-1.json").read_text(encoding="utf-8"))["3166-1"]
    with (OUT / "countries.csv").open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["key", "alpha2", "alpha3", "numeric", "name", "official_name", "common_name", "name_fr"])
        for c in sorted(countries, key=lambda c: c["alpha_2"]):
            key = FRENCH_OVERSEAS.get(c["alpha_2"], c["alpha_2"])
            w.writerow([key, c["alpha_2"], c["alpha_3"], c["numeric"], c["name"], c.get("official_name", ""),
                        c.get("common_name", ""), fr.gettext(c["name"])])  # fmt: skip
    subdivisions = json.loads((ISO / "iso_3166-2.json").read_text(encoding="utf-8"))["3166-2"]
    deps = [s for s in subdivisions if s["code"].startswith("FR-") and s["type"].endswith("department")]
    with (OUT / "fr_departments.csv").open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["key", "insee_code", "name", "region_insee_code", "parent_key", "iso_3166_2"])
        for d in sorted(deps, key=lambda d: d["code"]):
            code = d["code"][3:]
            region = ISO_REGION_TO_INSEE[d["parent"]]
            w.writerow([f"FR-D{code}", code, NAME_FIXES.get(d["code"], d["name"]), region, f"FR-R{region}", d["code"]])


SUBDIVISIONS_HEADER = ["key", "iso_3166_2", "name", "type", "country_key", "parent_key", "match_names"]
#: France's places are the INSEE-coded keys of fr_*.csv (ADR 0003); ISO 3166-2:FR must not add a second key.
SUBDIVISION_COUNTRIES_SKIPPED = frozenset({"FR"})
#: Chinese subdivision names carry their type ("Guangdong Sheng"); files write the bare name ("Guangdong").
_CN_SUFFIXES = re.compile(r"\s+(Sheng|Shi|Zizhiqu|Huizu Zizhiqu|Zhuangzu Zizhiqu|Uygur Zizhiqu|SAR)$")


def _is_that_country(name: str, country: dict[str, str]) -> bool:
    """NL-SX "Sint Maarten" is the country SX, CN-HK "Hong Kong SAR" is HK: one key per real place."""
    sub = normalise_name(name)
    for col in ("name", "common_name", "official_name"):
        other = normalise_name(country[col])
        if other and (sub.startswith(other) or other.startswith(sub)):
            return True
    return False


def subdivision_rows(countries_csv: Path = OUT / "countries.csv") -> list[list[str]]:
    """Rows of subdivisions.csv, sorted by ISO code: the ISO 3166-2 data of the installed pycountry.

    ``key`` is the ISO 3166-2 code (``AU-ACT``), or the country key when the subdivision is itself an ISO 3166-1
    country (``NL-SX`` -> ``SX``); ``parent_key`` is the ISO parent subdivision (``GB-LND`` -> ``GB-ENG``) or
    the country.
    """
    import pycountry  # the build script's own dependency; nothing at run time imports it

    with countries_csv.open(encoding="utf-8", newline="") as fh:
        countries = {r["alpha2"]: r for r in csv.DictReader(fh)}
    subs = sorted(pycountry.subdivisions, key=lambda s: s.code)
    same = {}
    for s in subs:
        suffix = s.code.split("-", 1)[1]
        if suffix in countries and suffix != s.country_code and _is_that_country(s.name, countries[suffix]):
            same[s.code] = countries[suffix]["key"]
    rows = []
    for s in subs:
        if s.country_code in SUBDIVISION_COUNTRIES_SKIPPED:
            continue
        country_key = countries[s.country_code]["key"]
        parent = s.parent_code
        parent_key = same.get(parent, parent) if parent else country_key
        names = [s.name]
        if s.country_code == "CN" and _CN_SUFFIXES.search(s.name):
            names.append(_CN_SUFFIXES.sub("", s.name))
        # Names as the registry matches them (normalise_name), computed here so start-up does no Unicode work.
        match = "|".join(dict.fromkeys(normalise_name(n) for n in names))
        rows.append([same.get(s.code, s.code), s.code, s.name, s.type, country_key, parent_key, match])
    return rows


def subdivisions_csv() -> str:
    """The exact text of include/locations/subdivisions.csv."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(SUBDIVISIONS_HEADER)
    w.writerows(subdivision_rows())
    return buf.getvalue()


def build_subdivisions() -> None:
    (OUT / "subdivisions.csv").write_text(subdivisions_csv(), encoding="utf-8")


if __name__ == "__main__":
    if sys.argv[1:] == ["subdivisions"]:
        build_subdivisions()
    else:
        build()
