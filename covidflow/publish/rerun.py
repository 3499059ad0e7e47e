"""Re-runs and backfills of an ingest DAG: which objects to publish again, ignoring the manifest.

Three DAG params, shown as a form by the Airflow UI's "Trigger DAG" and set by ``covidflow ingest rerun``:
``rerun_key`` (one object), ``rerun_prefix`` (every object under a key prefix) and ``rerun_all`` (every object
of the source). At most one may be set; none set means an ordinary run (only objects the manifest lacks).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

KEY, PREFIX, ALL = "rerun_key", "rerun_prefix", "rerun_all"


class RerunParamsError(ValueError):
    """The params ask for two kinds of re-run at once."""


@dataclass(frozen=True)
class Rerun:
    """A re-run request: ``key``, ``prefix`` or ``everything``; exactly one is set."""

    key: str | None = None
    prefix: str | None = None
    everything: bool = False

    def describe(self) -> str:
        if self.key:
            return f"object {self.key}"
        if self.prefix:
            return f"every object under {self.prefix}"
        return "every object of the source"


def parse_rerun(params: Mapping[str, Any]) -> Rerun | None:
    """The re-run the params ask for, or None for an ordinary run."""
    key = (params.get(KEY) or "").strip() or None
    prefix = (params.get(PREFIX) or "").strip() or None
    everything = bool(params.get(ALL))
    asked = [name for name, value in ((KEY, key), (PREFIX, prefix), (ALL, everything)) if value]
    if len(asked) > 1:
        raise RerunParamsError(f"set at most one of {KEY}, {PREFIX}, {ALL}; got {', '.join(asked)}")
    if not asked:
        return None
    return Rerun(key=key, prefix=prefix, everything=everything)


def rerun_conf(key: str | None = None, prefix: str | None = None, everything: bool = False) -> dict[str, Any]:
    """The DAG run conf of a re-run (what the UI form sends), validated the way the tasks will read it."""
    conf = {KEY: key or "", PREFIX: prefix or "", ALL: bool(everything)}
    if parse_rerun(conf) is None:
        raise RerunParamsError(f"say what to re-run: {KEY}, {PREFIX} or {ALL}")
    return conf


#: The three params rendered as one JSON text, for a task started in the triggerer (``start_from_trigger``): its
#: trigger gets its templated kwargs rendered there, so it can tell a re-run from an ordinary run with no worker.
RERUN_TEMPLATE = (
    '{"' + KEY + '": {{ params.' + KEY + ' | tojson }}, "' + PREFIX + '": {{ params.' + PREFIX + ' | tojson }}, "'
    + ALL + '": {{ params.' + ALL + ' | tojson }}}'
)  # fmt: skip


def rerun_from_rendered(text: str) -> Rerun | None:
    """The re-run a rendered :data:`RERUN_TEMPLATE` asks for, or None for an ordinary run.

    Raises RerunParamsError when the params ask for two kinds at once (the select task refuses such a run).
    """
    import json

    return parse_rerun(json.loads(text or "{}"))
