"""Generate the Elasticsearch composable index template from observation.yaml.

Mappings are explicit and ``dynamic: strict``: a document with a field the schema does not know is
refused instead of silently growing the mapping. The write alias lives on the first concrete index
(see :func:`first_index_body`), because a template cannot mark one alias as the write index.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from covidflow import PROJECT_ROOT
from covidflow.catalog.schema import ObservationSchema, load_schema
from covidflow.replication import elasticsearch_settings

TEMPLATE_PATH = PROJECT_ROOT / "include" / "schemas" / "elasticsearch_template.json"
TEMPLATE_NAME = "covid-observations"


def _property(es_type: str) -> dict[str, Any]:
    if es_type == "text":
        return {"type": "text", "fields": {"raw": {"type": "keyword", "ignore_above": 256}}}
    if es_type == "date":
        return {"type": "date", "format": "strict_date_optional_time"}
    return {"type": es_type}


def generate_template(
    schema: ObservationSchema | None = None, *, replicas: int | None = None, shards: int | None = None
) -> dict[str, Any]:
    """The body for ``PUT _index_template/covid-observations``. Shards and replicas default to the configured
    ones (include/config/replication.yaml: 1 and 0 for one node), so every caller installs the same template."""
    schema = schema or load_schema()
    configured = elasticsearch_settings()
    shards = configured["number_of_shards"] if shards is None else shards
    replicas = configured["number_of_replicas"] if replicas is None else replicas
    es = schema.elasticsearch
    properties = {f.name: _property(schema.store_type(f, "es")) for f in schema.fields}
    return {
        "index_patterns": list(es["index_patterns"]),
        "priority": 200,
        "version": schema.version,
        "_meta": {
            "generated_from": "include/schemas/observation.yaml",
            "schema": schema.name,
            "schema_version": schema.version,
            "write_alias": es["write_alias"],
        },
        "template": {
            "settings": {"number_of_shards": shards, "number_of_replicas": replicas},
            "mappings": {"dynamic": "strict", "_source": {"enabled": True}, "properties": properties},
        },
    }


def first_index_body(schema: ObservationSchema | None = None) -> tuple[str, dict[str, Any]]:
    """Name and body of the first index, which carries the write alias (later indices come by rollover)."""
    es = (schema or load_schema()).elasticsearch
    return es["first_index"], {"aliases": {es["write_alias"]: {"is_write_index": True}}}


def render(template: dict[str, Any]) -> str:
    return json.dumps(template, indent=2, ensure_ascii=False) + "\n"


def write(path: Path = TEMPLATE_PATH) -> None:
    path.write_text(render(generate_template()), encoding="utf-8")


if __name__ == "__main__":
    write()
