"""Hooks: code for what a spec cannot say. A spec names one as ``hook: covidflow.sources.hooks.<name>``.

Contract: ``hook(fields: dict) -> list[dict]``, pure (no I/O, deterministic), called on each raw record
before the spec's mapping. Return several dicts to split a record, ``[]`` to drop it (counted as a skip
"hook produced no rows"), or raise to reject it (the exception text becomes the reason).
None of the bundled sources needs a hook; add one only when several spec features would not do.
"""

from __future__ import annotations

from typing import Any


def drop_blank_rows(fields: dict[str, Any]) -> list[dict[str, Any]]:
    """Spreadsheet exports often end with rows whose cells are all empty; they are not data."""
    if all(value is None or str(value).strip() == "" for value in fields.values()):
        return []
    return [fields]
