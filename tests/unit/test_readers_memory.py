"""A 1 GiB line must be skipped in bounded memory: the stream is generated, never held, and peak memory measured."""

from __future__ import annotations

import io
import tracemalloc

from covidflow.read import RawRecord, RawReject, read_records

GIB = 1024**3


class HugeLineStream(io.RawIOBase):
    """``a,b\\n1,2\\n`` + 1 GiB of 'x' without a newline + ``\\n3,4\\n``, produced on the fly."""

    def __init__(self, huge: int = GIB) -> None:
        self._parts = [(b"a,b\n1,2\n", 1), (b"x" * 65536, huge // 65536), (b"\n3,4\n", 1)]
        self._current = b""
        self.produced = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:  # type: ignore[no-untyped-def]
        while not self._current:
            if not self._parts:
                return 0
            chunk, count = self._parts[0]
            self._current = chunk
            if count == 1:
                self._parts.pop(0)
            else:
                self._parts[0] = (chunk, count - 1)
        n = min(len(buf), len(self._current))
        buf[:n] = self._current[:n]
        self._current = self._current[n:]
        self.produced += n
        return n


def test_one_gib_line_is_rejected_in_bounded_memory() -> None:
    stream = HugeLineStream()
    tracemalloc.start()
    try:
        records = list(read_records(stream, "csv", {}, name="s3://landing/huge.csv"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert stream.produced == GIB + 13  # the whole stream was read...
    assert peak < 8 * 1024**2, f"peak traced memory {peak} bytes"  # ...but never held
    assert records[0] == RawRecord(1, {"a": "1", "b": "2"}, line=2)
    assert records[1] == RawReject(
        2,
        f"s3://landing/huge.csv line 3: line longer than max_record_bytes=1048576 ({GIB + 1} bytes), skipped",
        line=3,
        excerpt="x" * 200,
    )
    assert records[2] == RawRecord(3, {"a": "3", "b": "4"}, line=4)
    assert len(records) == 3
