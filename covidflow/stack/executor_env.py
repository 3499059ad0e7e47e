"""The Spark executors' Python environment, shipped with the job, so a worker needs nothing installed but Python.

The executors of the stream import the normalisation core and the store clients, nothing of Airflow or Spark
(pyspark itself reaches them from the worker's ``SPARK_HOME/python/lib/pyspark.zip``). So the job ships a small
virtualenv, the way Spark documents it for PySpark: built once with exactly the packages in ``EXECUTOR_PACKAGES``
and their dependencies, at the versions of ``constraints.txt`` (the one lock; nothing is pinned twice), packed with
venv-pack into ``$COVIDFLOW_HOME/cache/executor-env/covidflow-executor-env-<key>.tar.gz``, and handed to
``spark.archives`` as ``#covidflow_env`` (see ``covidflow.normalise.supervise.submit_conf``). The key hashes the
Python version, the platform and the pins, so a changed lock builds a new archive and an unchanged one is reused.

The local stack's workers run a *bare* Python (``bare_python``: a virtualenv of the same interpreter with nothing
installed), so an executor that did not get the archive fails instead of quietly using the project's venv.
See docs/decisions/0020-executor-python-environment.md.
"""

from __future__ import annotations

import hashlib
import logging
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

from covidflow import PROJECT_ROOT
from covidflow.stack.home import StackHome

log = logging.getLogger(__name__)

#: What the job imports on executors (``spark_jobs/normalise_stream.py`` ``_partition``: the columnar core, its
#: catalog and readers, the Cassandra, Elasticsearch and Kafka writers). Their dependencies follow from metadata.
EXECUTOR_PACKAGES: tuple[str, ...] = (
    "pyarrow",
    "numpy",
    "pyyaml",
    "jsonschema",
    "ijson",
    "lxml",
    "cassandra-driver",
    "elasticsearch",
    "confluent-kafka",
)
#: The folder name the archive is unpacked to on every executor (``spark.archives ...#covidflow_env``).
ENV_NAME = "covidflow_env"
CONSTRAINTS = PROJECT_ROOT / "constraints.txt"


def canonical(name: str) -> str:
    """PEP 503 name: ``PyYAML``, ``pyyaml`` and ``py_yaml`` are one package."""
    return re.sub(r"[-_.]+", "-", name).lower()


def constraint_pins(path: Path = CONSTRAINTS) -> dict[str, str]:
    """{canonical name: version} of every ``name==version`` line of the lock."""
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[canonical(name.split("[", 1)[0])] = version.strip()
    return pins


def _dependencies(name: str, extras: frozenset[str] = frozenset()) -> list[tuple[str, frozenset[str]]]:
    """Direct runtime dependencies of an installed distribution (markers evaluated for this interpreter)."""
    from packaging.requirements import Requirement

    out = []
    for text in metadata.distribution(name).requires or []:
        req = Requirement(text)
        envs = [{"extra": e} for e in extras] or [{"extra": ""}]
        if req.marker is None or any(req.marker.evaluate(env) for env in envs):
            out.append((canonical(req.name), frozenset(req.extras)))
    return out


def executor_requirements(packages: tuple[str, ...] = EXECUTOR_PACKAGES, constraints: Path = CONSTRAINTS) -> list[str]:
    """``name==version`` for ``packages`` and everything they depend on, versions from the lock (sorted).

    The dependency closure is read from the installed distributions' metadata (the project's venv is installed from
    the same lock); a package of the closure missing from the lock is an error, never a guess."""
    pins = constraint_pins(constraints)
    seen: dict[str, frozenset[str]] = {}
    todo = [(canonical(p), frozenset[str]()) for p in packages]
    while todo:
        name, extras = todo.pop()
        if name in seen and extras <= seen[name]:
            continue
        seen[name] = seen.get(name, frozenset()) | extras
        todo += _dependencies(name, seen[name])
    missing = sorted(n for n in seen if n not in pins)
    if missing:
        raise RuntimeError(
            f"executor packages not pinned in {constraints.name}: {', '.join(missing)} (run `make lock`)"
        )
    return sorted(f"{n}=={pins[n]}" for n in seen)


def env_key(requirements: list[str]) -> str:
    """Short hash of what makes two archives interchangeable: Python minor version, platform, pins."""
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    text = "\n".join([python, sys.platform, platform.machine(), *sorted(requirements)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def archive_path(home: StackHome | None = None, requirements: list[str] | None = None) -> Path:
    """Where the packed environment for these requirements lives (whether or not it is built yet)."""
    home = home or StackHome.from_env()
    key = env_key(requirements if requirements is not None else executor_requirements())
    return home.cache / "executor-env" / f"covidflow-executor-env-{key}.tar.gz"


def base_python() -> Path:
    """The interpreter the project's venv was made from: the executors' env and the bare worker Python use it, so
    driver and executors run the same Python minor version (PySpark refuses a mismatch)."""
    return Path(getattr(sys, "_base_executable", None) or sys.executable)


def make_bare_python(dest: Path) -> Path:
    """A virtualenv of ``base_python()`` without pip or any package (the workers' own Python); idempotent."""
    python = dest / "bin" / "python"
    if not python.exists():
        subprocess.run([str(base_python()), "-m", "venv", "--without-pip", str(dest)], check=True)
    return python


def ensure_executor_env(home: StackHome | None = None) -> Path:
    """The packed executor environment, built first if this lock has none yet (about a minute, from PyPI)."""
    home = home or StackHome.from_env()
    requirements = executor_requirements()
    dest = archive_path(home, requirements)
    if dest.exists():
        return dest
    log.info("building the Spark executors' Python environment (%d packages, once per lock) into %s",
             len(requirements), dest)  # fmt: skip
    started = time.monotonic()
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="executor-env-", dir=dest.parent) as tmp:
        env = Path(tmp) / ENV_NAME
        python = make_bare_python(env)
        reqs = Path(tmp) / "requirements.txt"
        reqs.write_text("\n".join(requirements) + "\n", encoding="utf-8")
        # The project's pip installs into the new venv (--python): the packed env carries no pip of its own.
        cmd = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-input", "--quiet",
               "--disable-pip-version-check", "--prefer-binary", "-r", str(reqs), "-c", str(CONSTRAINTS)]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"pip could not build the executor environment: {proc.stderr.strip()[-2000:]}")
        import venv_pack

        part = Path(tmp) / "env.tar.gz"
        venv_pack.pack(prefix=str(env), output=str(part), format="tar.gz", verbose=False)
        shutil.move(str(part), dest)
    log.info("executor environment ready: %s (%.0f MB, %.0f s)", dest, dest.stat().st_size / 1e6,
             time.monotonic() - started)  # fmt: skip
    return dest


def main(argv: list[str] | None = None) -> None:
    """``python -m covidflow.stack.executor_env [--requirements]``: build (if needed) and print the archive's path,
    or print the pins, e.g. to build an environment for a cluster whose Python lives elsewhere."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m covidflow.stack.executor_env", description=main.__doc__)
    parser.add_argument("--requirements", action="store_true", help="print the pinned requirements only")
    args = parser.parse_args(argv)
    if args.requirements:
        print("\n".join(executor_requirements()))
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(ensure_executor_env())


if __name__ == "__main__":
    main()
