"""Operations settings as data: include/config/freshness.yaml and include/config/quality.yaml (safe YAML)."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from covidflow import PROJECT_ROOT

CONFIG_DIR = PROJECT_ROOT / "include" / "config"
FRESHNESS_CONFIG_ENV = "COVIDFLOW_FRESHNESS_CONFIG"
QUALITY_CONFIG_ENV = "COVIDFLOW_QUALITY_CONFIG"


def load_yaml(path: Path | str) -> dict[str, Any]:
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a YAML mapping")
    return data


@cache
def freshness_config(path: str | None = None) -> dict[str, Any]:
    """``COVIDFLOW_FRESHNESS_CONFIG`` replaces the whole file (tests)."""
    return load_yaml(path or os.environ.get(FRESHNESS_CONFIG_ENV) or CONFIG_DIR / "freshness.yaml")


@cache
def quality_config(path: str | None = None) -> dict[str, Any]:
    """``COVIDFLOW_QUALITY_CONFIG`` replaces the whole file (tests)."""
    return load_yaml(path or os.environ.get(QUALITY_CONFIG_ENV) or CONFIG_DIR / "quality.yaml")
