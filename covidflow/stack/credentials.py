"""Secrets of the local stack: generated on first use, kept in ``$COVIDFLOW_HOME/conf/secrets.json``.

Nothing secret is committed; each machine gets its own random values, readable by root only.
"""

from __future__ import annotations

import json
import os
import secrets

from covidflow.stack.home import StackHome


def local_secret(home: StackHome, name: str, nbytes: int = 18) -> str:
    """The secret called ``name``, created once and then stable across restarts (data depends on it)."""
    path = home.conf / "secrets.json"
    values: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    if name not in values:
        values[name] = secrets.token_urlsafe(nbytes)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(values, indent=1))
        os.chmod(tmp, 0o600)
        tmp.replace(path)
    return values[name]
