"""Run one local file through a spec (reader + core) and summarise: what ``sources preview`` and the tests use.

This is the only place here that touches files; the core stays pure.
"""

from __future__ import annotations

import posixpath
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from covidflow.catalog.specs import SourceSpec
from covidflow.normalise.core import Normaliser, Provenance, Reject
from covidflow.read import ReaderError, open_records

EXAMPLES_PER_REASON = 3
#: Duplicate ids are looked for among the first records only, so a preview of any size stays in bounded memory.
DUPLICATE_CHECK_LIMIT = 1_000_000


@dataclass
class Summary:
    rows_read: int = 0
    records_out: int = 0
    rejects: Counter[tuple[str, str]] = field(default_factory=Counter)
    reject_examples: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    skips: Counter[tuple[str, str]] = field(default_factory=Counter)
    duplicate_ids: int = 0
    duplicate_check_truncated: bool = False
    error: str | None = None  # the whole file could not be read (ReaderError)

    @property
    def reject_count(self) -> int:
        return sum(self.rejects.values())

    def add_reject(self, reject: Reject) -> None:
        key = (reject.field, reject.reason)
        self.rejects[key] += 1
        examples = self.reject_examples.setdefault(key, [])
        if len(examples) < EXAMPLES_PER_REASON:
            examples.append(reject.message)

    def lines(self) -> list[str]:
        out = [f"rows read: {self.rows_read}", f"records out: {self.records_out}", f"rejects: {self.reject_count}"]
        for (fld, reason), n in self.rejects.most_common():
            out.append(f"  {n} x field {fld!r}: {reason}")
            out.extend(f"      e.g. {ex}" for ex in self.reject_examples[(fld, reason)])
        out.append(f"skipped (explained): {sum(self.skips.values())}")
        out.extend(f"  {n} x field {fld!r}: {reason}" for (fld, reason), n in self.skips.most_common())
        scope = f" (among the first {DUPLICATE_CHECK_LIMIT:,} records)" if self.duplicate_check_truncated else ""
        out.append(f"duplicate record ids: {self.duplicate_ids}{scope}")
        if self.error:
            out.append(f"file error: {self.error}")
        return out


def local_provenance(spec: SourceSpec, path: Path, *, ingested_at: datetime | None = None) -> Provenance:
    """Provenance for a local file as if it had landed under the spec's prefix (landed = file mtime)."""
    landed = datetime.fromtimestamp(path.stat().st_mtime, tz=UTC).replace(microsecond=0)
    key = posixpath.join(spec["landing"]["prefix"], path.name)
    return Provenance(
        object_key=key, landed_at=landed, ingested_at=ingested_at or datetime.now(UTC), object_version=None
    )


def run_file(
    spec: SourceSpec, path: Path | str, provenance: Provenance | None = None, *, normaliser: Normaliser | None = None
) -> tuple[Iterator[dict[str, Any]], Summary]:
    """Stream the canonical records of ``path``; the summary fills in as the iterator is consumed."""
    path = Path(path)
    prov = provenance or local_provenance(spec, path)
    norm = normaliser or Normaliser(spec)
    summary = Summary()

    def records() -> Iterator[dict[str, Any]]:
        seen: set[str] = set()
        try:
            for raw in open_records(path, spec["format"], spec.get("reader") or {}):
                summary.rows_read += 1
                result = norm.normalise(raw, prov)
                for reject in result.rejects:
                    summary.add_reject(reject)
                for skip in result.skips:
                    summary.skips[(skip.field, skip.reason)] += 1
                for record in result.records:
                    if record["record_id"] in seen:
                        summary.duplicate_ids += 1
                    elif len(seen) < DUPLICATE_CHECK_LIMIT:
                        seen.add(record["record_id"])
                    else:
                        summary.duplicate_check_truncated = True
                    summary.records_out += 1
                    yield record
        except ReaderError as exc:
            summary.error = str(exc)

    return records(), summary
