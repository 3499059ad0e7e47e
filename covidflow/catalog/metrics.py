"""The metric vocabulary (include/metrics.yaml): every canonical record's metric must be in it."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

from covidflow import PROJECT_ROOT

METRICS_PATH = PROJECT_ROOT / "include" / "metrics.yaml"
KINDS = ("stock", "daily_flow", "weekly_flow", "cumulative", "rate", "share")


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str
    kind: str
    description: str


@cache
def load_metrics(path: Path = METRICS_PATH) -> dict[str, Metric]:
    """name -> Metric; a kind outside KINDS is an error in the vocabulary file, not at run time."""
    raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    metrics = {}
    for name, m in raw["metrics"].items():
        if m.get("kind") not in KINDS or not m.get("unit") or not m.get("description"):
            raise ValueError(f"{path}: metric {name!r} needs unit, description and kind in {KINDS}")
        metrics[name] = Metric(name, m["unit"], m["kind"], m["description"])
    return metrics
