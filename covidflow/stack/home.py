"""Where the local stack keeps everything: one directory, ``$COVIDFLOW_HOME`` (default ``~/.covidflow``).

Layout::

    cache/    downloads, kept across ``stack reset`` (jars, zips, resolved classpaths)
    data/     one folder per service; wiped by ``stack reset``
    logs/     one ``<service>.log`` per process
    run/      pid files of the processes the stack started
    conf/     generated configuration files
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StackHome:
    root: Path

    @classmethod
    def from_env(cls) -> StackHome:
        root = Path(os.environ.get("COVIDFLOW_HOME", Path.home() / ".covidflow")).expanduser().resolve()
        return cls(root)

    @property
    def cache(self) -> Path:
        return self._dir("cache")

    @property
    def data(self) -> Path:
        return self._dir("data")

    @property
    def logs(self) -> Path:
        return self._dir("logs")

    @property
    def run(self) -> Path:
        return self._dir("run")

    @property
    def conf(self) -> Path:
        return self._dir("conf")

    def data_dir(self, service: str) -> Path:
        path = self.data / service
        path.mkdir(parents=True, exist_ok=True)
        return path

    def conf_dir(self, service: str) -> Path:
        path = self.conf / service
        path.mkdir(parents=True, exist_ok=True)
        return path

    def log_file(self, process: str) -> Path:
        return self.logs / f"{process}.log"

    def pid_file(self, process: str) -> Path:
        return self.run / f"{process}.pid"

    def _dir(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path
