"""Raw records as Arrow record batches: the columnar contract between the readers and the normalisation core.

A *raw batch* is a ``pyarrow.RecordBatch`` holding consecutive records of one object:

- ``__row``: int64, the 1-based record index (``RawRecord.index``, the provenance row);
- ``__line``: int64, nullable, the physical line (``RawRecord.line``) where the format has lines;
- one column per field, in the reader's order. Text formats give strings, and an empty cell is ``""``,
  never null. Typed formats (JSON, YAML, Parquet, XLSX) give string, int64, float64 or null columns;
  a JSON ``null`` is a null.

Records that do not fit one Arrow column per field exactly (a field with both ints and floats, booleans,
nested values, dates, or records with different key sets) are kept as they are: ``read_batches`` yields the
list of ``RawRecord`` instead, and the core runs its per-record path on it. So the columnar form never
changes a value, and the columnar core can promise record-for-record the output of the per-record core.

``RawReject`` items are yielded between chunks, in reading order.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from covidflow.read import _reader, open_local, read_records
from covidflow.read.base import RawRecord, RawReject, ReaderError
from covidflow.read.delimited import read_csv_blocks

if TYPE_CHECKING:
    import pyarrow as pa

ROW = "__row"
LINE = "__line"
#: Records per batch: large enough for the kernels to amortise, small enough to bound memory.
BATCH_ROWS = 65_536

#: A chunk of one object's records: columnar when every field fits one Arrow column, else the records themselves.
RawChunk = "pa.RecordBatch | list[RawRecord]"


def _column(values: list[Any]) -> Any | None:
    """One Arrow array for a field's values, or None when they cannot be one without changing a value."""
    import pyarrow as pa

    kinds = {type(v) for v in values if v is not None}
    if not kinds:
        return pa.nulls(len(values), pa.null())
    if kinds == {str}:
        return pa.array(values, pa.string())
    if kinds == {int}:
        try:
            return pa.array(values, pa.int64())
        except OverflowError:
            return None
    if kinds == {float}:
        return pa.array(values, pa.float64())
    return None  # bool, Decimal, date, nested, or a mix: str() of the mix would differ from a cast


def records_to_batch(records: list[RawRecord]) -> pa.RecordBatch | None:
    """The records as one raw batch, or None when they do not fit columns exactly (see the module doc)."""
    import pyarrow as pa

    if not records:
        return None
    names = list(records[0].fields)
    keys = set(names)
    if any(len(r.fields) != len(names) or set(r.fields) != keys for r in records):
        return None
    arrays = [pa.array([r.index for r in records], pa.int64()), pa.array([r.line for r in records], pa.int64())]
    for name in names:
        array = _column([r.fields[name] for r in records])
        if array is None:
            return None
        arrays.append(array)
    return pa.RecordBatch.from_arrays(arrays, names=[ROW, LINE, *names])


def batch_to_records(batch: pa.RecordBatch) -> list[RawRecord]:
    """The inverse of ``records_to_batch`` (for the per-record path and for tests)."""
    columns = {name: batch.column(name).to_pylist() for name in batch.schema.names}
    rows, lines = columns.pop(ROW), columns.pop(LINE)
    names = list(columns)
    return [RawRecord(rows[i], {name: columns[name][i] for name in names}, lines[i]) for i in range(batch.num_rows)]


def chunk_records(
    items: Iterator[RawRecord | RawReject], batch_rows: int = BATCH_ROWS
) -> Iterator[pa.RecordBatch | list[RawRecord] | RawReject]:
    """Group a reader's records into raw batches (or record lists that do not fit columns); rejects pass through.

    A ReaderError (truncated archive, a cap) is raised after the records read before it are yielded, as the
    per-record reader yields them.
    """
    pending: list[RawRecord] = []

    def flush() -> Iterator[pa.RecordBatch | list[RawRecord]]:
        if pending:
            batch = records_to_batch(pending)
            yield batch if batch is not None else list(pending)
            pending.clear()

    try:
        for item in items:
            if isinstance(item, RawReject):
                yield from flush()
                yield item
                continue
            pending.append(item)
            if len(pending) >= batch_rows:
                yield from flush()
    except ReaderError:
        yield from flush()
        raise
    yield from flush()


def rechunk(
    items: Iterator[RawRecord | RawReject | pa.RecordBatch], batch_rows: int = BATCH_ROWS
) -> Iterator[pa.RecordBatch | RawReject]:
    """``chunk_records`` for a stream that mixes raw batches (runs of records) with records and rejects.

    Gives the batches ``chunk_records`` gives for the same records: ``batch_rows`` records each, cut at every
    reject and at the end. Every record must fit columns (true of csv: all strings, one key set).
    """
    import pyarrow as pa

    parts: list[pa.RecordBatch] = []
    records: list[RawRecord] = []
    count = 0

    def gather() -> None:
        if records:
            batch = records_to_batch(records)
            if batch is None:  # cannot happen for csv; never silently reshape a value
                raise ValueError("records do not fit one Arrow column per field")
            parts.append(batch)
            records.clear()

    def flush() -> Iterator[pa.RecordBatch]:
        nonlocal count
        gather()
        if parts:
            yield parts[0] if len(parts) == 1 else pa.concat_batches(parts)
            parts.clear()
        count = 0

    try:
        for item in items:
            if isinstance(item, RawReject):
                yield from flush()
                yield item
            elif isinstance(item, RawRecord):
                records.append(item)
                count += 1
                if count >= batch_rows:
                    yield from flush()
            else:
                gather()
                while item.num_rows:
                    take = min(batch_rows - count, item.num_rows)
                    parts.append(item.slice(0, take) if take < item.num_rows else item)
                    item = item.slice(take)
                    count += take
                    if count >= batch_rows:
                        yield from flush()
    except ReaderError:
        yield from flush()
        raise
    yield from flush()


def read_batches(
    stream: BinaryIO, fmt: str, options: Mapping[str, Any], *, name: str, batch_rows: int = BATCH_ROWS
) -> Iterator[pa.RecordBatch | list[RawRecord] | RawReject]:
    """Read one object as raw batches; the same records, rejects and ReaderErrors as ``read_records``.

    csv goes through the columnar reader (``delimited.read_csv_blocks``: pyarrow on blocks of clean lines);
    every other format groups ``read_records`` output.
    """
    if fmt == "csv":
        _reader(fmt, options or {}, name)  # unknown options fail at the call, as with read_records
        return rechunk(read_csv_blocks(stream, options or {}, name), batch_rows)
    return chunk_records(read_records(stream, fmt, options, name=name), batch_rows)


def open_batches(
    path: Path | str, fmt: str, options: Mapping[str, Any], *, batch_rows: int = BATCH_ROWS
) -> Iterator[pa.RecordBatch | list[RawRecord] | RawReject]:
    """``read_batches`` of a local file (``sources preview``); the file is closed when the iterator ends."""
    name = str(path)
    handle = open_local(path)

    def chunks() -> Iterator[pa.RecordBatch | list[RawRecord] | RawReject]:
        with handle:
            yield from read_batches(handle, fmt, options, name=name, batch_rows=batch_rows)

    return chunks()
