"""What a service of the local stack is, and the plain checks services share.

A service fetches its artifacts, prepares its configuration, names the processes to run and says
whether it is healthy through its own protocol. The runner (``covidflow.stack.runner``) does the
rest the same way for every service: pid files, logs, port checks, health waits and shutdown.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import subprocess
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from covidflow.stack.home import StackHome

HOST = "127.0.0.1"


@dataclass
class ProcessSpec:
    """One OS process of a service; its log and pid file are named after ``name``."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    user: str | None = None  # drop root to this system user (Elasticsearch refuses to run as root)


class Service(ABC):
    """A service of the local stack. Subclasses are small: fetch, prepare, processes, is_healthy."""

    name: str
    port: int
    #: Every port the service binds; ``stack up`` refuses to start when one is taken by a stranger.
    extra_ports: tuple[int, ...] = ()
    start_timeout: float = 180.0
    heap: str = ""  # documented in `stack status`; each service passes it to its JVM or process

    @property
    def ports(self) -> tuple[int, ...]:
        return (self.port, *self.extra_ports)

    def fetch(self, home: StackHome) -> None:  # noqa: B027 - optional hook
        """Download what is missing into ``home.cache``; verify it. Idempotent."""

    def prepare(self, home: StackHome) -> None:  # noqa: B027 - optional hook
        """Write configuration and initialise storage. Idempotent, keeps existing data."""

    @abstractmethod
    def processes(self, home: StackHome) -> list[ProcessSpec]:
        """The processes to start, in order."""

    @abstractmethod
    def is_healthy(self) -> bool:
        """A real protocol-level check with a short timeout; never raises."""

    def after_start(self, home: StackHome) -> None:  # noqa: B027 - optional hook
        """Runs once the service is healthy (create buckets, topics...). Idempotent."""


# --- checks shared by services -------------------------------------------------------------------


@contextmanager
def quiet_loggers(*names: str, level: int = logging.CRITICAL) -> Iterator[None]:
    """Raise these loggers' level for a probe whose failures are expected answers (a node still starting, a
    refused first login), not errors or tracebacks to print at every poll."""
    loggers = [logging.getLogger(name) for name in names]
    before = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(level)
    try:
        yield
    finally:
        for logger, old in zip(loggers, before, strict=True):
            logger.setLevel(old)


def port_open(port: int, host: str = HOST, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def http_get(url: str, timeout: float = 3.0) -> tuple[int, str]:
    """(status, body) of a GET; (0, reason) when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")
    except OSError as exc:
        return 0, str(exc)


def http_json(url: str, timeout: float = 3.0) -> dict | None:
    """The JSON document at ``url``, or None when nothing (or no JSON) answered: for health checks."""
    status, body = http_get(url, timeout=timeout)
    if status != 200:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


# --- Java ---------------------------------------------------------------------------------------


def java_home(major: int = 17) -> Path:
    """A JDK of exactly ``major`` (Cassandra 5.0 and Spark 4 both want 17), from JAVA_HOME or the usual places."""
    candidates: list[Path] = []
    for var in (f"JAVA{major}_HOME", "JAVA_HOME"):
        if os.environ.get(var):
            candidates.append(Path(os.environ[var]))
    candidates += sorted(Path("/usr/lib/jvm").glob(f"*{major}*")) if Path("/usr/lib/jvm").exists() else []
    java = shutil.which("java")
    if java:
        candidates.append(Path(java).resolve().parent.parent)
    for home in candidates:
        if (home / "bin" / "java").exists() and _java_major(home) == major:
            return home
    raise RuntimeError(
        f"a Java {major} JDK is needed (set JAVA_HOME or install openjdk-{major}-jdk-headless); "
        f"looked in: {', '.join(map(str, candidates)) or 'nothing found'}"
    )


def _java_major(home: Path) -> int | None:
    try:
        out = subprocess.run([str(home / "bin" / "java"), "-version"], capture_output=True, text=True).stderr
    except OSError:
        return None
    match = re.search(r'version "(\d+)', out)
    return int(match.group(1)) if match else None
