"""Secrets of the local stack: generated on first use, kept in ``$COVIDFLOW_HOME/conf/secrets.json``.

Nothing secret is committed; each machine gets its own random values, readable by root only.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from covidflow.stack.home import StackHome


def local_secret(home: StackHome, name: str, nbytes: int = 18) -> str:
    """The secret called ``name``, created once and then stable across restarts (data depends on it)."""
    path = home.conf / "secrets.json"
    values: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    if name not in values:
        values[name] = secrets.token_urlsafe(nbytes)
        tmp = path.with_suffix(".tmp")
        write_private(tmp, json.dumps(values, indent=1))
        tmp.replace(path)
    return values[name]


def write_private(path: Path, text: str) -> None:
    """For a file holding a secret: created 0600 before any byte is written, never readable by others even briefly."""
    path.touch(mode=0o600)
    path.chmod(0o600)  # touch leaves the mode of an existing file as it was
    path.write_text(text)
