"""The Kibana panels' queries on the real local Elasticsearch: Kibana itself cannot run here, its queries can.

Each panel in covidflow.show.kibana renders both its saved object and the Elasticsearch request Kibana
sends for it (same filter, same aggregations, same runtime fields). Those requests run here against an
index built from the project's template and filled with the bundled samples (as test_dashboard_api.py does),
and their answers are compared with the sample files, read without covidflow code.

The data view's runtime fields are Painless, and Lens's last value is a top_metrics aggregation
(x-pack-analytics). The local stack's Elasticsearch is the minimal distribution, with neither: there the
test index stores the runtime fields' values as keyword fields, computed by their Python twins
(kibana.RUNTIME_VALUES), and top_metrics becomes the equivalent top_hits (size 1, newest vintage first).
On a full Elasticsearch (the Docker image) the panels' requests run unchanged.
"""

from __future__ import annotations

import copy
import csv
import os
from collections import defaultdict
from collections.abc import Iterator
from html.parser import HTMLParser
from typing import Any

import pytest
from test_dashboard_api import sample_documents

from covidflow import PROJECT_ROOT, clients
from covidflow.index.es_template import generate_template
from covidflow.show import kibana
from covidflow.show.es_queries import variant_family

pytestmark = pytest.mark.integration

ES_URL = os.environ.get("COVIDFLOW_ELASTICSEARCH_URL", "http://127.0.0.1:9200")
ALIAS = "covid-observations-test-kibana"
INDEX = f"{ALIAS}-000001"
SOURCES = ("spf_donnees_hospitalieres", "gerstung_variant_share", "ecdc_erviss_variants")
SPF_CSV = (
    PROJECT_ROOT / "include/samples/spf_donnees_hospitalieres/donnees-hospitalieres-covid19_2020-04-01_2020-04-14.csv"
)
GERSTUNG_MD = PROJECT_ROOT / "include/samples/gerstung_variant_growth_share/README_2022-11-15.md"
DEPARTMENTS_CSV = PROJECT_ROOT / "include/locations/fr_departments.csv"
SYNTHETIC_SOURCE = "kibana_test_variants"
# Variants around the BF.7 family's edges, indexed only to check the runtime field against variant_family.
EDGE_VARIANTS = ("BF.7", "BF.7.4.1", "BF.70", "BA.5.2.1.7", "BA.5.2.1", "BQ.1.1", "XBB.1.5-like", "all")


def es_client() -> Any:

    return clients.elasticsearch(cached=False, request_timeout=120)


def has_module(client: Any, name: str) -> bool:
    nodes = client.nodes.info(metric="plugins").body["nodes"]
    return all(any(m["name"] == name for m in n.get("modules", [])) for n in nodes.values())


def has_painless(client: Any) -> bool:
    return has_module(client, "lang-painless")


def _portable(node: Any) -> Any:
    """top_metrics (x-pack-analytics, what Lens's last value sends) as the equivalent top_hits."""
    if isinstance(node, dict):
        if "top_metrics" in node:
            spec = node["top_metrics"]
            return {"top_hits": {"size": 1, "sort": [spec["sort"]], "_source": [spec["metrics"]["field"]]}}
        return {k: _portable(v) for k, v in node.items()}
    return node


def last_value(agg: dict[str, Any]) -> float:
    """The value of a top_metrics answer, or of its top_hits stand-in."""
    if "top" in agg:
        return agg["top"][0]["metrics"][kibana.VALUE_FIELD]
    return agg["hits"]["hits"][0]["_source"][kibana.VALUE_FIELD]


def _documents() -> list[dict[str, Any]]:
    docs, paris = sample_documents(SOURCES)
    for n, variant in enumerate(EDGE_VARIANTS):
        edge = copy.deepcopy(paris)
        edge.update(record_id=f"edge-variant-{n}", source_id=SYNTHETIC_SOURCE, variant=variant, value=1.0)
        docs.append(edge)
    return docs


@pytest.fixture(scope="module")
def es() -> Iterator[Any]:
    """A test index from the project's template, filled with the samples; removed afterwards."""
    from elasticsearch import helpers

    client = es_client()
    client.options(ignore_status=404).indices.delete(index=INDEX)
    tpl = copy.deepcopy(generate_template()["template"])
    docs = _documents()
    if not has_painless(client):
        for name, value_of in kibana.RUNTIME_VALUES.items():
            tpl["mappings"]["properties"][name] = {"type": kibana.RUNTIME_FIELDS[name]["type"]}
            for doc in docs:
                doc[name] = value_of(doc)
    client.indices.create(index=INDEX, settings=tpl["settings"], mappings=tpl["mappings"], aliases={ALIAS: {}})
    actions = ({"_index": INDEX, "_id": d["record_id"], "_source": d} for d in docs)
    _, errors = helpers.bulk(client, actions, chunk_size=2000, raise_on_error=False, refresh="wait_for")
    assert not errors, errors[:3]
    yield client
    client.options(ignore_status=404).indices.delete(index=INDEX)


def search(es: Any, body: dict[str, Any]) -> dict[str, Any]:
    """Run a panel's request; on the minimal distribution, with the stand-ins described above."""
    if not has_painless(es):
        body = {k: v for k, v in body.items() if k != "runtime_mappings"}
    if not has_module(es, "x-pack-analytics"):
        body = _portable(body)
    return es.search(index=ALIAS, **body).body


# --- The sample files, read without covidflow code ------------------------------------------------------------


def spf_hosp() -> dict[str, dict[str, float]]:
    """department code -> {day: patients in hospital, all sexes}."""
    out: dict[str, dict[str, float]] = defaultdict(dict)
    with SPF_CSV.open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh, delimiter=";"):
            if row["sexe"] == "0":
                out[row["dep"]][row["jour"]] = float(row["hosp"])
    return dict(out)


def departments() -> dict[str, str]:
    """INSEE code -> registry name, for departments only (SPF's 975/977/978 are collectivities)."""
    with DEPARTMENTS_CSV.open(encoding="utf-8", newline="") as fh:
        return {r["insee_code"]: r["name"] for r in csv.DictReader(fh)}


class _Tables(HTMLParser):
    """Every <table> of a page as rows of cell texts."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def gerstung_france() -> dict[str, float]:
    """variant -> share in France from the README's last table; imputed values "(x)" are not data."""
    text = GERSTUNG_MD.read_text(encoding="utf-8")
    parser = _Tables()
    parser.feed(text[text.index("## Variant share by country") :])
    header, *rows = parser.tables[0]
    col = header.index("France")
    return {row[0]: float(row[col]) for row in rows if row and not row[col].startswith("(")}


# --- Panels ---------------------------------------------------------------------------------------------------


def test_map_join_equals_source_peaks(es: Any) -> None:
    panel = kibana.HOSPITAL_MAP
    resp = search(es, panel.es_request(kibana.TIME_FROM, kibana.TIME_TO))
    metric = f"{panel.metric}_of_{kibana.VALUE_FIELD}"
    got = {b["key"]: b[metric]["value"] for b in resp["aggregations"]["join"]["buckets"]}
    deps = departments()
    expected = {code: max(days.values()) for code, days in spf_hosp().items() if code in deps}
    assert expected["75"] == max(spf_hosp()["75"].values()) > 0 and "2A" in expected and "971" in expected
    assert got == expected  # every SPF department, keyed by the bare INSEE code EMS joins on
    assert set(got) <= set(deps)


def test_map_join_field_is_the_registry_insee_code(es: Any) -> None:
    body = {
        "size": 0,
        "runtime_mappings": kibana.RUNTIME_FIELDS,
        "aggs": {
            "key": {
                "terms": {"field": "location_key", "size": 1000},
                "aggs": {"code": {"terms": {"field": "department_code", "missing": "<none>"}}},
            }
        },
    }
    resp = search(es, body)
    codes = {b["key"]: [c["key"] for c in b["code"]["buckets"]] for b in resp["aggregations"]["key"]["buckets"]}
    by_key = {f"{kibana.DEPARTMENT_PREFIX}{code}": code for code in departments()}
    for key, found in codes.items():
        assert found == [by_key.get(key, "<none>")], key  # departments get their code, nothing else does
    assert codes["FR-D2A"] == ["2A"] and codes["FR"] == ["<none>"]


def test_series_is_top5_departments_newest_vintage(es: Any) -> None:
    panel = kibana.HOSPITAL_SERIES
    resp = search(es, panel.es_request(kibana.TIME_FROM, kibana.TIME_TO))
    got = {
        b["key"]: {d["key_as_string"][:10]: last_value(d["y"]) for d in b["x"]["buckets"]}
        for b in resp["aggregations"]["split"]["buckets"]
    }
    hosp, names = spf_hosp(), departments()
    peaks = sorted(((max(days.values()), code) for code, days in hosp.items() if code in names), reverse=True)
    assert peaks[panel.split_size - 1][0] > peaks[panel.split_size][0]  # no tie at the cut
    top = [names[code] for _, code in peaks[: panel.split_size]]
    assert list(got) == top  # ranked by peak, as Lens's custom "rank by max of value"
    for _, code in peaks[: panel.split_size]:
        assert got[names[code]] == hosp[code]
    assert got["Paris"]["2020-04-01"] == 2633.0  # the newest vintage, not the older -1


def test_variant_share_groups_bf7_family(es: Any) -> None:
    panel = kibana.VARIANT_SHARE
    resp = search(es, panel.es_request(kibana.TIME_FROM, kibana.TIME_TO))
    aggs = resp["aggregations"]
    week = "2022-11-14"  # Gerstung's 2022-11-15 file describes 2022-11-14, a Monday: its own calendar week
    totals = {b["key_as_string"][:10]: b["y"]["value"] for b in aggs["total"]["buckets"]}
    assert list(totals) == [week]  # only the Gerstung file: ECDC and the synthetic docs are filtered out
    groups = {
        b["key"]: {d["key_as_string"][:10]: d["y"]["value"] for d in b["x"]["buckets"]}
        for b in aggs["split"]["buckets"]
    }
    france = gerstung_france()
    assert totals[week] == pytest.approx(sum(france.values()))
    family = {v: s for v, s in france.items() if variant_family(v)}
    assert family == {"BF.7": 9.4}
    assert groups[kibana.BF7_FAMILY][week] == pytest.approx(sum(family.values()))
    ranked = [b["key"] for b in aggs["split"]["buckets"]]
    assert ranked[:2] == ["BQ.1.1", kibana.BF7_FAMILY]  # visible, second only to BQ.1.1
    # Percentage stacking divides by the week's total (the Other bucket included): BF.7 is 9.4 / 100.1.
    share = groups[kibana.BF7_FAMILY][week] / totals[week] * 100
    assert share == pytest.approx(9.4 / sum(france.values()) * 100)


def test_variant_group_script_matches_variant_family(es: Any) -> None:
    body = {
        "size": 0,
        "runtime_mappings": kibana.RUNTIME_FIELDS,
        "aggs": {
            "variant": {
                "terms": {"field": "variant", "size": 1000},
                "aggs": {"group": {"terms": {"field": "variant_group"}}},
            }
        },
    }
    resp = search(es, body)
    seen = {b["key"]: [g["key"] for g in b["group"]["buckets"]] for b in resp["aggregations"]["variant"]["buckets"]}
    assert set(EDGE_VARIANTS) <= set(seen)
    for variant, groups in seen.items():
        assert groups == [kibana.BF7_FAMILY if variant_family(variant) else variant], variant
