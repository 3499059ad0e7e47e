"""include/kibana/saved_objects.ndjson: generated, self-consistent, and built on fields and names that exist.

Kibana cannot run here, so these tests check what can be checked without it: the file is what
covidflow.show.kibana generates; every reference and embedded JSON string resolves; every field a panel
reads is aggregatable in the generated index template (or a runtime field over such fields); every name in
a filter is in the vocabularies and in the sample data; the Painless of the runtime fields does what its
Python twin does; and each panel's Elasticsearch request (run by tests/integration/test_kibana_queries.py)
asks for what the Lens or Maps object would.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from functools import cache
from typing import Any

import pytest

from covidflow.catalog.locations import load_registry
from covidflow.catalog.metrics import load_metrics
from covidflow.catalog.schema import load_schema
from covidflow.catalog.specs import find_spec, spec_paths
from covidflow.index.es_template import generate_template
from covidflow.normalise.preview import run_file
from covidflow.show import kibana
from covidflow.show.es_queries import variant_family

AGGREGATABLE = {"keyword", "integer", "long", "double", "float", "date"}
LEVELS = {"country", "region", "department", "collectivity", "aggregate"}
JSON_STRING_KEYS = {"runtimeFieldMap", "fieldAttrs", "fields"}


@cache
def objects() -> list[dict[str, Any]]:
    lines = kibana.NDJSON_PATH.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def by_type(kind: str) -> list[dict[str, Any]]:
    return [o for o in objects() if o["type"] == kind]


def embedded(obj: dict[str, Any], key: str) -> Any:
    return json.loads(obj["attributes"][key])


def lens_layers(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return obj["attributes"]["state"]["datasourceStates"]["formBased"]["layers"]


def map_joins(obj: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for layer in embedded(obj, "layerListJSON"):
        for join in layer.get("joins", []):
            yield layer, join


def data_view_runtime() -> dict[str, Any]:
    return embedded(by_type("index-pattern")[0], "runtimeFieldMap")


def parse_kql(query: str) -> tuple[dict[str, tuple[str, ...]], dict[str, tuple[str, ...]]]:
    """The subset PanelFilter.kql writes: `f : "v"`, `f : ("a" or "b")`, `not ...`, joined by `and`."""
    include: dict[str, tuple[str, ...]] = {}
    exclude: dict[str, tuple[str, ...]] = {}
    for clause in query.split(" and "):
        target = exclude if clause.startswith("not ") else include
        name, sep, rest = clause.removeprefix("not ").partition(" : ")
        assert sep and re.fullmatch(r"[\w.]+", name), clause
        values = re.findall(r'"((?:[^"\\]|\\.)*)"', rest)
        assert values, clause
        target[name] = tuple(values)
    return include, exclude


def panel_queries() -> list[tuple[str, str]]:
    """(object id, KQL) of every query the saved objects carry."""
    out = [(o["id"], o["attributes"]["state"]["query"]["query"]) for o in by_type("lens")]
    out += [(o["id"], j["right"]["whereQuery"]["query"]) for o in by_type("map") for _, j in map_joins(o)]
    return out


# --- The file -------------------------------------------------------------------------------------------------


def test_committed_file_is_the_generated_one() -> None:
    assert kibana.NDJSON_PATH.read_text(encoding="utf-8") == kibana.render(), "run: python -m covidflow.show.kibana"
    assert kibana.main(["--check"]) == 0


def test_check_mode_reports_a_stale_file(tmp_path: Any) -> None:
    stale = tmp_path / "saved_objects.ndjson"
    stale.write_text("{}\n")
    assert kibana.main(["--check", "--path", str(stale)]) == 1
    assert kibana.main(["--path", str(stale)]) == 0
    assert stale.read_text(encoding="utf-8") == kibana.render()


def test_every_object_is_complete_and_unique() -> None:
    assert {o["type"] for o in objects()} == {"index-pattern", "lens", "map", "dashboard"}
    for obj in objects():
        assert obj["type"] and obj["id"] and isinstance(obj["attributes"], dict), obj.get("id")
        assert obj["attributes"].get("title"), obj["id"]
        assert isinstance(obj["references"], list)
        assert obj["coreMigrationVersion"] and obj["typeMigrationVersion"]
    keys = [(o["type"], o["id"]) for o in objects()]
    assert len(keys) == len(set(keys))


def test_every_reference_resolves_within_the_file() -> None:
    present = {(o["type"], o["id"]) for o in objects()}
    for obj in objects():
        names = [r["name"] for r in obj["references"]]
        assert len(names) == len(set(names)), obj["id"]
        for ref in obj["references"]:
            assert (ref["type"], ref["id"]) in present, (obj["id"], ref)


def test_every_embedded_json_string_parses() -> None:
    def walk(node: Any, path: str) -> Iterator[tuple[str, str]]:
        if isinstance(node, dict):
            for key, value in node.items():
                if isinstance(value, str) and (key.endswith("JSON") or key in JSON_STRING_KEYS):
                    yield f"{path}.{key}", value
                else:
                    yield from walk(value, f"{path}.{key}")

    found = [(f"{o['id']}{p}", text) for o in objects() for p, text in walk(o["attributes"], "")]
    assert {p.rsplit(".", 1)[1] for p, _ in found} >= {
        "runtimeFieldMap",
        "layerListJSON",
        "mapStateJSON",
        "uiStateJSON",
        "panelsJSON",
        "optionsJSON",
        "searchSourceJSON",
    }
    for path, text in found:
        json.loads(text)  # raises with the position if not JSON
        assert path


# --- Inside each object ---------------------------------------------------------------------------------------


def test_lens_layers_reference_the_data_view_and_existing_columns() -> None:
    for obj in by_type("lens"):
        refs = {r["name"]: r for r in obj["references"]}
        vis = obj["attributes"]["state"]["visualization"]
        for layer_id, layer in lens_layers(obj).items():
            ref = refs[f"indexpattern-datasource-layer-{layer_id}"]
            assert (ref["type"], ref["id"]) == ("index-pattern", kibana.DATA_VIEW_ID)
            assert sorted(layer["columnOrder"]) == sorted(layer["columns"])
            order = [layer["columns"][c] for c in layer["columnOrder"]]
            assert [c["isBucketed"] for c in order] == sorted((c["isBucketed"] for c in order), reverse=True)
            assert order[-2]["operationType"] == "date_histogram"  # last bucket: top values span the range
        for xy in vis["layers"]:
            columns = lens_layers(obj)[xy["layerId"]]["columns"]
            for accessor in (xy["xAccessor"], xy["splitAccessor"], *xy["accessors"]):
                assert accessor in columns, (obj["id"], accessor)


def test_map_join_property_and_references() -> None:
    for obj in by_type("map"):
        refs = {r["name"] for r in obj["references"]}
        joins = list(map_joins(obj))
        assert joins
        for layer, join in joins:
            right = join["right"]
            assert right["indexPatternRefName"] in refs
            # Kibana's own naming (maps plugin, extractReferences): layer_<layer index>_join_<join index>_...
            position = (embedded(obj, "layerListJSON").index(layer), layer["joins"].index(join))
            assert right["indexPatternRefName"] == "layer_{}_join_{}_index_pattern".format(*position)
            assert "indexPatternId" not in right  # extracted to references, as Kibana stores it
            # Kibana's getJoinAggKey: __kbnjoin__<agg>_of_<field>__<join source id>
            keys = {f"__kbnjoin__{m['type']}_of_{m['field']}__{right['id']}" for m in right["metrics"]}
            fill = layer["style"]["properties"]["fillColor"]["options"]["field"]
            assert fill["origin"] == "join" and fill["name"] in keys
            assert layer["sourceDescriptor"] == {
                "type": "EMS_FILE",
                "id": "france_departments",
                "tooltipProperties": ["label_fr", "insee"],
            }
            assert join["leftField"] == "insee"


def test_dashboard_panels_resolve_and_fit_the_grid() -> None:
    (board,) = by_type("dashboard")
    refs = {r["name"]: r for r in board["references"]}
    cells: set[tuple[int, int]] = set()
    panels = embedded(board, "panelsJSON")
    for panel in panels:
        ref = refs[f"{panel['panelIndex']}:{panel['panelRefName']}"]
        assert ref["type"] == panel["type"]
        grid = panel["gridData"]
        assert grid["i"] == panel["panelIndex"] and grid["x"] + grid["w"] <= 48
        area = {
            (x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not area & cells, panel["panelIndex"]
        cells |= area
    assert {r["id"] for r in refs.values()} == {o["id"] for o in objects() if o["type"] in ("lens", "map")}
    assert board["attributes"]["timeRestore"] is True


# --- Fields and names -----------------------------------------------------------------------------------------


def template_type(field: str) -> str | None:
    props = generate_template()["template"]["mappings"]["properties"]
    name, _, sub = field.partition(".")
    prop = props.get(name)
    if prop and sub:
        prop = prop.get("fields", {}).get(sub)
    return prop["type"] if prop else None


def fields_used() -> set[tuple[str, str]]:
    """(object id, field) for every field the saved objects read."""
    out = {(o["id"], o["attributes"]["timeFieldName"]) for o in by_type("index-pattern")}
    for obj in by_type("lens"):
        for layer in lens_layers(obj).values():
            for col in layer["columns"].values():
                params = col.get("params", {})
                for name in (
                    col.get("sourceField"),
                    params.get("sortField"),
                    params.get("orderAgg", {}).get("sourceField"),
                ):
                    if name:
                        out.add((obj["id"], name))
    for obj in by_type("map"):
        for _, join in map_joins(obj):
            out.add((obj["id"], join["right"]["term"]))
            out |= {(obj["id"], m["field"]) for m in join["right"]["metrics"]}
    for oid, query in panel_queries():
        include, exclude = parse_kql(query)
        out |= {(oid, name) for name in [*include, *exclude]}
    return out


def test_every_field_used_is_aggregatable() -> None:
    runtime = data_view_runtime()
    used = fields_used()
    assert {f for _, f in used} >= {"date", "value", "vintage", "metric", "location_name.raw", "department_code"}
    for oid, name in used:
        if name in runtime:
            assert runtime[name]["type"] == "keyword", name
            assert template_type(name) is None, f"runtime field {name} shadows a stored field"
        else:
            assert template_type(name) in AGGREGATABLE, f"{oid}: {name} is {template_type(name)}"


def test_runtime_scripts_read_stored_keyword_fields() -> None:
    runtime = data_view_runtime()
    assert runtime == kibana.RUNTIME_FIELDS and set(runtime) == set(kibana.RUNTIME_VALUES)
    for name, spec in runtime.items():
        reads = set(re.findall(r"doc\['([\w.]+)'\]", spec["script"]["source"]))
        assert reads, name
        assert {template_type(f) for f in reads} == {"keyword"}, name


@cache
def sample_records(source: str) -> tuple[dict[str, Any], ...]:
    spec = find_spec(source)
    records, _ = run_file(spec, spec.sample_path)
    return tuple(records)


def test_filter_names_exist_in_the_vocabularies_and_the_samples() -> None:
    schema, metrics, places = load_schema(), load_metrics(), load_registry().places
    sources = {p.stem for p in spec_paths()}
    checks: dict[str, Callable[[str], bool]] = {
        "metric": lambda v: v in metrics,
        "source_id": lambda v: v in sources,
        "location_key": lambda v: v in places,
        "location_level": lambda v: v in LEVELS,
        **{dim: (lambda v, d=dim: v == schema.dimension_defaults[d]) for dim in ("sex", "age_group", "variant")},
    }
    for oid, query in panel_queries():
        include, exclude = parse_kql(query)
        for name, values in [*include.items(), *exclude.items()]:
            assert all(checks[name](v) for v in values), (oid, name, values)
        (source,) = include["source_id"]
        matching = [
            r
            for r in sample_records(source)
            if all(r[k] in v for k, v in include.items()) and not any(r[k] in v for k, v in exclude.items())
        ]
        assert matching, f"{oid}: the {source} sample has no record for {query}"
        if "variant" in exclude:
            assert any(variant_family(r["variant"]) for r in matching), "the BF.7 family is not in the data"


def test_kql_round_trips_each_panel_filter() -> None:
    panels = [*kibana.XY_PANELS, *kibana.MAPS]
    for panel in panels:
        assert parse_kql(panel.filter.kql()) == (dict(panel.filter.include), dict(panel.filter.exclude))
    assert set(dict(panel_queries()).values()) == {p.filter.kql() for p in panels}


def test_kql_quotes_and_escapes_values() -> None:
    f = kibana.PanelFilter({"variant": ("BF.7", 'a"b\\c')}, exclude={"sex": ("all",)})
    assert f.kql() == 'variant : ("BF.7" or "a\\"b\\\\c") and not sex : "all"'
    assert f.es_query("2020-01-01") == {
        "bool": {
            "filter": [{"terms": {"variant": ["BF.7", 'a"b\\c']}}, {"range": {"date": {"gte": "2020-01-01"}}}],
            "must_not": [{"term": {"sex": "all"}}],
        }
    }


# --- Runtime fields: the Painless against its Python twin -----------------------------------------------------


def painless_to_python(source: str) -> Callable[[dict[str, list[str]]], list[str]]:
    """Evaluate the Painless subset the runtime fields use (if/else, String locals, emit, doc values)."""

    def expr(text: str) -> str:
        text = re.sub(r"doc\['([\w.]+)'\]\.size\(\)", r"len(doc.get('\1', []))", text)
        text = re.sub(r"doc\['([\w.]+)'\]\.value", r"doc['\1'][0]", text)
        text = re.sub(r"\.substring\((\d+)\)", r"[\1:]", text)
        return text.replace("&&", " and ").replace("||", " or ").replace(".startsWith(", ".startswith(")

    lines, depth = ["def script(doc, emit):"], 1
    for token in (t.strip() for t in re.findall(r"[{};]|[^{};]+", source)):
        if token in ("", ";", "{"):
            continue
        if token == "}":
            depth -= 1
        elif m := re.fullmatch(r"if \((.*)\)", token):
            lines.append("    " * depth + f"if {expr(m[1])}:")
            depth += 1
        elif token == "else":
            lines.append("    " * depth + "else:")
            depth += 1
        elif m := re.fullmatch(r"String (\w+) = (.+)", token):
            lines.append("    " * depth + f"{m[1]} = {expr(m[2])}")
        elif m := re.fullmatch(r"emit\((.+)\)", token):
            lines.append("    " * depth + f"emit({expr(m[1])})")
        else:
            raise AssertionError(f"Painless outside the evaluated subset: {token!r}")
    assert depth == 1, "unbalanced braces"
    scope: dict[str, Any] = {}
    exec("\n".join(lines), scope)  # test-only: our own generated source

    def run(doc: dict[str, list[str]]) -> list[str]:
        out: list[str] = []
        scope["script"](doc, out.append)
        return out

    return run


def runtime_cases() -> list[dict[str, Any]]:
    docs = {
        (r["location_level"], r["location_key"], r["variant"]): r
        for source in ("spf_donnees_hospitalieres", "gerstung_variant_share", "ecdc_erviss_variants")
        for r in sample_records(source)
    }
    cases: list[dict[str, Any]] = [
        {"location_level": level, "location_key": key, "variant": variant} for level, key, variant in docs
    ]
    cases += [{"variant": v} for v in ("BF.7.4.1", "BF.70", "BA.5.2.1.7", "BA.5.2.1", "BF", "")]
    cases += [{"location_level": "department", "location_key": "XX-D01"}, {"location_key": "FR-D75"}, {}]
    return cases


@pytest.mark.parametrize("name", sorted(kibana.RUNTIME_FIELDS))
def test_painless_emits_what_the_python_twin_returns(name: str) -> None:
    script = painless_to_python(kibana.RUNTIME_FIELDS[name]["script"]["source"])
    for case in runtime_cases():
        doc = {k: [v] for k, v in case.items()}
        expected = kibana.RUNTIME_VALUES[name](case)
        assert script(doc) == ([] if expected is None else [expected]), (name, case)


def test_department_code_is_the_insee_code_ems_joins_on() -> None:
    registry = load_registry()
    departments = [p for p in registry.places.values() if p.level == "department"]
    assert len(departments) == 101
    for place in departments:
        code = kibana.department_code({"location_level": "department", "location_key": place.key})
        assert code is not None and registry.resolve(code, "fr_department") == place
    assert kibana.department_code({"location_level": "region", "location_key": "FR-R11"}) is None


def test_variant_group_is_the_dashboard_family() -> None:
    for variant in ("BF.7", "BF.7.4.1", "BA.5.2.1.7", "BF.70", "BQ.1.1", "all"):
        group = kibana.variant_group({"variant": variant})
        assert (group == kibana.BF7_FAMILY) is variant_family(variant)
        assert group in (kibana.BF7_FAMILY, variant)


# --- The Elasticsearch requests the integration test runs ask for what the objects show -----------------------


def test_xy_requests_mirror_the_lens_columns() -> None:
    by_id = {o["id"]: o for o in by_type("lens")}
    for panel in kibana.XY_PANELS:
        (layer,) = lens_layers(by_id[panel.id]).values()
        cols = layer["columns"]
        split, x, y = (cols[c] for c in layer["columnOrder"])
        req = panel.es_request("2020-01-01", "2020-12-31")
        terms = req["aggs"]["split"]
        assert terms["terms"]["field"] == split["sourceField"] and terms["terms"]["size"] == split["params"]["size"]
        rank = split["params"]["orderAgg"]
        assert terms["aggs"]["rank"] == {rank["operationType"]: {"field": rank["sourceField"]}}
        assert split["params"]["orderBy"] == {"type": "custom"} and split["params"]["orderDirection"] == "desc"
        hist = terms["aggs"]["x"]["date_histogram"]
        assert (hist["field"], hist["calendar_interval"]) == (x["sourceField"], x["params"]["interval"])
        point = terms["aggs"]["x"]["aggs"]["y"]
        if y["operationType"] == "last_value":
            # Lens sends top_metrics for last value when showArrayValues is off.
            assert y["params"]["showArrayValues"] is False
            assert point == {
                "top_metrics": {"metrics": {"field": y["sourceField"]}, "sort": {y["params"]["sortField"]: "desc"}}
            }
        else:
            assert point == {y["operationType"]: {"field": y["sourceField"]}}
        assert req["query"] == panel.filter.es_query("2020-01-01", "2020-12-31")
        assert by_id[panel.id]["attributes"]["state"]["query"]["query"] == panel.filter.kql()
        runtime = {f for f in (split["sourceField"], y["sourceField"]) if f in kibana.RUNTIME_FIELDS}
        assert req["runtime_mappings"] == {f: kibana.RUNTIME_FIELDS[f] for f in runtime}
        assert panel.es_request(runtime=False)["runtime_mappings"] == {}


def test_map_request_mirrors_the_join() -> None:
    by_id = {o["id"]: o for o in by_type("map")}
    for panel in kibana.MAPS:
        ((_, join),) = map_joins(by_id[panel.id])
        right = join["right"]
        req = panel.es_request()
        (metric,) = right["metrics"]
        assert req["aggs"]["join"]["terms"]["field"] == right["term"]
        assert req["aggs"]["join"]["aggs"] == {
            f"{metric['type']}_of_{metric['field']}": {metric["type"]: {"field": metric["field"]}}
        }
        assert req["query"] == panel.filter.es_query() and right["whereQuery"]["query"] == panel.filter.kql()
        assert req["runtime_mappings"] == {right["term"]: kibana.RUNTIME_FIELDS[right["term"]]}
