"""The columnar normalisation core: a spec compiled once into operations on Arrow record batches.

Same output as :class:`covidflow.normalise.core.Normaliser` (records, rejects and skips, record for record, in
the same order), without per-record Python for ordinary specs. How:

- **Per distinct value, then take.** Every rule that reads a cell (places, dimension maps, metric maps, dates,
  vintages from a column, filters, coordinates) is evaluated once per *distinct* value of the columns it reads
  in the batch, by the per-record core's own method, and the answers are spread to the rows with Arrow/NumPy
  ``take``. Publisher files repeat these values (a hundred departments, one day per batch), so this is a few
  hundred Python calls per 65k rows, and the semantics are the core's by construction (``strptime``, name
  matching, ``str()`` of typed cells, the order of the checks). Answers are cached across batches. When every
  row gives every value cell, per-row codes are repeated to the records rather than gathered, and the metric
  columns of a file with one column per metric are one tiled pattern (ADR 14).
- **Values, vectorised.** Value cells that are plain decimal numbers (a strict ASCII grammar on which Arrow's
  cast and Python's ``float`` agree, checked by tests) are cast by Arrow; typed (int/float) cells are cast too.
  Everything else (empty cells, ``value.skip`` rules, patterns, decimal commas, odd text) goes through the
  core's ``_number`` once per distinct text.
- **Checks in the core's order.** A row-level reject (place, vintage, date, dimension, metric) is the first
  failing check in the core's order; then each value cell: skip, reject, negative, maximum.
- **Record ids**: the identifying fields are codes into per-distinct texts (ISO dates and vintages included);
  they are joined per distinct combination of each half of the fields (a few hundred texts per batch), and each
  record's text (head + tail) is hashed with ``hashlib`` in one tight loop: no vectorised sha256 exists in
  pyarrow or numpy here (measured: ``binary_join_element_wise`` over the ten fields cost more than the hash).
  The hex is done with NumPy. This loop is the one per-record Python step left, and the bound on throughput.
  ``defer_ids=True`` (``sources preview``) skips it: the ids' inputs come back as :class:`RecordIds`, hashed
  only for the records a caller takes, and duplicates are counted on vectorised 64-bit fingerprints.

What stays per record: specs with a ``hook`` (the hook is a Python function of one record) and chunks that are
a ``list[RawRecord]`` (records that do not fit columns, see ``covidflow.read.batch``) run through the per-record
core and are converted to the same :class:`BatchResult`. Rejects are built as ``Reject`` objects (they are rare).
"""

from __future__ import annotations

import functools
import hashlib
import operator
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from covidflow.catalog.locations import Location, LocationRegistry
from covidflow.catalog.metrics import Metric
from covidflow.catalog.schema import ObservationSchema, arrow_schema
from covidflow.catalog.specs import SourceSpec, object_fields
from covidflow.normalise.core import Normaliser, Provenance, Reject, Result, _fmt, _RowReject
from covidflow.read.base import RawRecord, RawReject
from covidflow.read.batch import LINE, ROW, batch_to_records
from covidflow.read.jsondoc import IGNORED_PREFIX

#: Long rows (rows after unpivot) per unit of work: bounds memory on wide files.
LONG_ROWS = 32_768
#: Value cells Arrow casts itself: ASCII decimal numbers, no spaces, short enough to be finite in any case.
NUMBER_GRAMMAR = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]{1,2})?$"
NUMBER_MAX_BYTES = 40
_CACHE_LIMIT = 200_000
_SEGMENT_TEXTS = 4096  # distinct texts per segment of the record id's fields
_DIGEST = operator.methodcaller("digest")
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_FINGERPRINT_FACTOR = 0x9E3779B97F4A7C15  # odd: multiplying by it is a bijection mod 2**64
SKIPS_SCHEMA = pa.schema([("row", pa.int64()), ("field", pa.string()), ("reason", pa.string())])


@dataclass
class RecordIds:
    """The record ids of a table, not hashed yet: each identifying field (``record_id_fields``, in order) as a
    code per record and a text per code.

    ``sources preview`` defers the ids (``BatchNormaliser(defer_ids=True)``): it hashes only the records it
    prints, and counts duplicate ids on :meth:`fingerprints`, which need no per-record Python.
    """

    parts: list[tuple[np.ndarray, list[str]]]

    @classmethod
    def of_table(cls, records: pa.Table, schema: ObservationSchema) -> RecordIds:
        """The identifying fields of records that already carry their ids (the per-record path)."""
        return cls([_text_codes(records.column(name).combine_chunks()) for name in schema.record_id_fields])

    def compute(self, start: int = 0, stop: int | None = None) -> pa.Array:
        """``catalog.schema.record_id`` of records ``start:stop``."""
        sliced = [(codes[start:stop], texts) for codes, texts in self.parts]
        if not len(sliced[0][0]):
            return pa.array([], pa.string())
        return record_ids([_joined(group) for group in _segments(sliced)])

    def fingerprints(self) -> np.ndarray:
        """A 64-bit fingerprint per record, equal for equal ids: a keyed hash per field and distinct text,
        combined per record by NumPy (``fp * K + h``, wrapping). Two different ids fingerprint alike with a
        probability of about 2**-64, the same whichever path made the records."""
        fingerprint = np.zeros(len(self.parts[0][0]), dtype=np.uint64)
        for position, (codes, texts) in enumerate(self.parts):
            key = position.to_bytes(2, "big")
            hashes = np.array(
                [int.from_bytes(hashlib.blake2b(t.encode("utf-8"), digest_size=8, person=key).digest()) for t in texts],
                dtype=np.uint64,
            )
            # In place (no new array per field); a field with one text in these records (the source, a level)
            # adds a scalar: no gather over codes.
            fingerprint *= np.uint64(_FINGERPRINT_FACTOR)
            fingerprint += hashes[0] if len(texts) == 1 else hashes[codes]
        return fingerprint


@dataclass
class BatchResult:
    """What one chunk yields: canonical records as an Arrow table, the rejects, the skips as a table."""

    records: pa.Table  # schema == covidflow.catalog.schema.arrow_schema(), exactly
    rejects: list[Reject] = field(default_factory=list)
    skips: pa.Table = field(default_factory=SKIPS_SCHEMA.empty_table)  # row:int64, field:string, reason:string
    #: Set when the ids were deferred: ``records.record_id`` is then null, and ``ids.compute()`` fills it.
    ids: RecordIds | None = None

    def records_with_ids(self, start: int = 0, stop: int | None = None) -> pa.Table:
        """Records ``start:stop`` with their ids, hashed now if they were deferred."""
        records = self.records.slice(start, None if stop is None else stop - start)
        if self.ids is None:
            return records
        at = records.schema.get_field_index("record_id")
        return records.set_column(at, records.schema.field(at), self.ids.compute(start, stop))

    def id_fingerprints(self, schema: ObservationSchema) -> np.ndarray:
        """:meth:`RecordIds.fingerprints` of the records, deferred or not."""
        if not self.records.num_rows:
            return np.empty(0, dtype=np.uint64)
        return (self.ids or RecordIds.of_table(self.records, schema)).fingerprints()


class _Frame:
    """Long rows (after unpivot) of one chunk: columns by field name, the provenance row and line of each."""

    def __init__(self, cols: dict[str, pa.Array], rows: np.ndarray, lines: pa.Array) -> None:
        self.cols, self.rows, self.lines, self.n = cols, rows, lines, len(rows)
        self._encoded: dict[str, tuple[np.ndarray, list[Any]]] = {}

    def encoded(self, name: str) -> tuple[np.ndarray, list[Any]]:
        """(code per row, distinct values as Python objects) of one column; nulls are a value (None)."""
        if name not in self._encoded:
            array = self.cols[name]
            if pa.types.is_null(array.type):
                self._encoded[name] = (np.zeros(self.n, dtype=np.int64), [None])
            else:
                enc = pc.dictionary_encode(array, null_encoding="encode")
                codes = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
                self._encoded[name] = (codes, enc.dictionary.to_pylist())
        return self._encoded[name]

    def line(self, i: int) -> int | None:
        return self.lines[i].as_py()


def _key(value: Any) -> Any:
    """A cache key that tells 1, 1.0, True, -0.0 and 0.0 apart (their str() differs)."""
    return (type(value), repr(value) if isinstance(value, float) else value)


class _Distinct:
    """A rule evaluated per distinct combination of the cells it reads: a code per row, an answer per code."""

    def __init__(self, codes: np.ndarray, answers: list[Any]) -> None:
        self.codes, self.answers = codes, answers
        self.failed = np.array([isinstance(a, _RowReject) for a in answers], dtype=bool)

    def column(self, pick: Callable[[Any], Any], typ: pa.DataType) -> pa.Array:
        """One Arrow array with a value per code (answers that are rejects or unused become null)."""
        return pa.array([None if a is None or isinstance(a, _RowReject) else pick(a) for a in self.answers], typ)


def _dense(codes: np.ndarray, bound: int) -> tuple[np.ndarray, np.ndarray]:
    """(the distinct codes, sorted; each row's index among them): ``np.unique(..., return_inverse=True)``
    without a sort when the codes are known to be below ``bound`` and it is small."""
    if bound > 4 * len(codes) + 65_536:
        uniq, inverse = np.unique(codes, return_inverse=True)
        return uniq, inverse.reshape(-1)
    present = np.zeros(bound, dtype=bool)
    present[codes] = True
    index = np.cumsum(present) - 1
    return np.flatnonzero(present), index[codes]


def _number_grammar(array: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Two masks per cell: it matches ``NUMBER_GRAMMAR`` in at most ``NUMBER_MAX_BYTES`` (nulls: False), and it is
    not null (the caller needs both).

    Plain ASCII digit strings (most counts) are found with a cheap kernel; the regular expression runs on the
    other cells only."""
    short = pc.less_equal(pc.binary_length(array), NUMBER_MAX_BYTES).fill_null(False).to_numpy(zero_copy_only=False)
    grammar = pc.ascii_is_decimal(array).fill_null(False).to_numpy(zero_copy_only=False) & short
    valid = array.is_valid().to_numpy(zero_copy_only=False)
    other = np.flatnonzero(short & ~grammar & valid)
    if len(other):
        picked = array.take(pa.array(other, pa.int64()))
        grammar[other] = pc.match_substring_regex(picked, NUMBER_GRAMMAR).to_numpy(zero_copy_only=False)
    return grammar, valid


def _repeat(value: pa.Scalar, m: int) -> pa.Array:
    """``m`` copies of one value. Arrow arrays are immutable and slicing is free, so one array per value serves
    every part (a file's source, object key, vintage, a dimension not broken down...)."""
    if pa.types.is_nested(value.type):
        return _build_repeat(value, m)
    return _cached((value.type, _key(value.as_py())), m, lambda size: _build_repeat(value, size))  # -0.0 is not 0.0


def _tile(pattern: pa.Array, m: int) -> pa.Array:
    """The first ``m`` values of ``pattern`` repeated end to end: the metric columns of a file whose every row
    gives every metric column (one record per cell, row after row). Built once and sliced, like :func:`_repeat`."""
    key = (pattern.type, "tile", *(_key(v) for v in pattern.to_pylist()))
    return _cached(key, m, lambda size: _build_tile(pattern, size))


def _cached(key: tuple[Any, ...], m: int, build: Callable[[int], pa.Array]) -> pa.Array:
    """The first ``m`` values of the array ``build`` makes for ``key``; built again only to grow."""
    built = _REPEATED.get(key)
    if built is None or len(built) < m:
        built = build(m)
        if sum(a.nbytes for a in _REPEATED.values()) + built.nbytes > _REPEATED_BYTES:
            _REPEATED.clear()  # bounded: a long-running executor sees a new object key and time per object
        _REPEATED[key] = built
    return built.slice(0, m)


_REPEATED: dict[tuple[Any, ...], pa.Array] = {}
_REPEATED_BYTES = 64 << 20


def _build_repeat(value: pa.Scalar, m: int) -> pa.Array:
    """Built from buffers for strings (``pa.repeat`` copies them one by one)."""
    if not value.is_valid:
        return pa.nulls(m, value.type)
    if value.type == pa.string():
        data = value.as_py().encode("utf-8")
        if len(data) * m < 2**31:
            offsets = np.arange(0, len(data) * m + 1, len(data), dtype=np.int32) if data else np.zeros(m + 1, np.int32)
            return pa.Array.from_buffers(value.type, m, [None, pa.py_buffer(offsets), pa.py_buffer(data * m)])
    return pa.repeat(value, m)


def _build_tile(pattern: pa.Array, m: int) -> pa.Array:
    """Built from buffers for strings without nulls (the texts once, their offsets by NumPy); else a take."""
    times = -(-m // len(pattern))
    if pattern.type == pa.string() and not pattern.null_count:
        texts = [text.encode("utf-8") for text in pattern.to_pylist()]
        data = b"".join(texts)
        if len(data) * times < 2**31:
            offsets = np.zeros(m + 1, dtype=np.int32)
            np.cumsum(np.tile(np.array([len(t) for t in texts], dtype=np.int32), times)[:m], out=offsets[1:])
            return pa.Array.from_buffers(pattern.type, m, [None, pa.py_buffer(offsets), pa.py_buffer(data * times)])
    return pattern.take(pa.array(np.tile(np.arange(len(pattern)), times)[:m], pa.int64()))


def _take(values: pa.Array, codes: np.ndarray) -> pa.Array:
    """``values[codes]``; a column whose values are all the same (one place level, a dimension not broken
    down) is repeated instead of taken."""
    if len(codes) and (
        len(values) == 1 or (not pa.types.is_nested(values.type) and pc.count_distinct(values, mode="all").as_py() == 1)
    ):
        return _repeat(values[0], len(codes))
    return values.take(pa.array(codes, pa.int64()))


class BatchNormaliser:
    """One source's mapping rules compiled for Arrow batches; call :meth:`normalise` for every chunk."""

    def __init__(
        self,
        spec: SourceSpec,
        *,
        registry: LocationRegistry | None = None,
        metrics: dict[str, Metric] | None = None,
        schema: ObservationSchema | None = None,
        defer_ids: bool = False,
    ) -> None:
        """``defer_ids``: leave ``record_id`` null and return the ids' inputs (``BatchResult.ids``) instead of
        hashing every record: for callers that count records but print only a few (``sources preview``)."""
        self.core = Normaliser(spec, registry=registry, metrics=metrics, schema=schema)
        self.defer_ids = defer_ids
        self.spec, self.schema, self.metrics = spec, self.core.schema, self.core.metrics
        self.registry = self.core.registry
        self.arrow_schema = arrow_schema(self.schema)
        d = spec.data
        loc = d["location"]
        self.location_columns: list[str] = list(loc.get("columns") or [loc["column"]])
        self.location_columns += [loc["country_column"]] if loc.get("country_column") else []
        self.point_columns = [loc["lat"], loc["lon"]] if loc.get("lat") and loc.get("lon") else None
        self.filter_columns = list(dict.fromkeys(f["column"] for f in d.get("filters", [])))
        self.metric_by_column = isinstance(d.get("metric"), dict) and "metrics" not in d
        self.value_fast = not (self.core.value_rx or self.core.decimal_comma or len(self.core.value_skips) > 1)
        names = list(self.metrics)
        self.metric_index = {m: i for i, m in enumerate(names)}
        self.metric_names = pa.array(names, pa.string())
        self.metric_kinds = pa.array([self.metrics[m].kind for m in names], pa.string())
        self.metric_units = pa.array([self.metrics[m].unit for m in names], pa.string())
        self.metric_non_negative = np.array([m in self.core.non_negative for m in names], dtype=bool)
        self.metric_max = np.array([float(self.core.maximum.get(m, np.inf)) for m in names], dtype=np.float64)
        self._caches: dict[str, dict[Any, Any]] = {}

    # -- public -------------------------------------------------------------------------------------------

    def normalise(self, chunk: pa.RecordBatch | list[RawRecord] | RawReject, prov: Provenance) -> BatchResult:
        """All canonical records, rejects and skips of one chunk (see ``covidflow.read.batch``)."""
        parts = list(self.iter_normalise(chunk, prov))
        if len(parts) == 1:
            return parts[0]
        return BatchResult(
            pa.concat_tables([p.records_with_ids() for p in parts]) if parts else self.arrow_schema.empty_table(),
            [r for p in parts for r in p.rejects],
            pa.concat_tables([p.skips for p in parts]) if parts else SKIPS_SCHEMA.empty_table(),
        )

    def iter_normalise(
        self, chunk: pa.RecordBatch | list[RawRecord] | RawReject, prov: Provenance
    ) -> Iterator[BatchResult]:
        """Like :meth:`normalise`, in parts of at most ``LONG_ROWS`` long rows (a wide file's batch unpivots into
        many records: this keeps memory bounded). Parts come in the per-record core's order."""
        if isinstance(chunk, RawReject):
            yield self.normalise_reject(chunk, prov)
            return
        if isinstance(chunk, list) or self.core.hook is not None:
            yield self._per_record(chunk if isinstance(chunk, list) else batch_to_records(chunk), prov)
            return
        ignored = [n for n in chunk.schema.names if n.startswith(IGNORED_PREFIX)] if self.core._nested else []
        first_skips = self._ignored_skips(chunk, ignored) if ignored else None
        frames = self._frames(chunk.drop_columns(ignored) if ignored else chunk, prov)
        if frames is None:  # wide columns of different Arrow types: the per-record path keeps values exact
            yield self._per_record(batch_to_records(chunk), prov)
            return
        for frame in frames:
            result = self._normalise_frame(frame, prov)
            if first_skips is not None:  # they come first in the core's order (each row's first skips)
                result.skips, first_skips = pa.concat_tables([first_skips, result.skips]), None
            yield result
        if first_skips is not None:
            yield BatchResult(self.arrow_schema.empty_table(), [], first_skips)

    @staticmethod
    def _ignored_skips(batch: pa.RecordBatch, names: list[str]) -> pa.Table:
        """Nested documents: each ``@ignored.<field>`` column is a skip of every row (reason: its value), as the
        per-record core reports it, row by row."""
        n, width = batch.num_rows, len(names)
        rows = np.repeat(batch.column(ROW).to_numpy(zero_copy_only=False), width)
        fields = pa.array([name[len(IGNORED_PREFIX) :] for name in names] * n, pa.string())
        reasons = []
        for name in names:
            col = batch.column(name)
            reasons.append(
                col.fill_null("None") if pa.types.is_string(col.type) else pa.array(map(str, col.to_pylist()))
            )
        order = np.arange(n * width).reshape(width, n).T.reshape(-1)  # row-major over (row, column)
        return pa.table(
            [pa.array(rows, pa.int64()), fields, pa.concat_arrays(reasons).take(pa.array(order))], schema=SKIPS_SCHEMA
        )

    def normalise_reject(self, raw: RawReject, prov: Provenance) -> BatchResult:
        """A record the reader could not decode, as the per-record core reports it (one ``(record)`` reject)."""
        return self._from_result(self.core.normalise(raw, prov))

    # -- per-record path ----------------------------------------------------------------------------------

    def _per_record(self, records: list[RawRecord], prov: Provenance) -> BatchResult:
        total = Result()
        for raw in records:
            one = self.core.normalise(raw, prov)
            total.records.extend(one.records)
            total.rejects.extend(one.rejects)
            total.skips.extend(one.skips)
        return self._from_result(total)

    def _from_result(self, result: Result) -> BatchResult:
        records = (
            pa.Table.from_pylist(result.records, schema=self.arrow_schema)
            if result.records
            else self.arrow_schema.empty_table()
        )
        skips = pa.table(
            {
                "row": pa.array([s.row for s in result.skips], pa.int64()),
                "field": pa.array([s.field for s in result.skips], pa.string()),
                "reason": pa.array([s.reason for s in result.skips], pa.string()),
            },
            schema=SKIPS_SCHEMA,
        )
        return BatchResult(records, list(result.rejects), skips)

    # -- frames (unpivot) ---------------------------------------------------------------------------------

    def _frames(self, batch: pa.RecordBatch, prov: Provenance) -> list[_Frame] | Iterator[_Frame] | None:
        cols = {n: c for n, c in zip(batch.schema.names, batch.columns, strict=True) if n not in (ROW, LINE)}
        for name, value in object_fields(self.spec.data, prov.object_key).items():  # as the core merges them
            cols[name] = pa.repeat(pa.scalar(value, pa.string()), batch.num_rows)
        names = list(cols)
        rows = batch.column(ROW).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
        lines = batch.column(LINE)
        up = self.core.unpivot
        if not up:
            n = len(rows)
            return [
                _Frame(
                    {k: v.slice(i, LONG_ROWS) for k, v in cols.items()},
                    rows[i : i + LONG_ROWS],
                    lines.slice(i, LONG_ROWS),
                )
                for i in range(0, n, LONG_ROWS)
            ]
        exclude = set(up.get("exclude", []))
        rx = self.core.unpivot_rx
        wide = [c for c in names if c not in exclude and (not rx or rx.search(c))]
        types = {cols[c].type for c in wide} - {pa.null()}
        if len(types) > 1:
            return None
        typ = types.pop() if types else pa.string()
        keep = {k: v for k, v in cols.items() if k not in wide}
        values = [cols[c] if cols[c].type == typ else pa.nulls(len(cols[c]), typ) for c in wide]  # null = None
        return self._unpivot_frames(keep, wide, values, rows, lines, up)

    @staticmethod
    def _unpivot_frames(
        keep: dict[str, pa.Array],
        wide: list[str],
        values: list[pa.Array],
        rows: np.ndarray,
        lines: pa.Array,
        up: dict[str, Any],
    ) -> Iterator[_Frame]:
        """Long rows in the core's order (row by row, wide columns in order), a slice of rows at a time."""
        if not wide:
            return
        width, n = len(wide), len(rows)
        per_frame = max(1, LONG_ROWS // width)
        names = pa.array(wide, pa.string())
        stacked = pa.concat_arrays(values) if n else None
        for start in range(0, n, per_frame):
            stop = min(n, start + per_frame)
            raw_idx = np.repeat(np.arange(start, stop, dtype=np.int64), width)
            col_idx = np.tile(np.arange(width, dtype=np.int64), stop - start)
            cols = {k: _take(v, raw_idx) for k, v in keep.items()}
            cols[up["name"]] = _take(names, col_idx)
            cols[up["value"]] = _take(stacked, col_idx * n + raw_idx)
            yield _Frame(cols, rows[raw_idx], _take(lines, raw_idx))

    # -- distinct evaluation ------------------------------------------------------------------------------

    def _cache(self, name: str) -> dict[Any, Any]:
        cache = self._caches.setdefault(name, {})
        if len(cache) > _CACHE_LIMIT:
            cache.clear()
        return cache

    def _distinct(
        self,
        frame: _Frame,
        columns: list[str],
        alive: np.ndarray,
        rule: Callable[[dict[str, Any]], Any],
        cache_name: str | None,
    ) -> _Distinct:
        """Evaluate ``rule(row)`` once per distinct combination of ``columns`` among the alive rows.

        ``row`` holds only the columns the frame has, so a missing column is reported by the rule itself,
        exactly as the per-record core does. A ``_RowReject`` becomes the answer; other errors propagate.
        """
        present = [c for c in columns if c in frame.cols]
        if not present:
            codes = np.zeros(frame.n, dtype=np.int64)
            tuples: list[tuple[Any, ...]] = [()]
        else:
            codes, values = frame.encoded(present[0])
            tuples = [(v,) for v in values]
            for name in present[1:]:
                more_codes, more = frame.encoded(name)
                uniq, codes = _dense(codes * len(more) + more_codes, len(tuples) * len(more))
                tuples = [tuples[u // len(more)] + (more[u % len(more)],) for u in uniq.tolist()]
        answers: list[Any] = [None] * len(tuples)
        needed = _dense(codes[alive], len(tuples))[0].tolist() if alive.any() else []
        cache = self._cache(cache_name) if cache_name else None
        for k in needed:
            key = tuple(_key(v) for v in tuples[k]) if cache is not None else None
            if cache is not None and key in cache:
                answers[k] = cache[key]
                continue
            try:
                answer = rule(dict(zip(present, tuples[k], strict=True)))
            except _RowReject as exc:
                answer = exc
            answers[k] = answer
            if cache is not None:
                cache[key] = answer
        return _Distinct(codes, answers)

    @staticmethod
    def _constant(frame: _Frame, alive: np.ndarray, rule: Callable[[], Any]) -> _Distinct:
        answer: Any = None
        if alive.any():
            try:
                answer = rule()
            except _RowReject as exc:
                answer = exc
        return _Distinct(np.zeros(frame.n, dtype=np.int64), [answer])

    # -- one frame ----------------------------------------------------------------------------------------

    def _normalise_frame(self, frame: _Frame, prov: Provenance) -> BatchResult:
        core = self.core
        n = frame.n
        alive = np.ones(n, dtype=bool)
        rejects: list[tuple[int, int, Reject]] = []  # (long row, cell, reject): sorted into the core's order
        skip_at: list[np.ndarray] = []  # long row of each skip, and its cell: sorted into the core's order
        skip_cells: list[np.ndarray] = []
        skip_fields: list[pa.Array] = []
        skip_reasons: list[pa.Array] = []

        def add_skips(where: np.ndarray, cell: int, fld: str | pa.Array, reason: str | pa.Array) -> None:
            if not len(where):
                return
            skip_at.append(where)
            skip_cells.append(np.full(len(where), cell, dtype=np.int64))
            skip_fields.append(fld if isinstance(fld, pa.Array) else pa.repeat(pa.scalar(fld), len(where)))
            skip_reasons.append(reason if isinstance(reason, pa.Array) else pa.repeat(pa.scalar(reason), len(where)))

        def reject(i: int, cell: int, exc: _RowReject) -> None:
            line = frame.line(i)
            rejects.append((i, cell, core._reject(int(frame.rows[i]), line, prov, exc.column, exc.reason, exc.value)))

        def row_check(step: _Distinct) -> None:
            if not step.failed.any():
                return
            failing = np.nonzero(alive & step.failed[step.codes])[0]
            for i in failing.tolist():
                reject(i, -1, step.answers[step.codes[i]])
            alive[failing] = False

        # filters: a skip with the first matching filter's reason
        if core.filters:
            filt = self._distinct(frame, self.filter_columns, alive, core._filtered, "filters")
            hit = np.array([a is not None for a in filt.answers], dtype=bool)[filt.codes] & alive
            where = np.nonzero(hit)[0]
            if len(where):
                codes = filt.codes[where]
                add_skips(where, -1, _take(filt.column(lambda a: a[0], pa.string()), codes),
                          _take(filt.column(lambda a: a[1], pa.string()), codes))  # fmt: skip
            alive &= ~hit

        # row-level rules, in the core's order: place, vintage, dates, dimensions, metric
        place = self._distinct(frame, self.location_columns, alive, core._place, "place")
        row_check(place)
        vintage = self._vintage(frame, alive, prov)
        row_check(vintage)
        dates = self._dates(frame, alive, vintage)
        row_check(dates)
        dims: dict[str, _Distinct] = {}
        for name in self.schema.dimensions:
            rule = core.dimensions.get(name)
            if isinstance(rule, dict):
                dims[name] = self._distinct(
                    frame, [rule["column"]], alive, lambda row, name=name: core._dimension(row, name), f"dim:{name}"
                )
            else:
                dims[name] = self._constant(frame, alive, lambda name=name: core._dimension({}, name))
            row_check(dims[name])
        if self.metric_by_column:
            metric = self._distinct(frame, [self.spec["metric"]["column"]], alive, core._metric_cells, "metric")
            row_check(metric)
            column = self.spec["value"]["column"]
            metric_codes = np.array(
                [self.metric_index[a[0][1]] if isinstance(a, list) else -1 for a in metric.answers], dtype=np.int64
            )[metric.codes]
            cells = [(column, metric_codes)]
        else:
            cells = [
                (column, np.full(n, self.metric_index[name], dtype=np.int64)) for column, name in core._metric_cells({})
            ]
        point = (
            self._distinct(frame, self.point_columns, alive, core._point, "point")
            if self.point_columns
            else _Distinct(np.zeros(n, dtype=np.int64), [None])
        )

        # value cells
        produced = np.zeros((n, len(cells)), dtype=bool)
        numbers = np.zeros((n, len(cells)), dtype=np.float64)
        metrics = np.zeros((n, len(cells)), dtype=np.int64)
        alive_rows = np.nonzero(alive)[0]
        for ci, (column, metric_codes) in enumerate(cells):
            metrics[:, ci] = metric_codes
            if not len(alive_rows):
                break
            if core.absent_skip and column not in frame.cols:
                add_skips(alive_rows, ci, column, "absent key: not reported by the publisher")
                continue
            if column not in frame.cols:
                for i in alive_rows.tolist():
                    reject(i, ci, _RowReject(column, "missing column"))
                continue
            ok, values, failed, reject_of, (skipped, reasons) = self._numbers(frame, column, alive)
            for i in np.nonzero(failed)[0].tolist():
                reject(i, ci, reject_of(i))
            add_skips(skipped, ci, column, reasons)
            mcodes = metric_codes
            negative = ok & (values < 0) & self.metric_non_negative[mcodes]
            above = ok & ~negative & (values > self.metric_max[mcodes])
            for i in np.nonzero(negative | above)[0].tolist():
                name = self.metric_names[mcodes[i]].as_py()
                number = float(values[i])
                if negative[i]:
                    reason = f"negative value for {name} ({self.metrics[name].kind})"
                else:
                    reason = f"{name} above {_fmt(core.maximum[name])}"
                reject(i, ci, _RowReject(column, reason, _fmt(number)))
            produced[:, ci] = ok & ~negative & ~above
            numbers[:, ci] = values

        rejects.sort(key=lambda t: (t[0], t[1]))
        skips = SKIPS_SCHEMA.empty_table()
        if skip_at:
            at = np.concatenate(skip_at)
            order = pa.array(np.lexsort((np.concatenate(skip_cells), at)), pa.int64())
            skips = pa.table(
                [
                    pa.array(frame.rows[at], pa.int64()).take(order),
                    pa.concat_arrays(skip_fields).take(order),
                    pa.concat_arrays(skip_reasons).take(order),
                ],
                schema=SKIPS_SCHEMA,
            )
        # the records, row-major: the core's order (row, then cell); per_record spreads a per-row array to them
        width, period = len(cells), None
        per_record: Callable[[np.ndarray], np.ndarray]
        if width and produced.all():  # every cell of every row: the usual file, repeated rather than gathered
            picked: slice | np.ndarray = slice(None)
            per_record = functools.partial(np.repeat, repeats=width)
            period = None if self.metric_by_column else width  # each row's metrics are the cells' metrics
        else:
            picked = np.flatnonzero(produced)
            li = picked // max(width, 1)
            per_record = functools.partial(np.take, indices=li)
        record_values, record_metrics = numbers.reshape(-1)[picked], metrics.reshape(-1)[picked]
        records, ids = self._records(
            frame, prov, per_record, record_values, record_metrics, period, place, vintage, dates, dims, point
        )
        return BatchResult(records, [r for _, _, r in rejects], skips, ids)

    def _vintage(self, frame: _Frame, alive: np.ndarray, prov: Provenance) -> _Distinct:
        rule = self.core.vintage
        if rule["from"] == "column":
            return self._distinct(frame, [rule["column"]], alive, lambda row: self.core.vintage_of(row, prov), None)
        return self._constant(frame, alive, lambda: self.core.vintage_of({}, prov))

    def _dates(self, frame: _Frame, alive: np.ndarray, vintage: _Distinct) -> _Distinct:
        if "vintage_offset_days" in self.core.date:
            answers: list[Any] = [None] * len(vintage.answers)
            for k in np.unique(vintage.codes[alive]).tolist() if alive.any() else []:
                try:
                    answers[k] = self.core._dates({}, vintage.answers[k][0])
                except _RowReject as exc:
                    answers[k] = exc
            return _Distinct(vintage.codes, answers)
        return self._distinct(frame, [self.core.date["column"]], alive, lambda row: self.core._dates(row, None), "date")

    def _numbers(
        self, frame: _Frame, column: str, alive: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, Callable[[int], Any], tuple[np.ndarray, pa.Array]]:
        """Per row of ``column``: (has a number, the number, rejected, row -> its reject, (skipped rows, reasons))."""
        array = frame.cols[column]
        n = frame.n
        values = np.zeros(n, dtype=np.float64)
        fast = np.zeros(n, dtype=bool)
        if pa.types.is_integer(array.type) or pa.types.is_floating(array.type):
            fast = array.is_valid().to_numpy(zero_copy_only=False) & alive
            values = pc.cast(array, pa.float64(), safe=False).fill_null(0.0).to_numpy(zero_copy_only=False).copy()
        elif self.value_fast and (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
            grammar, valid = _number_grammar(array)
            fast = grammar & alive
            if fast.any():
                numeric = array if (grammar | ~valid).all() else pc.if_else(pa.array(grammar), array, "0")
                values = pc.cast(numeric, pa.float64()).fill_null(0.0).to_numpy(zero_copy_only=False).copy()
        ok = fast.copy()
        failed = np.zeros(n, dtype=bool)
        slow = alive & ~fast
        reject_of: Callable[[int], Any] = lambda i: None  # noqa: E731
        skip_where = np.zeros(0, dtype=np.int64)
        skip_reasons: pa.Array = pa.array([], pa.string())
        if slow.any():
            step = self._distinct(
                frame, [column], slow, lambda row: self.core._number(column, row[column]), f"number:{column}"
            )
            answers = step.answers
            kind = np.array(
                [2 if isinstance(a, _RowReject) else 1 if isinstance(a, str) else 0 for a in answers], dtype=np.int8
            )[step.codes]
            number = np.array([a if isinstance(a, float) else 0.0 for a in answers], dtype=np.float64)[step.codes]
            good = slow & (kind == 0)
            values[good] = number[good]
            ok |= good
            failed = slow & (kind == 2)
            reject_of = lambda i: answers[step.codes[i]]  # noqa: E731
            skip_where = np.nonzero(slow & (kind == 1))[0]
            if len(skip_where):
                reasons = pa.array([a if isinstance(a, str) else None for a in answers], pa.string())
                skip_reasons = _take(reasons, step.codes[skip_where])
        return ok, values, failed, reject_of, (skip_where, skip_reasons)

    # -- records ------------------------------------------------------------------------------------------

    def _records(
        self,
        frame: _Frame,
        prov: Provenance,
        per_record: Callable[[np.ndarray], np.ndarray],
        values: np.ndarray,
        metric_codes: np.ndarray,
        period: int | None,
        place: _Distinct,
        vintage: _Distinct,
        dates: _Distinct,
        dims: dict[str, _Distinct],
        point: _Distinct,
    ) -> tuple[pa.Table, RecordIds | None]:
        m = len(values)
        if not m:
            return self.arrow_schema.empty_table(), None
        registry = self.registry

        def record_codes(step: _Distinct) -> np.ndarray:
            """Each record's code in a row-level step: a step with one answer needs no gather."""
            return np.zeros(m, dtype=np.int64) if len(step.answers) == 1 else per_record(step.codes)

        pcodes, vcodes, dcodes = record_codes(place), record_codes(vintage), record_codes(dates)
        dim_codes = {name: record_codes(dim) for name, dim in dims.items()}
        parents = [registry.parent(a) if a is not None and not isinstance(a, _RowReject) else None
                   for a in place.answers]  # fmt: skip

        def const(value: Any, typ: pa.DataType) -> pa.Array:
            return _repeat(pa.scalar(value, typ), m)

        if period:  # the records' metrics are one short pattern, row after row: tiled, not taken
            pattern = pa.array(metric_codes[:period], pa.int64())

            def metric_column(per_metric: pa.Array) -> pa.Array:
                return _tile(per_metric.take(pattern), m)
        else:
            # the metrics these records have (a few of the registry's): kinds and units are then often one value
            used = pa.array(np.flatnonzero(np.bincount(metric_codes, minlength=len(self.metric_names))), pa.int64())
            local = np.zeros(len(self.metric_names), dtype=np.int64)
            local[used.to_numpy()] = np.arange(len(used))
            local = local[metric_codes]

            def metric_column(per_metric: pa.Array) -> pa.Array:
                return _take(per_metric.take(used), local)

        ts = pa.timestamp("us", tz="UTC")
        columns: dict[str, Any] = {
            "schema_version": const(self.schema.version, pa.int32()),
            "source_id": const(self.spec.id, pa.string()),
            "location_key": _take(place.column(lambda a: a.key, pa.string()), pcodes),
            "location_level": _take(place.column(lambda a: a.level, pa.string()), pcodes),
            "location_name": _take(place.column(lambda a: a.name, pa.string()), pcodes),
            "location_parent_key": _take(pa.array([p.key if p else None for p in parents], pa.string()), pcodes),
            "location_parent_name": _take(pa.array([p.name if p else None for p in parents], pa.string()), pcodes),
            "location_point": _take(
                pa.array(point.answers, self.arrow_schema.field("location_point").type), record_codes(point)
            ),
            "date": _take(dates.column(lambda a: a[1], pa.date32()), dcodes),
            "period": const(self.core.period, pa.string()),
            "period_start": _take(dates.column(lambda a: a[0], pa.date32()), dcodes),
            "metric": metric_column(self.metric_names),
            "metric_kind": metric_column(self.metric_kinds),
            "unit": metric_column(self.metric_units),
            "value": pa.array(values, pa.float64()),
            "vintage": _take(vintage.column(lambda a: a[0], ts), vcodes),
            "vintage_basis": _take(vintage.column(lambda a: a[1], pa.string()), vcodes),
            "source_object_key": const(prov.object_key, pa.string()),
            "source_object_version": const(prov.object_version, pa.string()),
            "source_row": pa.array(per_record(frame.rows), pa.int64()),
            "ingested_at": const(prov.ingested_at, ts),
        }
        for name, dim in dims.items():
            columns[name] = _take(dim.column(lambda a: a, pa.string()), dim_codes[name])
        # the record id: each identifying field as (code per record, text per code), joined per half, then hashed
        known: dict[str, tuple[np.ndarray, list[Any]]] = {
            "source_id": (np.zeros(m, dtype=np.int64), [self.spec.id]),
            "location_key": (pcodes, [a.key if isinstance(a, Location) else "" for a in place.answers]),
            "period": (np.zeros(m, dtype=np.int64), [self.core.period]),
            "date": (dcodes, [a[1].isoformat() if isinstance(a, tuple) else "" for a in dates.answers]),
            "metric": (metric_codes, self.metric_names.to_pylist()),
            "vintage": (vcodes, [a[0].isoformat() if isinstance(a, tuple) else "" for a in vintage.answers]),
        }
        for name, dim in dims.items():
            known[name] = (dim_codes[name], [a if isinstance(a, str) else "" for a in dim.answers])
        parts = [known[name] if name in known else _text_codes(columns[name]) for name in self.schema.record_id_fields]
        ids = RecordIds(parts)
        columns["record_id"] = pa.nulls(m, pa.string()) if self.defer_ids else ids.compute()
        table = pa.Table.from_arrays([columns[f.name] for f in self.arrow_schema], schema=self.arrow_schema)
        return table, (ids if self.defer_ids else None)


def _text_codes(array: pa.Array) -> tuple[np.ndarray, list[str]]:
    """(code per row, ``record_id``'s text per code) of any column: isoformat for dates and times, else str()."""
    enc = pc.dictionary_encode(array, null_encoding="encode")
    texts = [v.isoformat() if hasattr(v, "isoformat") else str(v) for v in enc.dictionary.to_pylist()]
    return enc.indices.to_numpy(zero_copy_only=False).astype(np.int64), texts


def _segments(parts: list[tuple[np.ndarray, list[str]]]) -> list[list[tuple[np.ndarray, list[str]]]]:
    """Consecutive identifying fields grouped so that each group has few distinct texts (bounded product of
    the fields' distinct counts): few texts to build, and few concatenations per record."""
    groups: list[list[tuple[np.ndarray, list[str]]]] = []
    size = _SEGMENT_TEXTS + 1
    for part in parts:
        if size * len(part[1]) > _SEGMENT_TEXTS:
            groups.append([])
            size = 1
        groups[-1].append(part)
        size *= max(1, len(part[1]))
    for group in groups[:-1]:  # the separator after a group's last field
        codes, texts = group[-1]
        group[-1] = (codes, [t + "\x1f" for t in texts])
    return groups


def _joined(parts: list[tuple[np.ndarray, list[str]]]) -> tuple[np.ndarray, list[bytes]]:
    """Several coded text columns as one: a code per row and the U+001F-joined UTF-8 text per distinct code."""
    codes = np.zeros(len(parts[0][0]), dtype=np.int64)
    texts: list[tuple[str, ...]] = [()]
    for more_codes, more in parts:
        uniq, codes = _dense(codes * len(more) + more_codes, len(texts) * len(more))
        texts = [texts[u // len(more)] + (more[u % len(more)],) for u in uniq.tolist()]
    return codes, ["\x1f".join(t).encode("utf-8") for t in texts]


def record_ids(segments: list[tuple[np.ndarray, list[bytes]]]) -> pa.Array:
    """``catalog.schema.record_id`` of each row: sha256 of its segments' texts concatenated, hex, 32 characters.

    One ``hashlib`` call per record (the only per-record Python left: no vectorised sha256 in pyarrow or numpy);
    the texts come from per-distinct segments and the hex is done by NumPy.
    """
    n = len(segments[0][0])
    # map/zip/join/methodcaller all run in C: the only Python-level work per record is gone, the hash remains.
    parts = [map(texts.__getitem__, codes.tolist()) for codes, texts in segments]
    joined = parts[0] if len(parts) == 1 else map(b"".join, zip(*parts, strict=True))
    digests = b"".join(map(_DIGEST, map(hashlib.sha256, joined)))
    first = np.frombuffer(digests, dtype=np.uint8).reshape(n, 32)[:, :16]
    out = np.empty((n, 32), dtype=np.uint8)
    out[:, 0::2] = _HEX[first >> 4]
    out[:, 1::2] = _HEX[first & 15]
    offsets = np.arange(0, 32 * n + 1, 32, dtype=np.int32)
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(out.tobytes())])
