"""Open the bytes of one landed object: detect and undo gzip/zip, with caps against bombs and truncation.

Every format reader reads through ``open_input``, so the caps and the "empty file" check hold everywhere.
Decompression errors surface as ``ReaderError`` from inside ``read()``, after the bytes that could be
decompressed have been handed on, so records before a truncation are still yielded.
"""

from __future__ import annotations

import contextlib
import fnmatch
import gzip
import io
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO

from covidflow.read.base import ReaderError

DEFAULT_MAX_DECOMPRESSED_BYTES = 2 * 1024**3
DEFAULT_MAX_COMPRESSION_RATIO = 100
#: The ratio cap only applies past this many decompressed bytes: tiny, very regular files compress a lot.
RATIO_CHECK_AFTER_BYTES = 8 * 1024**2
BUFFER_SIZE = 1 << 16
#: Non-seekable inputs that need random access (zip, xlsx, parquet) are spooled; past this they go to disk.
SPOOL_IN_MEMORY_BYTES = 32 * 1024**2

COMPRESSION_OPTIONS = {
    "compression": "auto | none | gzip | zip; auto detects gzip and zip by their magic bytes",
    "zip_member": "name or glob of the zip member to read; needed when the zip holds more than one file",
    "max_decompressed_bytes": f"cap on decompressed bytes (default {DEFAULT_MAX_DECOMPRESSED_BYTES}), against bombs",
    "max_compression_ratio": f"cap on decompressed/compressed size (default {DEFAULT_MAX_COMPRESSION_RATIO})",
}

_GZIP_MAGIC = b"\x1f\x8b"
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


class _Raw(io.RawIOBase):
    """Any ``.read``-able object as a raw stream, with bytes already read put back in front."""

    def __init__(self, stream: Any, head: bytes = b"") -> None:
        self._stream, self._head = stream, head

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        if self._head:
            n = min(len(buf), len(self._head))
            buf[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._stream.read(len(buf))
        buf[: len(data)] = data
        return len(data)


class _Counting(io.RawIOBase):
    """Counts the compressed bytes consumed, for the compression-ratio cap."""

    def __init__(self, raw: io.RawIOBase) -> None:
        self._raw, self.count = raw, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        n = self._raw.readinto(buf) or 0
        self.count += n
        return n


class _Capped(io.RawIOBase):
    """Decompressed bytes with caps on total size and ratio; decoder errors become ReaderError."""

    def __init__(self, inner: Any, name: str, kind: str, compressed: Any, max_bytes: int, max_ratio: float) -> None:
        self._inner, self._name, self._kind = inner, name, kind
        self._compressed = compressed  # () -> compressed bytes so far (or the member's stated size)
        self._max_bytes, self._max_ratio, self.count = max_bytes, max_ratio, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        try:
            data = self._inner.read(len(buf))
        except ReaderError:
            raise
        except (EOFError, OSError, zlib.error, zipfile.BadZipFile) as exc:
            raise ReaderError(self._name, f"truncated or corrupt {self._kind} data: {exc}") from None
        n = len(data)
        buf[:n] = data
        self.count += n
        if self.count > self._max_bytes:
            raise ReaderError(
                self._name, f"{self._kind} decompresses to more than max_decompressed_bytes={self._max_bytes}"
            )
        if self.count > RATIO_CHECK_AFTER_BYTES and self.count > self._max_ratio * max(self._compressed(), 1):
            raise ReaderError(
                self._name,
                f"{self._kind} compression ratio above max_compression_ratio={self._max_ratio} (zip bomb?)",
            )
        return n


def _read_upto(stream: Any, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = stream.read(n - len(out))
        if not chunk:
            break
        out += chunk
    return out


def _int_option(options: Mapping[str, Any], key: str, default: int, name: str) -> int:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ReaderError(name, f"option {key} must be a positive number, got {value!r}")
    return value


def detect_compression(head: bytes) -> str:
    """Name the compression from the first bytes: 'gzip', 'zip' or 'none'."""
    if head.startswith(_GZIP_MAGIC):
        return "gzip"
    if head[:4] in _ZIP_MAGIC:
        return "zip"
    return "none"


@contextlib.contextmanager
def open_input(
    stream: BinaryIO, options: Mapping[str, Any], name: str, *, allow_auto: bool = True
) -> Iterator[io.BufferedReader]:
    """Yield a buffered, decompressed, capped byte stream; raises ReaderError('empty file') on no bytes.

    ``allow_auto=False`` is for formats that are themselves zips (xlsx): 'auto' then means 'none'.
    """
    max_bytes = _int_option(options, "max_decompressed_bytes", DEFAULT_MAX_DECOMPRESSED_BYTES, name)
    max_ratio = _int_option(options, "max_compression_ratio", DEFAULT_MAX_COMPRESSION_RATIO, name)
    start = stream.tell() if _seekable(stream) else None
    head = _read_upto(stream, 4)
    if not head:
        raise ReaderError(name, "empty file")
    kind = options.get("compression", "auto")
    if kind == "auto":
        kind = detect_compression(head) if allow_auto else "none"
    if kind == "none":
        yield _nonempty(io.BufferedReader(_Raw(stream, head), BUFFER_SIZE), name)
    elif kind == "gzip":
        counting = _Counting(_Raw(stream, head))
        unzipped = gzip.GzipFile(fileobj=io.BufferedReader(counting, BUFFER_SIZE), mode="rb")
        capped = _Capped(unzipped, name, "gzip", lambda: counting.count, max_bytes, max_ratio)
        yield _nonempty(io.BufferedReader(capped, BUFFER_SIZE), name)
    elif kind == "zip":
        with _seekable_copy(stream, head, start, name, max_bytes) as seekable:
            member = _open_zip_member(seekable, options.get("zip_member"), name, max_bytes, max_ratio)
            yield _nonempty(io.BufferedReader(member, BUFFER_SIZE), name)
    else:
        raise ReaderError(name, f"unknown compression {kind!r} (auto, none, gzip, zip)")


def _seekable(stream: Any) -> bool:
    try:
        return bool(stream.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def _nonempty(reader: io.BufferedReader, name: str) -> io.BufferedReader:
    if not reader.peek(1):
        raise ReaderError(name, "empty file (nothing after decompression)")
    return reader


@contextlib.contextmanager
def _seekable_copy(stream: Any, head: bytes, start: int | None, name: str, max_bytes: int) -> Iterator[Any]:
    """The stream itself when seekable, else a spooled copy (memory up to SPOOL_IN_MEMORY_BYTES, then disk)."""
    if start is not None:
        stream.seek(start)
        yield stream
        return
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY_BYTES) as spool:
        spool.write(head)
        while chunk := stream.read(BUFFER_SIZE):
            spool.write(chunk)
            if spool.tell() > max_bytes:
                raise ReaderError(name, f"input larger than max_decompressed_bytes={max_bytes}")
        spool.seek(0)
        yield spool


def seekable_input(stream: BinaryIO, options: Mapping[str, Any], name: str) -> contextlib.AbstractContextManager[Any]:
    """A seekable view of the (decompressed) input, for formats that need random access (xlsx, parquet)."""
    return _seekable_input(stream, options, name)


@contextlib.contextmanager
def _seekable_input(stream: BinaryIO, options: Mapping[str, Any], name: str) -> Iterator[Any]:
    kind = options.get("compression", "auto")
    if kind in ("auto", "none") and _seekable(stream):
        start = stream.tell()
        if not _read_upto(stream, 1):
            raise ReaderError(name, "empty file")
        stream.seek(start)
        yield stream
        return
    max_bytes = _int_option(options, "max_decompressed_bytes", DEFAULT_MAX_DECOMPRESSED_BYTES, name)
    with (
        open_input(stream, options, name, allow_auto=False) as data,
        tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY_BYTES) as spool,
    ):
        copied = 0
        while chunk := data.read(BUFFER_SIZE):
            copied += spool.write(chunk)
            if copied > max_bytes:
                raise ReaderError(name, f"input larger than max_decompressed_bytes={max_bytes}")
        spool.seek(0)
        yield spool


def _pick_member(names: list[str], pattern: str | None, name: str) -> str:
    files = [n for n in names if not n.endswith("/")]
    chosen = [n for n in files if pattern is None or n == pattern or fnmatch.fnmatchcase(n, pattern)]
    if pattern is not None and pattern in chosen:
        return pattern
    if len(chosen) == 1:
        return chosen[0]
    if not chosen:
        raise ReaderError(name, f"no zip member matches {pattern!r} (members: {', '.join(files[:20])})")
    raise ReaderError(name, f"zip holds {len(chosen)} matching members; set zip_member to one of {chosen[:20]}")


def _open_zip_member(f: Any, pattern: str | None, name: str, max_bytes: int, max_ratio: float) -> io.RawIOBase:
    try:
        archive = zipfile.ZipFile(f)
    except zipfile.BadZipFile:
        # No central directory: the archive is truncated (or not a zip). Stream the local entries instead,
        # so that the records before the cut are still read.
        f.seek(0)
        return _LocalEntryStream(f, pattern, name, max_bytes, max_ratio)
    member = archive.getinfo(_pick_member(archive.namelist(), pattern, name))
    if member.file_size > max_bytes:
        raise ReaderError(name, f"zip member {member.filename} states {member.file_size} bytes > {max_bytes}")
    if member.file_size > RATIO_CHECK_AFTER_BYTES and member.file_size > max_ratio * max(member.compress_size, 1):
        raise ReaderError(name, f"zip member {member.filename} ratio above max_compression_ratio={max_ratio}")
    try:
        opened = archive.open(member)
    except (zipfile.BadZipFile, NotImplementedError, RuntimeError) as exc:
        raise ReaderError(name, f"cannot open zip member {member.filename}: {exc}") from None
    return _Capped(opened, name, "zip", lambda: member.compress_size, max_bytes, max_ratio)


_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")


class _LocalEntryStream(io.RawIOBase):
    """Reads one member of a zip whose central directory is missing, by walking the local file headers.

    Used only for damaged archives: it yields what decompresses, then raises ReaderError at the cut.
    """

    def __init__(self, f: Any, pattern: str | None, name: str, max_bytes: int, max_ratio: float) -> None:
        self._f, self._name, self._max_bytes, self._max_ratio = f, name, max_bytes, max_ratio
        self._count = self._compressed = 0
        self._inflate: Any = None
        self._left = 0  # stored members: bytes left
        self._done = False
        self._pending = b""
        self._seek_member(pattern)

    def readable(self) -> bool:
        return True

    def _header(self) -> tuple[str, int, int, int]:
        raw = _read_upto(self._f, _LOCAL_HEADER.size)
        if len(raw) < _LOCAL_HEADER.size or raw[:4] != b"PK\x03\x04":
            raise ReaderError(self._name, "truncated or corrupt zip: no readable member (central directory missing)")
        _, _, flags, method, _, _, _, csize, _, nlen, xlen = _LOCAL_HEADER.unpack(raw)
        filename = _read_upto(self._f, nlen).decode("utf-8" if flags & 0x800 else "cp437", "replace")
        _read_upto(self._f, xlen)
        if method not in (0, 8) or (method == 0 and flags & 0x08):
            raise ReaderError(self._name, f"truncated zip with member {filename} in an unsupported layout")
        return filename, flags, method, csize

    def _seek_member(self, pattern: str | None) -> None:
        while True:
            filename, flags, method, csize = self._header()
            wanted = not filename.endswith("/") and (
                pattern is None or filename == pattern or fnmatch.fnmatchcase(filename, pattern)
            )
            if method == 8:
                self._inflate = zlib.decompressobj(-15)
            else:
                self._inflate, self._left = None, csize
            if wanted:
                return
            while self._next_chunk():  # skip this member, in bounded memory
                pass
            self._done, self._count = False, 0
            if flags & 0x08:  # a data descriptor follows: optional signature, crc, sizes
                sig = _read_upto(self._f, 4)
                _read_upto(self._f, 12 if sig == b"PK\x07\x08" else 8)

    def _next_chunk(self) -> bytes:
        if self._done:
            return b""
        if self._inflate is None:
            data = self._f.read(min(self._left, BUFFER_SIZE))
            self._left -= len(data)
            if not data and self._left:
                raise ReaderError(self._name, "truncated zip: member ends early")
            self._done = self._left == 0
            return data
        while True:
            comp = self._inflate.unconsumed_tail or self._f.read(BUFFER_SIZE)
            if not comp:
                raise ReaderError(self._name, "truncated zip: member ends before its end-of-data marker")
            self._compressed += 0 if self._inflate.unconsumed_tail else len(comp)
            try:
                data = self._inflate.decompress(comp, BUFFER_SIZE)
            except zlib.error as exc:
                raise ReaderError(self._name, f"corrupt zip data: {exc}") from None
            if self._inflate.eof:
                self._done = True
                # Put back what belongs to the next entry.
                self._f.seek(-len(self._inflate.unused_data), io.SEEK_CUR)
            if data or self._done:
                return data

    def readinto(self, buf: Any) -> int:
        data = self._pending or self._next_chunk()
        data, self._pending = data[: len(buf)], data[len(buf) :]
        n = len(data)
        self._count += n
        if self._count > self._max_bytes:
            raise ReaderError(self._name, f"zip decompresses to more than max_decompressed_bytes={self._max_bytes}")
        if self._count > RATIO_CHECK_AFTER_BYTES and self._count > self._max_ratio * max(self._compressed, 1):
            raise ReaderError(self._name, f"zip compression ratio above max_compression_ratio={self._max_ratio}")
        buf[:n] = data
        return n
