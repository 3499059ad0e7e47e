"""S3 object keys are untrusted input: anyone who can write to the landing bucket chooses them.

Today no covidflow code writes an object to a local path (readers stream the body; spools are anonymous temp
files), and ``covidflow.land.objects.matches`` only selects keys directly under a source prefix. These checks
make the rule explicit, with a message on-call can act on, for any code that logs, selects or spools by key.
"""

from __future__ import annotations

import posixpath
import unicodedata
from pathlib import Path

#: Longest key S3 accepts (bytes of UTF-8).
MAX_KEY_BYTES = 1024


class UnsafeObjectKey(ValueError):
    """An S3 key that must not be processed; the message names the key and why."""


def check_object_key(key: str, prefix: str = "") -> str:
    """Return the key's file name if the key is a plain object directly under ``prefix``; raise otherwise."""
    shown = repr(key[:200])
    if not key or len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise UnsafeObjectKey(f"S3 key {shown} rejected: empty or longer than {MAX_KEY_BYTES} bytes")
    if any(unicodedata.category(c) == "Cc" for c in key):
        raise UnsafeObjectKey(f"S3 key {shown} rejected: contains control characters")
    if "\\" in key:
        raise UnsafeObjectKey(f"S3 key {shown} rejected: contains a backslash (a path separator on some systems)")
    if key.startswith("/"):
        raise UnsafeObjectKey(f"S3 key {shown} rejected: absolute path")
    parts = key.split("/")
    if any(part in ("..", ".") for part in parts):
        raise UnsafeObjectKey(f"S3 key {shown} rejected: path traversal ('..' or '.' segment)")
    if prefix and not key.startswith(prefix):
        raise UnsafeObjectKey(f"S3 key {shown} rejected: not under the source prefix {prefix!r}")
    name = key[len(prefix) :]
    if prefix and (not name or "/" in name):
        raise UnsafeObjectKey(f"S3 key {shown} rejected: not a file directly under the prefix {prefix!r}")
    return posixpath.basename(name)


def local_path_for(base: Path, key: str) -> Path:
    """A local path under ``base`` for an object (for code that must spool to disk); never escapes ``base``."""
    check_object_key(key)
    base = base.resolve()
    target = (base / posixpath.normpath(key)).resolve()
    if base != target and base not in target.parents:
        raise UnsafeObjectKey(f"S3 key {key[:200]!r} rejected: resolves outside {base}")
    return target
