"""Run one local file through a spec (reader + columnar core) and summarise: what ``sources preview`` and the tests use.

This is the only place here that touches files; the core stays pure. The counting path is columnar: records are
counted, their ids checked for duplicates (on fingerprints: ids are hashed only for the records a caller takes)
and skips tallied on Arrow tables; dicts are built only for the records a caller actually takes from the iterator
(``RecordStream.drain`` finishes the count without building any). Chunks are normalised on worker threads while
the calling thread reads on.
"""

from __future__ import annotations

import os
import posixpath
import sys
import time
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
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
from covidflow.read.base import RawRecord, RawReject
from covidflow.read.batch import open_batches

EXAMPLES_PER_REASON = 3
#: Duplicate ids are looked for among the first records only, so a preview of any size stays in bounded memory.
DUPLICATE_CHECK_LIMIT = 1_000_000
#: Seconds between two progress lines (``sources preview`` on a terminal).
PROGRESS_INTERVAL = 1.0
_DICT_SLICE = 1024  # records turned into dicts at a time, for callers that iterate
#: Threads that normalise a preview's chunks (``COVIDFLOW_PREVIEW_WORKERS``; default: the CPUs but one, 1 to 4).
PREVIEW_WORKERS_ENV = "COVIDFLOW_PREVIEW_WORKERS"
#: Rows per chunk (at most ``workers + 1`` in flight). Measured on a 2.65M-row file: 32k rows per chunk ran
#: 1.2-1.3x faster than 16k (fewer parts, less fixed cost per part) for about 70 MB more peak memory.
PREVIEW_BATCH_ROWS = 32_768


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


def preview_workers() -> int:
    """Threads for a preview: ``COVIDFLOW_PREVIEW_WORKERS`` if set, else one less than the CPUs this process may
    use (the thread that reads needs one), between 1 and 4."""
    configured = os.environ.get(PREVIEW_WORKERS_ENV)
    if configured:
        if not configured.isdigit() or int(configured) < 1:
            raise ValueError(f"{PREVIEW_WORKERS_ENV} must be a whole number of threads, 1 or more; got {configured!r}")
        return int(configured)
    return max(1, min(4, len(os.sched_getaffinity(0)) - 1))  # the reading thread has a CPU of its own


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
    at a time, only for the records a caller takes, and only their record ids are hashed (``defer_ids``).
    """

    def __init__(self, results: Iterator[BatchResult]) -> None:
        self._results = results
        self._result: BatchResult | None = None
        self._pos = 0
        self._pending: deque[dict[str, Any]] = deque()

    def __iter__(self) -> RecordStream:
        return self

    def __next__(self) -> dict[str, Any]:
        while not self._pending:
            if self._result is None or self._pos >= self._result.records.num_rows:
                self._result, self._pos = next(self._results), 0  # StopIteration ends the stream
                continue
            self._pending.extend(self._result.records_with_ids(self._pos, self._pos + _DICT_SLICE).to_pylist())
            self._pos += _DICT_SLICE
        return self._pending.popleft()

    def tables(self) -> Iterator[pa.Table]:
        """The records not taken yet, as Arrow tables (schema ``catalog.schema.arrow_schema()``), ids included."""
        if self._pending:
            yield pa.Table.from_pylist(list(self._pending), schema=self._result.records.schema)
            self._pending.clear()
        if self._result is not None and self._pos < self._result.records.num_rows:
            yield self._result.records_with_ids(self._pos)
        self._result = None
        for result in self._results:
            yield result.records_with_ids()

    def drain(self) -> None:
        """Read to the end without building records or hashing ids: the summary then covers the whole file."""
        self._pending.clear()
        self._result = None
        for _ in self._results:
            pass


_MARK_MASK = np.uint64((1 << 26) - 1)


class _DuplicateIds:
    """Counts records whose id was seen before, among the first ``limit`` distinct ids, on NumPy arrays.

    Same count and truncation as checking every record against a set in reading order. Ids are compared on
    their 64-bit fingerprints (``RecordIds.fingerprints``: no id needs hashing for this), kept in a sorted array;
    two different ids fingerprinting alike among the first 1M has a probability of about 3e-8.
    """

    def __init__(self, summary: Summary, limit: int = DUPLICATE_CHECK_LIMIT) -> None:
        self.summary, self.limit = summary, limit
        self.seen = np.empty(0, dtype=np.uint64)  # sorted
        self.marks = np.zeros((int(_MARK_MASK) + 1) // 8, dtype=np.uint8)  # a bit per low-bits value (8 MB)

    def add(self, keys: np.ndarray) -> None:
        """Count the records of one batch (their fingerprints, in reading order)."""
        if not len(keys):
            return
        room = self.limit - len(self.seen)
        if room <= 0:  # the check is full: duplicates are the records already seen; any other is unchecked
            hits = self._in_seen(keys)
            self.summary.duplicate_ids += int(np.count_nonzero(hits))
            self.summary.duplicate_check_truncated |= not hits.all()
            return
        ordered = np.sort(keys)
        if len(ordered) <= room and not self._in_seen(ordered).any() and not (ordered[1:] == ordered[:-1]).any():
            self._merge(ordered)  # the usual batch: all new, all different, and room for them
            return
        self._add_in_order(keys)

    def _in_seen(self, keys: np.ndarray) -> np.ndarray:
        found = np.zeros(len(keys), dtype=bool)
        # a cheap filter first (one bit per low-bits value of the seen keys): most keys are new
        low = keys & _MARK_MASK
        maybe = np.flatnonzero((self.marks[low >> np.uint64(3)] >> (low & np.uint64(7)).astype(np.uint8)) & 1)
        if len(maybe):
            order = np.argsort(keys[maybe])
            maybe = maybe[order]  # in key order: searchsorted then walks the seen array forwards
            candidates = keys[maybe]
            at = np.minimum(np.searchsorted(self.seen, candidates), len(self.seen) - 1)
            found[maybe] = self.seen[at] == candidates
        return found

    def _merge(self, ordered: np.ndarray) -> None:
        # two sorted runs: the stable sort (timsort) merges them in linear time
        self.seen = np.sort(np.concatenate([self.seen, ordered]), kind="stable") if len(self.seen) else ordered
        low = ordered & _MARK_MASK
        np.bitwise_or.at(self.marks, low >> np.uint64(3), np.left_shift(1, low & np.uint64(7)).astype(np.uint8))

    def _add_in_order(self, keys: np.ndarray) -> None:
        """The general case (copies in the batch, or the check fills up in it), record by record in effect."""
        uniq, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1)
        uniq_seen = self._in_seen(uniq)
        # the set's rule, record by record: a new key is added while there is room; later copies are duplicates
        new = np.flatnonzero(~uniq_seen)
        new = new[np.argsort(first[new], kind="stable")]  # new keys in order of first appearance
        room = max(self.limit - len(self.seen), 0)
        added = np.zeros(len(uniq), dtype=bool)
        added[new[:room]] = True
        if len(new) > room:
            self.summary.duplicate_check_truncated = True
        repeated = np.ones(len(keys), dtype=bool)
        repeated[first] = False
        known = uniq_seen | added
        self.summary.duplicate_ids += int(np.count_nonzero(uniq_seen[inverse] | (repeated & known[inverse])))
        if added.any():
            self._merge(uniq[added])


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
            normaliser.spec,
            registry=normaliser.registry,
            metrics=normaliser.metrics,
            schema=normaliser.schema,
            defer_ids=True,
        )
    norm = normaliser or BatchNormaliser(spec, defer_ids=True)
    summary = Summary()
    duplicates = _DuplicateIds(summary)
    meter = _Progress(sys.stderr if progress else None)

    def normalise(chunk: pa.RecordBatch | list[RawRecord] | RawReject) -> list[tuple[BatchResult, np.ndarray]]:
        """On a worker thread: the chunk's results and their id fingerprints (neither depends on reading order)."""
        return [(result, result.id_fingerprints(norm.schema)) for result in norm.iter_normalise(chunk, prov)]

    def count(normalised: tuple[BatchResult, np.ndarray]) -> BatchResult:
        result, fingerprints = normalised
        for reject in result.rejects:
            summary.add_reject(reject)
        if result.skips.num_rows:
            for key, n in _tally(result.skips):
                summary.skips[key] += n
        duplicates.add(fingerprints)  # in reading order, on this thread
        summary.records_out += result.records.num_rows
        return result

    def results() -> Iterator[BatchResult]:
        # Chunks are normalised on worker threads while this one reads on: Arrow and NumPy release the GIL,
        # so a preview uses the machine's cores. Results are counted and yielded in reading order, and at most
        # ``workers + 1`` chunks are in flight, so memory stays bounded.
        workers = preview_workers()
        in_flight: deque[Future[list[tuple[BatchResult, np.ndarray]]]] = deque()
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="covidflow-preview") as pool:
            try:
                for chunk in open_batches(
                    path, spec["format"], spec.get("reader") or {}, batch_rows=PREVIEW_BATCH_ROWS
                ):
                    summary.rows_read += 1 if isinstance(chunk, RawReject) else len(chunk)
                    meter.update(summary.rows_read)
                    in_flight.append(pool.submit(normalise, chunk))
                    while len(in_flight) > workers:
                        yield from map(count, in_flight.popleft().result())
            except ReaderError as exc:
                summary.error = str(exc)
            finally:
                meter.update(summary.rows_read, final=True)
            while in_flight:  # what was read before the end (or before a file error) is still counted
                yield from map(count, in_flight.popleft().result())

    return RecordStream(results()), summary
