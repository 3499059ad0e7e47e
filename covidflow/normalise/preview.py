"""Run one local file through a spec (reader + columnar core) and summarise: what ``sources preview`` and the tests use.

This is the only place here that touches files; the core stays pure. The counting path is columnar: records are
counted, their ids checked for duplicates and skips tallied on Arrow tables; dicts are built only for the records
a caller actually takes from the iterator (``RecordStream.drain`` finishes the count without building any).
"""

from __future__ import annotations

import posixpath
import sys
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from covidflow.catalog.specs import SourceSpec
from covidflow.normalise.columnar import BatchNormaliser, BatchResult
from covidflow.normalise.core import Normaliser, Provenance, Reject
from covidflow.read import ReaderError
from covidflow.read.base import RawReject
from covidflow.read.batch import open_batches

EXAMPLES_PER_REASON = 3
#: Duplicate ids are looked for among the first records only, so a preview of any size stays in bounded memory.
DUPLICATE_CHECK_LIMIT = 1_000_000
#: Seconds between two progress lines (``sources preview`` on a terminal).
PROGRESS_INTERVAL = 1.0
_DICT_SLICE = 1024  # records turned into dicts at a time, for callers that iterate
#: Rows per chunk: smaller than the readers' default, as the per-record reader's rows are Python dicts until then.
PREVIEW_BATCH_ROWS = 16_384


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


class RecordStream(Iterator[dict[str, Any]]):
    """The canonical records of one file: iterate for dicts, or call :meth:`drain` to finish without them.

    Records are produced as Arrow tables (the summary fills in as they are produced); dicts are built a slice
    at a time, only for the records a caller takes.
    """

    def __init__(self, tables: Iterator[pa.Table]) -> None:
        self._tables = tables
        self._table: pa.Table | None = None
        self._pos = 0
        self._pending: deque[dict[str, Any]] = deque()

    def __iter__(self) -> RecordStream:
        return self

    def __next__(self) -> dict[str, Any]:
        while not self._pending:
            if self._table is None or self._pos >= self._table.num_rows:
                self._table, self._pos = next(self._tables), 0  # StopIteration ends the stream
                continue
            self._pending.extend(self._table.slice(self._pos, _DICT_SLICE).to_pylist())
            self._pos += _DICT_SLICE
        return self._pending.popleft()

    def tables(self) -> Iterator[pa.Table]:
        """The records not taken yet, as Arrow tables (schema ``catalog.schema.arrow_schema()``)."""
        if self._pending:
            yield pa.Table.from_pylist(list(self._pending), schema=self._table.schema)
            self._pending.clear()
        if self._table is not None and self._pos < self._table.num_rows:
            yield self._table.slice(self._pos)
        self._table = None
        yield from self._tables

    def drain(self) -> None:
        """Read to the end without building records: the summary then covers the whole file."""
        for _ in self.tables():
            pass


class _DuplicateIds:
    """Counts records whose id was seen before, among the first ``limit`` distinct ids, on NumPy arrays.

    Same count and truncation as checking every record against a set in reading order. Ids are compared on their
    128 bits folded to 64 (a sorted uint64 array: sorting and searching 32-byte strings took half of a preview's
    time); two different ids folding alike among the first 1M has a probability of about 3e-8.
    """

    def __init__(self, summary: Summary, limit: int = DUPLICATE_CHECK_LIMIT) -> None:
        self.summary, self.limit = summary, limit
        self.seen = np.empty(0, dtype=np.uint64)  # sorted
        self.extra: set[int] = set()  # recent additions from small batches, merged into seen in bulk

    def _in_seen(self, keys: np.ndarray) -> np.ndarray:
        if not len(self.seen):
            return np.zeros(len(keys), dtype=bool)
        idx = np.minimum(np.searchsorted(self.seen, keys), len(self.seen) - 1)
        return self.seen[idx] == keys

    def _merge(self, new: np.ndarray) -> None:
        # Sorted runs, concatenated: the stable sort (timsort) merges them in linear time.
        extra = np.array(sorted(self.extra), dtype=np.uint64)
        self.seen = np.sort(np.concatenate([self.seen, new, extra]), kind="stable")
        self.extra.clear()

    def add(self, ids: pa.ChunkedArray | pa.Array) -> None:
        keys = _id_keys(ids)
        if not len(keys):
            return
        in_seen = self._in_seen(keys)
        room = self.limit - len(self.seen) - len(self.extra)
        if len(keys) >= 4096 and len(keys) <= room:
            uniq, first = np.unique(keys, return_index=True)
            repeated = np.ones(len(keys), dtype=bool)
            repeated[first] = False
            self.summary.duplicate_ids += int(np.count_nonzero(in_seen | repeated))
            self._merge(uniq[~self._in_seen(uniq)])
            return
        for key, known in zip(keys.tolist(), in_seen.tolist(), strict=True):
            if known or key in self.extra:
                self.summary.duplicate_ids += 1
            elif len(self.seen) + len(self.extra) < self.limit:
                self.extra.add(key)
            else:
                self.summary.duplicate_check_truncated = True
        if len(self.extra) > 65_536:
            self._merge(np.empty(0, dtype=np.uint64))


def _tally(skips: pa.Table) -> list[tuple[tuple[str, str], int]]:
    """((field, reason), count) of a skips table, in order of first appearance (the Counter's order for ties)."""
    codes, values = [], []
    for name in ("field", "reason"):
        enc = pc.dictionary_encode(skips.column(name).combine_chunks())
        codes.append(enc.indices.to_numpy(zero_copy_only=False).astype(np.int64))
        values.append(enc.dictionary.to_pylist())
    combined = codes[0] * len(values[1]) + codes[1]
    keys, first, counts = np.unique(combined, return_index=True, return_counts=True)
    order = np.argsort(first, kind="stable")
    return [
        ((values[0][k // len(values[1])], values[1][k % len(values[1])]), int(n))
        for k, n in zip(keys[order].tolist(), counts[order].tolist(), strict=True)
    ]


_NIBBLES = np.zeros(256, dtype=np.uint64)
_NIBBLES[np.frombuffer(b"0123456789abcdef", dtype=np.uint8)] = np.arange(16, dtype=np.uint64)
_SHIFTS = np.arange(60, -4, -4, dtype=np.uint64)


def _id_keys(ids: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Each record id (32 hex characters, 128 bits) folded to 64 bits (its halves XORed), from the Arrow buffers."""
    chunks = ids.chunks if isinstance(ids, pa.ChunkedArray) else [ids]
    parts = []
    for chunk in chunks:
        n = len(chunk)
        if not n:
            continue
        offsets = np.frombuffer(chunk.buffers()[1], dtype=np.int32, count=n + 1, offset=chunk.offset * 4)
        if offsets[-1] - offsets[0] == 32 * n and chunk.null_count == 0:
            text = np.frombuffer(chunk.buffers()[2], dtype=np.uint8, count=32 * n, offset=int(offsets[0]))
        else:  # not the record-id layout: take the slow, exact way
            text = np.frombuffer(b"".join(v.encode().ljust(32, b"0")[:32] for v in chunk.to_pylist()), np.uint8)
        nibbles = _NIBBLES[text.reshape(n, 32)]
        high = (nibbles[:, :16] << _SHIFTS).sum(axis=1, dtype=np.uint64)
        parts.append(high ^ (nibbles[:, 16:] << _SHIFTS).sum(axis=1, dtype=np.uint64))
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.uint64)


class _Progress:
    """A progress line on stderr (rows read, rows/s) at a steady interval, only when stderr is a terminal."""

    def __init__(self, stream: TextIO | None, interval: float | None = None) -> None:
        self.stream = stream if stream is not None and stream.isatty() else None
        self.interval = PROGRESS_INTERVAL if interval is None else interval
        self.started = time.monotonic()
        self.last, self.width = self.started, 0

    def update(self, rows: int, *, final: bool = False) -> None:
        if self.stream is None:
            return
        now = time.monotonic()
        if not final and now - self.last < self.interval:
            return
        self.last = now
        rate = rows / max(now - self.started, 1e-9)
        line = f"{rows:,} rows read, {rate:,.0f} rows/s" + (" (done)" if final else "")
        self.stream.write("\r" + line.ljust(self.width))
        self.width = len(line)
        if final:
            self.stream.write("\n")
        self.stream.flush()


def run_file(
    spec: SourceSpec,
    path: Path | str,
    provenance: Provenance | None = None,
    *,
    normaliser: BatchNormaliser | Normaliser | None = None,
    progress: bool = False,
) -> tuple[RecordStream, Summary]:
    """Stream the canonical records of ``path``; the summary fills in as the stream is consumed.

    ``progress``: print rows read and rows/s to stderr at a steady interval while reading, when stderr is a
    terminal (``sources preview`` on a big file).
    """
    path = Path(path)
    prov = provenance or local_provenance(spec, path)
    if isinstance(normaliser, Normaliser):
        normaliser = BatchNormaliser(
            normaliser.spec, registry=normaliser.registry, metrics=normaliser.metrics, schema=normaliser.schema
        )
    norm = normaliser or BatchNormaliser(spec)
    summary = Summary()
    duplicates = _DuplicateIds(summary)
    meter = _Progress(sys.stderr if progress else None)

    def count(result: BatchResult) -> pa.Table:
        for reject in result.rejects:
            summary.add_reject(reject)
        if result.skips.num_rows:
            for key, n in _tally(result.skips):
                summary.skips[key] += n
        duplicates.add(result.records.column("record_id"))
        summary.records_out += result.records.num_rows
        return result.records

    def tables() -> Iterator[pa.Table]:
        try:
            chunks = open_batches(path, spec["format"], spec.get("reader") or {}, batch_rows=PREVIEW_BATCH_ROWS)
            for chunk in chunks:
                summary.rows_read += 1 if isinstance(chunk, RawReject) else len(chunk)
                meter.update(summary.rows_read)
                for result in norm.iter_normalise(chunk, prov):
                    yield count(result)
        except ReaderError as exc:
            summary.error = str(exc)
        finally:
            meter.update(summary.rows_read, final=True)

    return RecordStream(tables()), summary
