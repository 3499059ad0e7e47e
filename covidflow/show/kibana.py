"""Kibana saved objects for the Docker stack: generated here, written to include/kibana/saved_objects.ndjson.

Kibana cannot run on the machines that build covidflow, so every panel is described once, as data
(:class:`PanelFilter`, :class:`XYPanel`, :class:`RegionMap`), and rendered twice: as the Kibana saved
object (KQL query, Lens columns, Maps layers) and as the equivalent Elasticsearch request, which the
integration tests run on the real Elasticsearch. Field names come from observation.yaml (through the
generated index template), metric names from metrics.yaml: the tests check both.

    python -m covidflow.show.kibana           # rewrite include/kibana/saved_objects.ndjson
    python -m covidflow.show.kibana --check   # exit 1 when the committed file is stale

Formats follow Kibana 8.19's own saved objects (see docs/decisions/0013-kibana-saved-objects.md); each
object carries the ``typeMigrationVersion`` of the format it is written in, so Kibana migrates it on import.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from covidflow import PROJECT_ROOT
from covidflow.catalog.schema import load_schema
from covidflow.show.es_queries import variant_family

NDJSON_PATH = PROJECT_ROOT / "include" / "kibana" / "saved_objects.ndjson"
DATA_VIEW_ID = "covid-observations"
CORE_MIGRATION_VERSION = "8.8.0"
#: The migration version of the format each object is written in; on import Kibana runs every newer migration.
TYPE_MIGRATION_VERSION = {"index-pattern": "8.0.0", "lens": "8.9.0", "map": "8.4.0", "dashboard": "8.7.0"}
DASHBOARD_PANEL_VERSION = "8.9.0"
#: Default time range of the dashboard and map: the span the bundled sources cover.
TIME_FROM, TIME_TO = "2020-03-01T00:00:00.000Z", "2023-07-01T00:00:00.000Z"
DATE_FIELD = "date"
VALUE_FIELD = "value"
VINTAGE_FIELD = "vintage"

# Runtime fields of the data view (Painless, evaluated by Elasticsearch at query time).
DEPARTMENT_PREFIX = "FR-D"  # docs/locations.md: a department's key is FR-D + its INSEE code
DEPARTMENT_CODE_SCRIPT = (
    "if (doc['location_level'].size() > 0 && doc['location_key'].size() > 0"
    " && doc['location_level'].value == 'department') {"
    " String key = doc['location_key'].value;"
    f" if (key.startsWith('{DEPARTMENT_PREFIX}')) {{ emit(key.substring({len(DEPARTMENT_PREFIX)})); }} }}"
)
BF7_FAMILY = "BF.7 family"
# Mirrors covidflow.show.es_queries.variant_family (BF.7, its sub-lineages, and BA.5.2.1.7, its full name).
# Both scripts have a Python twin below; tests/unit/test_kibana_objects.py evaluates the Painless against them.
VARIANT_GROUP_SCRIPT = (
    "if (doc['variant'].size() > 0) { String v = doc['variant'].value;"
    " if (v == 'BF.7' || v.startsWith('BF.7.') || v.startsWith('BA.5.2.1.7'))"
    f" {{ emit('{BF7_FAMILY}'); }} else {{ emit(v); }} }}"
)
RUNTIME_FIELDS: dict[str, dict[str, Any]] = {
    "department_code": {"type": "keyword", "script": {"source": DEPARTMENT_CODE_SCRIPT}},
    "variant_group": {"type": "keyword", "script": {"source": VARIANT_GROUP_SCRIPT}},
}


def department_code(doc: Mapping[str, Any]) -> str | None:
    """What DEPARTMENT_CODE_SCRIPT emits for ``doc``: the INSEE code of a department, else nothing."""
    key = doc.get("location_key") or ""
    if doc.get("location_level") == "department" and key.startswith(DEPARTMENT_PREFIX):
        return key[len(DEPARTMENT_PREFIX) :]
    return None


def variant_group(doc: Mapping[str, Any]) -> str | None:
    """What VARIANT_GROUP_SCRIPT emits for ``doc``: the dashboard's BF.7 family as one value."""
    variant = doc.get("variant")
    if variant is None:
        return None
    return BF7_FAMILY if variant_family(variant) else variant


#: The runtime fields' meaning in Python, for an Elasticsearch without Painless (the local stack's minimal
#: distribution): tests store these values as plain keyword fields there and run the same panel requests.
RUNTIME_VALUES: dict[str, Callable[[Mapping[str, Any]], str | None]] = {
    "department_code": department_code,
    "variant_group": variant_group,
}

# Elastic Maps Service "France Departments" (ems-file-service sources/fr/departments_v82.hjson): `insee` is an
# id field (Wikidata P2586, e.g. "01", "2A", "971"), so it can be the left side of a term join.
EMS_DEPARTMENTS_LAYER = "france_departments"
EMS_DEPARTMENTS_JOIN_FIELD = "insee"


def _compact(value: Any) -> str:
    """JSON as Kibana stores it inside string attributes (layerListJSON, panelsJSON...)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def _stable_id(name: str) -> str:
    """A UUID that never changes for ``name``, so regenerating the file gives the same bytes."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"https://covidflow/kibana/{name}"))


def alias() -> str:
    """The read alias every panel queries (observation.yaml: elasticsearch.write_alias)."""
    return str(load_schema().elasticsearch["write_alias"])


# ---------------------------------------------------------------------------------------------------------------
# Filters: one definition, rendered as KQL (Kibana) and as Elasticsearch query DSL (tests)
# ---------------------------------------------------------------------------------------------------------------


def _kql_value(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _kql_clause(name: str, values: tuple[str, ...]) -> str:
    if len(values) == 1:
        return f"{name} : {_kql_value(values[0])}"
    return f"{name} : (" + " or ".join(_kql_value(v) for v in values) + ")"


def _es_clause(name: str, values: tuple[str, ...]) -> dict[str, Any]:
    return {"term": {name: values[0]}} if len(values) == 1 else {"terms": {name: list(values)}}


@dataclass(frozen=True)
class PanelFilter:
    """Keyword field -> accepted values (all must match), plus field -> values to exclude."""

    include: Mapping[str, tuple[str, ...]]
    exclude: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def kql(self) -> str:
        parts = [_kql_clause(k, v) for k, v in self.include.items()]
        parts += [f"not {_kql_clause(k, v)}" for k, v in self.exclude.items()]
        return " and ".join(parts)

    def es_query(self, start: str | None = None, end: str | None = None) -> dict[str, Any]:
        """The same filter as a bool query; ``start``/``end`` stand for Kibana's time picker."""
        filters = [_es_clause(k, v) for k, v in self.include.items()]
        if start or end:
            filters.append({"range": {DATE_FIELD: {k: v for k, v in (("gte", start), ("lte", end)) if v}}})
        out: dict[str, Any] = {"filter": filters}
        if self.exclude:
            out["must_not"] = [_es_clause(k, v) for k, v in self.exclude.items()]
        return {"bool": out}

    def fields(self) -> set[str]:
        return set(self.include) | set(self.exclude)


def _default_dims(*names: str) -> dict[str, tuple[str, ...]]:
    """Dimensions pinned to their default ("all"), as the dashboard API does (ALL_DIMS in es_queries)."""
    defaults = load_schema().dimension_defaults
    return {n: (defaults[n],) for n in names}


# ---------------------------------------------------------------------------------------------------------------
# Panels
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class XYPanel:
    """A Lens XY chart: a date histogram on ``date``, one metric, split by the top values of a field."""

    id: str
    title: str
    description: str
    filter: PanelFilter
    interval: str  # Lens date_histogram interval: 1d, 1w...
    split_field: str
    split_size: int
    rank_by: str  # aggregation of VALUE_FIELD that ranks the split values: max | sum
    metric: str  # aggregation of VALUE_FIELD per point: last_value (by vintage) | sum
    series_type: str  # line | bar_percentage_stacked...
    other_bucket: bool
    y_label: str

    def fields(self) -> set[str]:
        """Every field the panel reads (filter, buckets, metric, sort)."""
        used = self.filter.fields() | {DATE_FIELD, self.split_field, VALUE_FIELD}
        return used | ({VINTAGE_FIELD} if self.metric == "last_value" else set())

    def _columns(self) -> dict[str, dict[str, Any]]:
        metric: dict[str, Any] = {
            "label": self.y_label,
            "customLabel": True,
            "dataType": "number",
            "operationType": self.metric,  # max, sum and last_value are Lens operation names too
            "sourceField": VALUE_FIELD,
            "isBucketed": False,
            "scale": "ratio",
            "params": {"emptyAsNull": True},
        }
        if self.metric == "last_value":
            metric["params"] = {"sortField": VINTAGE_FIELD, "showArrayValues": False}
        return {
            "split": {
                "label": f"Top {self.split_size} values of {self.split_field}",
                "dataType": "string",
                "operationType": "terms",
                "sourceField": self.split_field,
                "isBucketed": True,
                "scale": "ordinal",
                "params": {
                    "size": self.split_size,
                    "orderBy": {"type": "custom"},
                    "orderAgg": {
                        "label": f"{self.rank_by.capitalize()} of {VALUE_FIELD}",
                        "dataType": "number",
                        "operationType": self.rank_by,
                        "sourceField": VALUE_FIELD,
                        "isBucketed": False,
                        "scale": "ratio",
                        "params": {"emptyAsNull": True},
                    },
                    "orderDirection": "desc",
                    "otherBucket": self.other_bucket,
                    "missingBucket": False,
                    "parentFormat": {"id": "terms"},
                },
            },
            "x": {
                "label": DATE_FIELD,
                "dataType": "date",
                "operationType": "date_histogram",
                "sourceField": DATE_FIELD,
                "isBucketed": True,
                "scale": "interval",
                "params": {"interval": self.interval, "includeEmptyRows": True, "dropPartials": False},
            },
            "y": metric,
        }

    def saved_object(self) -> dict[str, Any]:
        layer = f"{self.id}-layer"
        visualization = {
            "legend": {"isVisible": True, "position": "right"},
            "valueLabels": "hide",
            "fittingFunction": "None",
            "axisTitlesVisibilitySettings": {"x": False, "yLeft": True, "yRight": True},
            "tickLabelsVisibilitySettings": {"x": True, "yLeft": True, "yRight": True},
            "gridlinesVisibilitySettings": {"x": True, "yLeft": True, "yRight": True},
            "preferredSeriesType": self.series_type,
            "layers": [
                {
                    "layerId": layer,
                    "layerType": "data",
                    "seriesType": self.series_type,
                    "xAccessor": "x",
                    "splitAccessor": "split",
                    "accessors": ["y"],
                    "palette": {"type": "palette", "name": "default"},
                }
            ],
        }
        state = {
            "visualization": visualization,
            "query": {"query": self.filter.kql(), "language": "kuery"},
            "filters": [],
            "datasourceStates": {
                # The date histogram comes last, so the top values are ranked over the whole time range.
                "formBased": {
                    "layers": {
                        layer: {"columns": self._columns(), "columnOrder": ["split", "x", "y"], "incompleteColumns": {}}
                    }
                },
                "textBased": {"layers": {}},
            },
            "internalReferences": [],
            "adHocDataViews": {},
        }
        return _saved_object(
            "lens",
            self.id,
            {"title": self.title, "description": self.description, "visualizationType": "lnsXY", "state": state},
            [{"type": "index-pattern", "id": DATA_VIEW_ID, "name": f"indexpattern-datasource-layer-{layer}"}],
        )

    def es_request(self, start: str | None = None, end: str | None = None, *, runtime: bool = True) -> dict[str, Any]:
        """What Kibana asks Elasticsearch for this panel: split -> day/week -> metric, plus per-bucket totals.

        ``total`` (every split value, "Other" included) is what percentage stacking divides by. Without
        ``runtime``, runtime fields are expected as stored fields (see RUNTIME_VALUES).
        """
        if self.metric == "last_value":
            point = {"top_metrics": {"metrics": {"field": VALUE_FIELD}, "sort": {VINTAGE_FIELD: "desc"}}}
        else:
            point = {self.metric: {"field": VALUE_FIELD}}
        histogram = {"field": DATE_FIELD, "calendar_interval": self.interval, "min_doc_count": 1}
        return {
            "size": 0,
            "track_total_hits": False,
            "query": self.filter.es_query(start, end),
            "runtime_mappings": _runtime_for(self.fields()) if runtime else {},
            "aggs": {
                "split": {
                    "terms": {"field": self.split_field, "size": self.split_size, "order": {"rank": "desc"}},
                    "aggs": {
                        "rank": {self.rank_by: {"field": VALUE_FIELD}},
                        "x": {"date_histogram": histogram, "aggs": {"y": point}},
                    },
                },
                "total": {"date_histogram": histogram, "aggs": {"y": {"sum": {"field": VALUE_FIELD}}}},
            },
        }


@dataclass(frozen=True)
class RegionMap:
    """A Maps choropleth: EMS France Departments joined on the INSEE code to one aggregation of ``value``."""

    id: str
    title: str
    description: str
    filter: PanelFilter
    join_field: str  # a data-view field holding the bare INSEE department code
    metric: str  # max | sum | avg | min
    metric_label: str

    @property
    def join_source_id(self) -> str:
        return _stable_id(f"{self.id}/join")

    @property
    def join_ref_name(self) -> str:
        """How Kibana names the join's data-view reference: layer_<layer index>_join_<join index>_index_pattern."""
        return "layer_1_join_0_index_pattern"  # the choropleth is layer 1, above the basemap

    @property
    def join_property(self) -> str:
        """The feature property Maps fills from the join (getJoinAggKey in Kibana's maps plugin)."""
        return f"__kbnjoin__{self.metric}_of_{VALUE_FIELD}__{self.join_source_id}"

    def fields(self) -> set[str]:
        return self.filter.fields() | {DATE_FIELD, self.join_field, VALUE_FIELD}

    def layers(self) -> list[dict[str, Any]]:
        basemap = {
            "id": "basemap",
            "label": None,
            "type": "EMS_VECTOR_TILE",
            "sourceDescriptor": {"type": "EMS_TMS", "isAutoSelect": True, "lightModeDefault": "road_map_desaturated"},
            "style": {},
            "visible": True,
            "alpha": 1,
            "minZoom": 0,
            "maxZoom": 24,
        }
        dynamic = {"name": self.join_property, "origin": "join", "label": self.metric_label}
        choropleth = {
            "id": "departments",
            "label": self.title,
            "type": "GEOJSON_VECTOR",
            "sourceDescriptor": {
                "type": "EMS_FILE",
                "id": EMS_DEPARTMENTS_LAYER,
                "tooltipProperties": ["label_fr", EMS_DEPARTMENTS_JOIN_FIELD],
            },
            "style": {
                "type": "VECTOR",
                "properties": {
                    "fillColor": {
                        "type": "DYNAMIC",
                        "options": {
                            "field": dynamic,
                            "color": "Green to Red",
                            "fieldMetaOptions": {"isEnabled": False, "sigma": 3},
                        },
                    },
                    "lineColor": {"type": "STATIC", "options": {"color": "#FFFFFF"}},
                    "lineWidth": {"type": "STATIC", "options": {"size": 1}},
                },
                "isTimeAware": True,
            },
            "visible": True,
            "alpha": 0.8,
            "minZoom": 0,
            "maxZoom": 24,
            "joins": [
                {
                    "leftField": EMS_DEPARTMENTS_JOIN_FIELD,
                    "right": {
                        "type": "ES_TERM_SOURCE",
                        "id": self.join_source_id,
                        "indexPatternRefName": self.join_ref_name,
                        "indexPatternTitle": alias(),
                        "term": self.join_field,
                        "metrics": [{"type": self.metric, "field": VALUE_FIELD, "label": self.metric_label}],
                        "whereQuery": {"query": self.filter.kql(), "language": "kuery"},
                        "applyGlobalQuery": True,
                        "applyGlobalTime": True,
                        "applyForceRefresh": True,
                    },
                }
            ],
        }
        return [basemap, choropleth]

    def saved_object(self) -> dict[str, Any]:
        state = {
            "zoom": 4.7,
            "center": {"lon": 2.45, "lat": 46.6},
            "timeFilters": {"from": TIME_FROM, "to": TIME_TO},
            "refreshConfig": {"isPaused": True, "interval": 0},
            "query": {"query": "", "language": "kuery"},
            "filters": [],
            "settings": {"autoFitToDataBounds": False, "initialLocation": "LAST_SAVED_LOCATION"},
        }
        attributes = {
            "title": self.title,
            "description": self.description,
            "layerListJSON": _compact(self.layers()),
            "mapStateJSON": _compact(state),
            "uiStateJSON": _compact({"isLayerTOCOpen": True, "openTOCDetails": ["departments"]}),
        }
        refs = [{"type": "index-pattern", "id": DATA_VIEW_ID, "name": self.join_ref_name}]
        return _saved_object("map", self.id, attributes, refs)

    def es_request(self, start: str | None = None, end: str | None = None, *, runtime: bool = True) -> dict[str, Any]:
        """The join request Maps sends (aggregation named ``join``, as in Kibana's ESTermSource)."""
        return {
            "size": 0,
            "track_total_hits": False,
            "query": self.filter.es_query(start, end),
            "runtime_mappings": _runtime_for(self.fields()) if runtime else {},
            "aggs": {
                "join": {
                    "terms": {"field": self.join_field, "size": 65535},
                    "aggs": {f"{self.metric}_of_{VALUE_FIELD}": {self.metric: {"field": VALUE_FIELD}}},
                }
            },
        }


def _runtime_for(fields: set[str]) -> dict[str, Any]:
    return {name: spec for name, spec in RUNTIME_FIELDS.items() if name in fields}


def _saved_object(kind: str, oid: str, attributes: dict[str, Any], references: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "type": kind,
        "id": oid,
        "attributes": attributes,
        "references": references,
        "managed": False,
        "coreMigrationVersion": CORE_MIGRATION_VERSION,
        "typeMigrationVersion": TYPE_MIGRATION_VERSION[kind],
    }


# The panels. Hospital figures: SPF, departments, all sexes/ages (as the dashboard API's map and series).
HOSPITAL = PanelFilter(
    {
        "metric": ("hospital_occupancy",),
        "source_id": ("spf_donnees_hospitalieres",),
        "location_level": ("department",),
        **_default_dims("sex", "age_group", "variant"),
    }
)
# Variants: the source that names BF.7 (ECDC counts it inside BA.5), France, every variant but the total.
VARIANTS = PanelFilter(
    {
        "metric": ("variant_share",),
        "source_id": ("gerstung_variant_share",),
        "location_key": ("FR",),
        **_default_dims("sex", "age_group"),
    },
    exclude={"variant": ("all",)},
)

HOSPITAL_MAP = RegionMap(
    id="covidflow-hospital-occupancy-map",
    title="Hospital occupancy by department (peak in the time range)",
    description=(
        "SPF donnees-hospitalieres, all sexes: the highest number of COVID-19 patients in hospital on any day "
        "of the selected time range. Boundaries: Elastic Maps Service France Departments, joined on the INSEE code."
    ),
    filter=HOSPITAL,
    join_field="department_code",
    metric="max",
    metric_label="Peak hospital occupancy (patients)",
)
HOSPITAL_SERIES = XYPanel(
    id="covidflow-hospital-occupancy-series",
    title="Hospital occupancy, top 5 departments",
    description=(
        "SPF donnees-hospitalieres, all sexes: patients in hospital per day, newest vintage of each day "
        "(last value sorted by vintage), for the five departments with the highest peak in the time range."
    ),
    filter=HOSPITAL,
    interval="1d",
    split_field="location_name.raw",
    split_size=5,
    rank_by="max",
    metric="last_value",
    series_type="line",
    other_bucket=False,
    y_label="Patients in hospital",
)
VARIANT_SHARE = XYPanel(
    id="covidflow-variant-share",
    title="Variant share in France, BF.7 family grouped",
    description=(
        "Gerstung lab model output: share of sequences per variant, per week, stacked to 100 %. BF.7, its "
        "sub-lineages and BA.5.2.1.7 are one series (runtime field variant_group); smaller variants fall into Other."
    ),
    filter=VARIANTS,
    interval="1w",
    split_field="variant_group",
    split_size=12,
    rank_by="sum",
    metric="sum",
    series_type="bar_percentage_stacked",
    other_bucket=True,
    y_label="Share of sequences",
)
XY_PANELS = (HOSPITAL_SERIES, VARIANT_SHARE)
MAPS = (HOSPITAL_MAP,)
DASHBOARD_ID = "covidflow-overview"
# (object, type, x, y, w, h) on Kibana's 48-column grid.
LAYOUT = (
    (HOSPITAL_MAP, "map", 0, 0, 20, 18),
    (HOSPITAL_SERIES, "lens", 20, 0, 28, 18),
    (VARIANT_SHARE, "lens", 0, 18, 48, 15),
)


def data_view() -> dict[str, Any]:
    attributes = {
        "title": alias(),
        "name": "covidflow observations",
        "timeFieldName": DATE_FIELD,
        "fields": "[]",
        "runtimeFieldMap": _compact(RUNTIME_FIELDS),
        "fieldAttrs": _compact(
            {
                "department_code": {"customLabel": "Department INSEE code (from location_key)"},
                "variant_group": {"customLabel": "Variant (BF.7 family grouped)"},
            }
        ),
    }
    return _saved_object("index-pattern", DATA_VIEW_ID, attributes, [])


def dashboard() -> dict[str, Any]:
    panels, refs = [], []
    for n, (obj, kind, x, y, w, h) in enumerate(LAYOUT, start=1):
        index = str(n)
        panels.append(
            {
                "version": DASHBOARD_PANEL_VERSION,
                "type": kind,
                "gridData": {"x": x, "y": y, "w": w, "h": h, "i": index},
                "panelIndex": index,
                "embeddableConfig": {"enhancements": {}},
                "panelRefName": f"panel_{index}",
            }
        )
        refs.append({"name": f"{index}:panel_{index}", "type": kind, "id": obj.id})
    attributes = {
        "title": "covidflow: hospitals and variants",
        "description": "Imported from include/kibana/saved_objects.ndjson (generated by covidflow.show.kibana).",
        "panelsJSON": _compact(panels),
        "optionsJSON": _compact(
            {"useMargins": True, "syncColors": False, "syncCursor": True, "hidePanelTitles": False}
        ),
        "timeRestore": True,
        "timeFrom": TIME_FROM,
        "timeTo": TIME_TO,
        "refreshInterval": {"pause": True, "value": 60000},
        "version": 1,
        "kibanaSavedObjectMeta": {
            "searchSourceJSON": _compact({"query": {"query": "", "language": "kuery"}, "filter": []})
        },
    }
    return _saved_object("dashboard", DASHBOARD_ID, attributes, refs)


def saved_objects() -> list[dict[str, Any]]:
    """Every object, referenced ones first."""
    return [data_view(), *(p.saved_object() for p in XY_PANELS), *(m.saved_object() for m in MAPS), dashboard()]


def render(objects: list[dict[str, Any]] | None = None) -> str:
    objs = saved_objects() if objects is None else objects
    return "".join(json.dumps(o, ensure_ascii=False, sort_keys=True) + "\n" for o in objs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m covidflow.show.kibana", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when the file is stale")
    parser.add_argument("--path", type=Path, default=NDJSON_PATH)
    args = parser.parse_args(argv)
    text = render()
    current = args.path.read_text(encoding="utf-8") if args.path.exists() else None
    if args.check:
        if current != text:
            print(f"{args.path} is stale: run python -m covidflow.show.kibana", file=sys.stderr)
            return 1
        return 0
    if current != text:
        args.path.write_text(text, encoding="utf-8")
    print(f"{args.path}: {len(saved_objects())} saved objects")
    return 0


if __name__ == "__main__":
    sys.exit(main())
