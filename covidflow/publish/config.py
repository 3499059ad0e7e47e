"""Ingestion and topic configuration as data: include/config/ingest.yaml and include/config/topics.yaml.

Parsed with the C YAML loader when available, once per process: the DAG factory reads it at parse time.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from covidflow import PROJECT_ROOT

CONFIG_DIR = PROJECT_ROOT / "include" / "config"
INGEST_CONFIG_ENV = "COVIDFLOW_INGEST_CONFIG"
TOPICS_CONFIG_ENV = "COVIDFLOW_TOPICS_CONFIG"

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _load(path: Path) -> dict[str, Any]:
    data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a YAML mapping")
    return data


@cache
def ingest_config(path: str | None = None) -> dict[str, Any]:
    """The ingest settings; ``COVIDFLOW_INGEST_CONFIG`` replaces the whole file (used by tests)."""
    return _load(Path(path or os.environ.get(INGEST_CONFIG_ENV) or CONFIG_DIR / "ingest.yaml"))


@cache
def topics_config(path: str | None = None) -> dict[str, dict[str, Any]]:
    """Topic name -> {partitions, replication_factor, config}."""
    data = _load(Path(path or os.environ.get(TOPICS_CONFIG_ENV) or CONFIG_DIR / "topics.yaml"))
    return data["topics"]
