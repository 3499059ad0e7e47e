"""Fixtures shared by the unit tests."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def code_lines_matching() -> Callable[[re.Pattern[str], Iterable[str]], list[str]]:
    """``scan(pattern, allowed)``: ``path:line`` of every line of the project's code (covidflow, dags, plugins,
    spark_jobs), its benchmarks and its integration tests that matches, outside the ``allowed`` files; for "only one
    module builds X" checks (the benchmarks and tests run against the authenticated stack, as the code does)."""

    def scan(pattern: re.Pattern[str], allowed: Iterable[str]) -> list[str]:
        allowed = set(allowed)
        return [
            f"{path.relative_to(ROOT)}:{n}"
            for folder in ("covidflow", "dags", "plugins", "spark_jobs", "bench", "tests/integration")
            for path in sorted((ROOT / folder).rglob("*.py"))
            if str(path.relative_to(ROOT)) not in allowed
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
            if pattern.search(line)
        ]

    return scan
