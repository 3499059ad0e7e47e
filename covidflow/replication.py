"""Replication of the stores as configuration: include/config/replication.yaml, single-node values by default.

The keyspace, the index template and the ops report index all take their copies from here, so moving to a
cluster is a change of configuration, not of code. ``COVIDFLOW_REPLICATION_CONFIG`` replaces the whole file,
as the other ``COVIDFLOW_*_CONFIG`` variables do. Not cached: read only when a keyspace or index is created.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from covidflow import PROJECT_ROOT

CONFIG_PATH = PROJECT_ROOT / "include" / "config" / "replication.yaml"
CONFIG_ENV = "COVIDFLOW_REPLICATION_CONFIG"
STRATEGIES = ("SimpleStrategy", "NetworkTopologyStrategy")
#: Datacenter names go into CQL between quotes: letters, digits, '_', '-' and '.' only.
_DC_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


class ReplicationConfigError(ValueError):
    """The replication file asks for something the stores cannot do (it names the file and the key)."""


def replication_config(path: Path | str | None = None) -> dict[str, Any]:
    """The parsed file (``COVIDFLOW_REPLICATION_CONFIG`` or include/config/replication.yaml)."""
    source = Path(path or os.environ.get(CONFIG_ENV) or CONFIG_PATH)
    data = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ReplicationConfigError(f"{source}: expected a YAML mapping")
    return {**data, "_source": str(source)}


def _count(value: Any, where: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ReplicationConfigError(f"{where} must be a whole number >= {minimum}, not {value!r}")
    return value


def cassandra_replication(config: dict[str, Any] | None = None) -> dict[str, str | int]:
    """The keyspace's ``replication`` map for CQL: SimpleStrategy with one factor, or NetworkTopologyStrategy
    with one factor per datacenter (SimpleStrategy ignores racks and datacenters: one datacenter only)."""
    cfg = config if config is not None else replication_config()
    where = f"{cfg.get('_source', 'replication config')}: cassandra.keyspace_replication"
    rep = (cfg.get("cassandra") or {}).get("keyspace_replication")
    if rep is None:
        return {"class": "SimpleStrategy", "replication_factor": 1}
    if not isinstance(rep, dict):
        raise ReplicationConfigError(f"{where} must be a mapping")
    strategy = rep.get("class")
    if strategy not in STRATEGIES:
        raise ReplicationConfigError(f"{where}.class must be one of {', '.join(STRATEGIES)}, not {strategy!r}")
    if strategy == "SimpleStrategy":
        if set(rep) != {"class", "replication_factor"}:
            raise ReplicationConfigError(f"{where}: SimpleStrategy takes replication_factor only")
        return {
            "class": strategy,
            "replication_factor": _count(rep["replication_factor"], f"{where}.replication_factor", 1),
        }
    dcs = rep.get("datacenters")
    if set(rep) != {"class", "datacenters"} or not isinstance(dcs, dict) or not dcs:
        raise ReplicationConfigError(f"{where}: NetworkTopologyStrategy takes datacenters: {{name: factor}}")
    out: dict[str, str | int] = {"class": strategy}
    for name, factor in dcs.items():
        if not isinstance(name, str) or not _DC_NAME.match(name) or name == "class":
            raise ReplicationConfigError(f"{where}.datacenters: {name!r} is not a datacenter name")
        out[name] = _count(factor, f"{where}.datacenters.{name}", 1)
    return out


def elasticsearch_settings(config: dict[str, Any] | None = None) -> dict[str, int]:
    """``number_of_shards`` and ``number_of_replicas`` for the index template and the report index."""
    cfg = config if config is not None else replication_config()
    es = cfg.get("elasticsearch") or {}
    where = f"{cfg.get('_source', 'replication config')}: elasticsearch"
    return {
        "number_of_shards": _count(es.get("number_of_shards", 1), f"{where}.number_of_shards", 1),
        "number_of_replicas": _count(es.get("number_of_replicas", 0), f"{where}.number_of_replicas", 0),
    }
