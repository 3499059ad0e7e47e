"""Is each source's newest vintage recent enough? Pure judging, plus the two readers of "last vintage seen".

A source is late when ``reference_time > last_vintage + cadence + tolerance``. The reference time is the run's
start unless given: the bundled samples are from 2020-2022, so judged against now every source is late, which is
true of the samples and is what the DAG reports; tests and replays pass an explicit reference time.
The last vintage is the newest of the ingest manifest (files published to Kafka) and the store
(``vintages_by_source`` in Cassandra); when the store is behind the manifest by more than the allowance, the
line says so, because files are arriving but not being stored.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

CADENCES: dict[str, timedelta | None] = {
    "hourly": timedelta(hours=1),
    "daily": timedelta(days=1),
    "weekly": timedelta(weeks=1),
    "monthly": timedelta(days=31),
    "irregular": None,
}
_DURATION = re.compile(r"^([1-9][0-9]*)([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class SourcesLate(RuntimeError):
    """One or more sources are late; the message has one line per late source."""


def parse_duration(text: str | None) -> timedelta:
    """``90m``, ``36h``, ``2d``, ``1w`` -> timedelta; empty -> 0."""
    if not text:
        return timedelta(0)
    m = _DURATION.match(str(text).strip())
    if not m:
        raise ValueError(f"duration {text!r}: expected <n>m, <n>h, <n>d or <n>w")
    return timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})


def parse_time(value: str | datetime | date) -> datetime:
    """A vintage or reference time as an aware UTC datetime; a bare date is that day's midnight UTC."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    text = str(value).strip().replace("Z", "+00:00")
    if len(text) == 10:
        return parse_time(date.fromisoformat(text))
    return parse_time(datetime.fromisoformat(text))


def _iso(t: datetime | None) -> str | None:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z") if t else None


def _human(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours / 24:.1f} days" if hours >= 48 else f"{hours:.1f} h"


@dataclass(frozen=True)
class FreshnessRule:
    cadence: str
    tolerance: timedelta = timedelta(0)

    @property
    def allowance(self) -> timedelta | None:
        """Cadence + tolerance: how old the newest vintage may be; None = never late."""
        step = CADENCES[self.cadence]
        return None if step is None else step + self.tolerance

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> FreshnessRule | None:
        block = spec.get("freshness")
        if not block:
            return None
        return cls(block["cadence"], parse_duration(block.get("tolerance")))


@dataclass
class Verdict:
    """One source's freshness at the reference time: XCom, log line and Elasticsearch document."""

    source_id: str
    status: str  # ok | late | not_judged
    reference_time: str
    cadence: str | None = None
    tolerance: str | None = None
    last_vintage: str | None = None
    due: str | None = None
    signals: dict[str, str | None] = field(default_factory=dict)
    reason: str = ""

    @property
    def late(self) -> bool:
        return self.status == "late"

    def line(self) -> str:
        seen = ", ".join(f"{k} {v or 'never'}" for k, v in self.signals.items()) or "no signal read"
        return f"{self.status.upper()} {self.source_id}: {self.reason} ({seen})"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def judge(
    source_id: str,
    rule: FreshnessRule | None,
    signals: Mapping[str, datetime | None],
    reference_time: datetime,
    *,
    never_seen: str = "late",
    missing_rule: str = "ok",
) -> Verdict:
    """The verdict for one source: late when its newest vintage is older than cadence + tolerance."""
    ref = parse_time(reference_time)
    shown = {name: _iso(t) for name, t in signals.items()}
    v = Verdict(source_id, "ok", _iso(ref) or "", signals=shown)
    if rule is None:
        v.status = "late" if missing_rule == "late" else "not_judged"
        v.reason = "the spec declares no freshness block"
        return v
    v.cadence, v.tolerance = rule.cadence, _human(rule.tolerance) if rule.tolerance else "0"
    allowance = rule.allowance
    if allowance is None:
        v.status, v.reason = "not_judged", "cadence irregular: never late"
        return v
    seen = [t for t in signals.values() if t is not None]
    if not seen:
        v.status = "late" if never_seen == "late" else "not_judged"
        v.reason = f"no vintage seen at all (cadence {rule.cadence} + {v.tolerance})"
        return v
    last = max(seen)
    due = last + allowance
    v.last_vintage, v.due = _iso(last), _iso(due)
    if ref > due:
        v.status = "late"
        v.reason = (
            f"last vintage {_iso(last)}, cadence {rule.cadence} + {v.tolerance} -> due {_iso(due)}, "
            f"{_human(ref - due)} late at {_iso(ref)}"
        )
    else:
        v.reason = f"last vintage {_iso(last)}, next due by {_iso(due)}"
    manifest, store = signals.get("manifest"), signals.get("store")
    if manifest and (store is None or manifest - store > allowance) and "store" in signals:
        if store is None:
            v.reason += "; the store has no vintage although files were published (check the stream)"
        else:
            v.reason += (
                f"; the store is {_human(manifest - store)} behind the manifest (published but not stored: "
                "check the stream)"
            )
        v.status = "late"
    return v


def judge_all(
    specs: Mapping[str, Mapping[str, Any]],
    signals: Mapping[str, Mapping[str, datetime | None]],
    reference_time: datetime,
    *,
    never_seen: str = "late",
    missing_rule: str = "ok",
) -> list[Verdict]:
    """Verdicts for every source, sorted by id."""
    return [
        judge(sid, FreshnessRule.from_spec(spec), signals.get(sid, {}), reference_time,
              never_seen=never_seen, missing_rule=missing_rule)
        for sid, spec in sorted(specs.items())
    ]  # fmt: skip


def late_summary(verdicts: Iterable[Verdict]) -> str:
    """The failure message: a count, then one line per late source."""
    late = [v for v in verdicts if v.late]
    return "\n".join([f"{len(late)} source(s) late:", *(v.line() for v in late)]) if late else ""


# -- where the last vintage comes from -----------------------------------------------------------------------


def manifest_vintage(client: Any, bucket: str, prefix: str, source_id: str, max_markers: int = 50) -> datetime | None:
    """Newest vintage in the ingest manifest's marker bodies (ADR 0006): the newest ``max_markers`` are read."""
    from covidflow.land.manifest import parse_marker

    items = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}{source_id}/"):
        items += [i for i in page.get("Contents", []) if parse_marker(prefix, source_id, i["Key"])]
    items.sort(key=lambda i: i["LastModified"], reverse=True)
    newest: datetime | None = None
    for item in items[:max_markers]:
        body = json.loads(client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read())
        text = (body.get("summary") or {}).get("vintage") or (body.get("object") or {}).get("last_modified")
        if text:
            t = parse_time(text)
            newest = t if newest is None or t > newest else newest
    return newest


def store_vintage(session: Any, keyspace: str, source_id: str) -> datetime | None:
    """Newest vintage of a source in Cassandra (``vintages_by_source`` is clustered by vintage DESC)."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", keyspace):
        raise ValueError(f"keyspace {keyspace!r} is not a plain CQL identifier")
    row = session.execute(
        f"SELECT vintage FROM {keyspace}.vintages_by_source WHERE source_id = %s LIMIT 1", (source_id,)
    ).one()
    return parse_time(row.vintage) if row and row.vintage else None
