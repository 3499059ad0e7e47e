"""The canonical schema: generated artifacts never drift, and every store agrees with observation.yaml."""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime

import yaml

from covidflow import PROJECT_ROOT
from covidflow.catalog.schema import load_schema, record_id
from covidflow.index.es_template import TEMPLATE_PATH, first_index_body, generate_template, render
from covidflow.normalise.spark_schema import spark_schema
from covidflow.store.cassandra_schema import CQL_PATH, generate_cql, statements

RAW = yaml.safe_load((PROJECT_ROOT / "include" / "schemas" / "observation.yaml").read_text(encoding="utf-8"))
YAML_FIELDS = [f["name"] for f in RAW["fields"]]


def test_committed_cql_is_regenerated_identically() -> None:
    assert CQL_PATH.read_text(encoding="utf-8") == generate_cql()


def test_committed_es_template_is_regenerated_identically() -> None:
    assert TEMPLATE_PATH.read_text(encoding="utf-8") == render(generate_template())


def test_schema_has_a_version_carried_by_the_artifacts() -> None:
    assert RAW["version"] >= 1
    assert f"v{RAW['version']}" in CQL_PATH.read_text(encoding="utf-8")
    assert json.loads(TEMPLATE_PATH.read_text(encoding="utf-8"))["version"] == RAW["version"]


def _cql_tables(cql: str) -> dict[str, dict[str, str]]:
    tables = {}
    for stmt in statements(cql):
        m = re.match(r"CREATE TABLE IF NOT EXISTS \w+\.(\w+) \((.*)\)\s+WITH", stmt, re.S)
        if m:
            cols = {}
            for line in m.group(2).splitlines():
                line = line.strip().rstrip(",")
                if line and not line.startswith("PRIMARY KEY"):
                    name, typ = line.split(" ", 1)
                    cols[name] = typ
            tables[m.group(1)] = cols
    return tables


def test_cql_columns_agree_with_yaml() -> None:
    tables = _cql_tables(CQL_PATH.read_text(encoding="utf-8"))
    assert set(tables) == {"observations_latest", "observations_by_vintage", "vintages_by_source"}
    expected_type = {f["name"]: RAW["types"][f["type"]]["cql"] for f in RAW["fields"]}
    for name in ("observations_latest", "observations_by_vintage"):
        assert list(tables[name]) == YAML_FIELDS, name
    for name, cols in tables.items():
        for col, typ in cols.items():
            assert typ == expected_type[col], (name, col)


def test_cql_primary_keys() -> None:
    cql = CQL_PATH.read_text(encoding="utf-8")
    assert "PRIMARY KEY ((location_key, metric), date, source_id, period, sex, age_group, variant, upstream)" in cql
    assert "PRIMARY KEY ((source_id, vintage, location_key, metric), date, period," in cql
    assert "'replication_factor': 1" in cql
    assert "UnifiedCompactionStrategy" in cql


def test_replication_is_configurable() -> None:
    cql = generate_cql(replication={"class": "NetworkTopologyStrategy", "dc1": 3})
    assert "{'class': 'NetworkTopologyStrategy', 'dc1': 3}" in cql


def test_es_mapping_agrees_with_yaml() -> None:
    tpl = json.loads(TEMPLATE_PATH.read_text(encoding="utf-8"))
    props = tpl["template"]["mappings"]["properties"]
    assert list(props) == YAML_FIELDS
    for f in RAW["fields"]:
        assert props[f["name"]]["type"] == RAW["types"][f["type"]]["es"], f["name"]
    assert props["location_key"]["type"] == "keyword"
    assert props["metric"]["type"] == "keyword"
    assert props["location_point"]["type"] == "geo_point"
    assert props["date"]["type"] == "date"
    assert props["location_name"]["fields"]["raw"]["type"] == "keyword"
    assert tpl["template"]["mappings"]["dynamic"] == "strict"
    assert tpl["index_patterns"] == ["covid-observations-*"]
    name, body = first_index_body()
    assert name == "covid-observations-000001"
    assert body == {"aliases": {"covid-observations": {"is_write_index": True}}}


def test_spark_schema_agrees_with_yaml() -> None:
    from pyspark.sql import types as t

    st = spark_schema()
    assert [f.name for f in st.fields] == YAML_FIELDS
    expected = {
        "string": t.StringType(),
        "text": t.StringType(),
        "int": t.IntegerType(),
        "long": t.LongType(),
        "double": t.DoubleType(),
        "date": t.DateType(),
        "timestamp": t.TimestampType(),
        "geo_point": t.StructType(
            [t.StructField("lat", t.DoubleType(), True), t.StructField("lon", t.DoubleType(), True)]
        ),
    }
    for sf, f in zip(st.fields, RAW["fields"], strict=True):
        assert sf.dataType == expected[f["type"]], f["name"]
        assert sf.nullable == f["nullable"], f["name"]


def test_record_id_is_deterministic_and_sensitive_to_every_key_field() -> None:
    base = {
        "source_id": "spf_donnees_hospitalieres",
        "location_key": "FR-D75",
        "period": "day",
        "date": date(2020, 4, 1),
        "metric": "hospital_occupancy",
        "sex": "all",
        "age_group": "all",
        "variant": "all",
        "upstream": "-",
        "vintage": datetime(2020, 6, 30, tzinfo=UTC),
    }
    rid = record_id(base)
    assert rid == record_id(dict(base)) and len(rid) == 32
    assert RAW["record_id"]["fields"] == list(base)
    for key in base:
        changed = dict(base, **{key: "x"})
        assert record_id(changed) != rid, key


def test_load_schema_matches_file() -> None:
    s = load_schema()
    assert s.version == RAW["version"] and s.field_names == YAML_FIELDS
