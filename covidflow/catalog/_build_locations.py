"""One-off generator of include/locations/{countries,fr_departments}.csv from Debian's iso-codes.

Run once (``apt-get install iso-codes``; ``python -m covidflow.catalog._build_locations``) and commit the
CSVs; the project then reads only the CSVs. iso-codes is LGPL-2.1+ data from ISO 3166-1/-2
(https://salsa.debian.org/iso-codes-team/iso-codes); French names come from its fr translation.
Regions, collectivities, aggregates and aliases are written by hand (see docs/locations.md).
"""

from __future__ import annotations

import csv
import gettext
import json
from pathlib import Path

from covidflow import PROJECT_ROOT

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


if __name__ == "__main__":
    build()
