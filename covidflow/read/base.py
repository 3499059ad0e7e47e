"""The contract between format readers and the normalisation core.

A reader turns the bytes of one landed object into raw records, streaming, in bounded memory.
Problems with one record become a ``RawReject`` (the run goes on); problems with the whole
object (truncated archive, zip bomb, empty file, undecodable header) raise ``ReaderError``.
Either way the message names the file, and the row or record, so on-call can find it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RawRecord:
    """One record as the publisher wrote it: field name -> raw value (text for text formats)."""

    index: int  # 1-based record number within the object: the provenance 'row' of canonical records
    fields: dict[str, Any]
    line: int | None = None  # physical line in the file, where the format has lines


@dataclass(frozen=True)
class RawReject:
    """A record the reader could not decode; it still counts, and goes to the dead-letter place."""

    index: int
    reason: str
    line: int | None = None
    excerpt: str = ""  # a bounded excerpt of the raw bytes/text, for the dead-letter record


class ReaderError(Exception):
    """The whole object cannot be read; the message names the file and where it failed."""

    def __init__(self, file: str, reason: str, *, line: int | None = None, index: int | None = None) -> None:
        where = f" line {line}" if line is not None else (f" record {index}" if index is not None else "")
        super().__init__(f"{file}{where}: {reason}")
        self.file, self.reason, self.line, self.index = file, reason, line, index


def reject(file: str, index: int, reason: str, *, line: int | None = None, excerpt: str = "") -> RawReject:
    """A RawReject whose reason names the file and the line (or record), like ReaderError does."""
    where = f" line {line}" if line is not None else f" record {index}"
    return RawReject(index, f"{file}{where}: {reason}", line=line, excerpt=excerpt[:200])
